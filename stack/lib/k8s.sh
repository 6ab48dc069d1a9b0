# shellcheck shell=bash
# Component "k8s" of the test stack (placeholder, being written).
k8s_up() { die "k8s: not written yet"; }
k8s_down() { :; }
k8s_status() { echo "  k8s: not written yet"; return 1; }
k8s_build() { die "k8s: not written yet"; }
