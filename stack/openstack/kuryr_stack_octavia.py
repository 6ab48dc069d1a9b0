"""Octavia network driver for the kuryr-rs test stack.

The stack runs Octavia's amphora provider with no-op amphora and compute
drivers, so load balancers reach ACTIVE without virtual machines. The
network side must then plug nothing (there is no amphora to plug), yet the
Neutron objects a load balancer owns should stay real: the API creates the
VIP port in Neutron, and the worker has to give it its `lb-<id>` security
group and delete it again with the load balancer. This driver is the no-op
driver except for those calls, which go to the real Neutron driver.

Registered under the entry point group `octavia.network.drivers` as
`kuryr_stack_noop_real_vip` by the stack (a dist-info on PYTHONPATH)."""

from octavia.network.drivers.neutron import allowed_address_pairs
from octavia.network.drivers.noop_driver import driver as noop


class NoopDriverWithRealVip(noop.NoopNetworkDriver):
    """No-op networking for fake amphorae; real VIP security group and VIP
    port clean-up in Neutron."""

    _neutron = None

    @classmethod
    def _real(cls):
        # created on first use: its constructor talks to Keystone
        if cls._neutron is None:
            cls._neutron = allowed_address_pairs.AllowedAddressPairsDriver()
        return cls._neutron

    def update_vip_sg(self, load_balancer, vip):
        return self._real().update_vip_sg(load_balancer, vip)

    def update_vip(self, load_balancer, for_delete=False):
        return self._real().update_vip(load_balancer, for_delete=for_delete)

    def deallocate_vip(self, vip):
        super().deallocate_vip(vip)
        return self._real().deallocate_vip(vip)
