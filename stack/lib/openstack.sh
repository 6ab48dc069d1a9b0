# shellcheck shell=bash
# Component "openstack" of the test stack (placeholder, being written).
openstack_up() { die "openstack: not written yet"; }
openstack_down() { :; }
openstack_status() { echo "  openstack: not written yet"; return 1; }
