# shellcheck shell=bash
# Component "kubelet" of the test stack (placeholder, being written).
kubelet_up() { die "kubelet: not written yet"; }
kubelet_down() { :; }
kubelet_status() { echo "  kubelet: not written yet"; return 1; }
