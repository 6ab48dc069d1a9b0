# shellcheck shell=bash
# Component "ovs" of the test stack (placeholder, being written).
ovs_up() { die "ovs: not written yet"; }
ovs_down() { :; }
ovs_status() { echo "  ovs: not written yet"; return 1; }
