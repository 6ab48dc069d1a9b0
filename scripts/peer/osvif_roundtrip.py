"""os-vif VIFs through the real Python os-vif and kuryr-kubernetes 10.0.0,
for kuryr-rs's compatibility test (crates/kuryr-controller/tests/osvif.rs).
Run with the peer venv's python (scripts/lib/peer.sh, peer_venv):

    osvif_roundtrip.py read  < [primitive, ...]
        Each VIF primitive (as kuryr-rs writes it into a KuryrPort's
        status.vifs.<ifname>.vif) is read as kuryr-daemon reads it
        (kuryr_kubernetes.cni.handlers: os_vif VersionedObject
        .obj_from_primitive, kuryr-kubernetes' own VIF classes registered).
        Prints a list, one entry per input, in order:
        {"index", "fields": {what Python reads back}} or
        {"index", "error": "<VIF class> <id>: <why>"}.

    osvif_roundtrip.py write < {"ovs_bridge", "network", "subnets", "ports"}
        network, subnets: Neutron API dicts; ports: [{"driver": "neutron-vif"
        | "nested-vlan" | "nested-macvlan", "vlan_id": n (nested-vlan),
        "port": Neutron port dict}]. Builds each VIF with kuryr-kubernetes'
        own conversion code (the subnet mapping with utils.get_subnet, the
        VIF with os_vif_util.neutron_to_osvif_vif on the port's
        binding:vif_type, or the nested drivers' builders) from openstacksdk
        objects, and serialises it with KuryrPortHandler._update_kuryrport_crd.
        Prints a list, one entry per port: {"status": the KuryrPort status
        kuryr-kubernetes patches in ({"vifs": {"eth0": {"default": true,
        "vif": primitive}}}), "fields": what Python reads back from it}.

"fields" is {"class", "id", "address", "plugin", "active",
"preserve_on_delete", "has_traffic_filtering", "vif_name", "bridge_name",
"vlan_id", "port_profile": {"class", "interface_id"}, "network": {"id",
"label", "bridge", "mtu", "subnets": [{"cidr", "gateway", "dns", "ips",
"routes": [{"cidr", "gateway"}]}]}}: a field the object does not have set
is left out (reading it in Python would raise), values are as Python
renders them (str of netaddr types, lower-case MACs).
"""
import json
import sys

from openstack.network.v2 import network as os_network
from openstack.network.v2 import port as os_port
from openstack.network.v2 import subnet as os_subnet
import os_vif.objects
from oslo_config import cfg

from kuryr_kubernetes import clients
from kuryr_kubernetes import config  # noqa: F401 (registers the options)
from kuryr_kubernetes.controller.handlers import kuryrport
from kuryr_kubernetes import objects as k_objects
from kuryr_kubernetes import os_vif_util
from kuryr_kubernetes import utils


def register():
    """The VIF classes, as kuryr-daemon registers them at start."""
    k_objects.register_locally_defined_vifs()
    os_vif.objects.register_all()


def field(obj, name, conv=lambda v: v):
    """{name: conv(value)} if `name` is set on `obj`, else {}."""
    if name in obj.fields and obj.obj_attr_is_set(name):
        v = getattr(obj, name)
        return {name: None if v is None else conv(v)}
    return {}


def objects_of(obj, name):
    """The objects of list field `name` (none if unset)."""
    return list(getattr(obj, name).objects) if obj.obj_attr_is_set(name) else []


def fields_of(vif):
    out = {'class': vif.obj_name()}
    for name in ('id', 'address', 'plugin', 'vif_name', 'bridge_name'):
        out.update(field(vif, name, str))
    for name in ('active', 'preserve_on_delete', 'has_traffic_filtering'):
        out.update(field(vif, name, bool))
    out.update(field(vif, 'vlan_id', int))
    if 'port_profile' in vif.fields and vif.obj_attr_is_set('port_profile'):
        p = vif.port_profile
        out['port_profile'] = {'class': p.obj_name(),
                               **field(p, 'interface_id', str)}
    if vif.obj_attr_is_set('network') and vif.network is not None:
        n = vif.network
        net = {}
        for name in ('id', 'label', 'bridge'):
            net.update(field(n, name, str))
        net.update(field(n, 'mtu', int))
        net['subnets'] = []
        for s in objects_of(n, 'subnets'):
            sub = {**field(s, 'cidr', str), **field(s, 'gateway', str),
                   **field(s, 'dns', lambda d: [str(a) for a in d])}
            sub['ips'] = [str(ip.address) for ip in objects_of(s, 'ips')]
            sub['routes'] = [{'cidr': str(r.cidr), 'gateway': str(r.gateway)}
                             for r in objects_of(s, 'routes')]
            net['subnets'].append(sub)
        out['network'] = net
    return out


def read(prims):
    register()
    out = []
    for i, prim in enumerate(prims):
        try:
            vif = os_vif.objects.base.VersionedObject.obj_from_primitive(prim)
            out.append({'index': i, 'fields': fields_of(vif)})
        except Exception as e:  # noqa: BLE001 (reported, per VIF)
            name = prim.get('versioned_object.name', '?')
            vid = prim.get('versioned_object.data', {}).get('id', '?')
            out.append({'index': i,
                        'error': f'{name} {vid}: {type(e).__name__}: {e}'})
    return out


class FakeNetworkClient:
    """The get_network/get_subnet utils.get_subnet asks Neutron for."""

    def __init__(self, network, subnets):
        self.network = os_network.Network(**network)
        self.subnets = {s['id']: os_subnet.Subnet(**s) for s in subnets}

    def get_network(self, network_id):
        assert network_id == self.network.id, network_id
        return self.network

    def get_subnet(self, subnet_id):
        return self.subnets[subnet_id]


class Connection:
    def __init__(self, network):
        self.network = network


class CapturingK8s:
    """What KuryrPortHandler._update_kuryrport_crd patches."""

    def __init__(self):
        self.patches = []

    def patch_crd(self, field_name, path, data):
        self.patches.append((field_name, path, data))


class Handler:
    """The `self` _update_kuryrport_crd uses: only its k8s client."""

    def __init__(self):
        self.k8s = CapturingK8s()


def write(spec):
    register()
    cfg.CONF([], project='kuryr-k8s', default_config_files=[])
    cfg.CONF.set_override('ovs_bridge', spec['ovs_bridge'], 'neutron_defaults')
    clients._clients[clients._OPENSTACKSDK] = Connection(
        FakeNetworkClient(spec['network'], spec['subnets']))
    # {subnet id: os-vif Network holding that subnet}, as the subnets
    # drivers return it
    subnets = {s['id']: utils.get_subnet(s['id']) for s in spec['subnets']}
    out = []
    for p in spec['ports']:
        port = os_port.Port(**p['port'])
        driver = p['driver']
        if driver == 'neutron-vif':
            vif = os_vif_util.neutron_to_osvif_vif(
                port.binding_vif_type, port, subnets)
        elif driver == 'nested-vlan':
            vif = os_vif_util.neutron_to_osvif_vif_nested_vlan(
                port, subnets, p['vlan_id'])
        elif driver == 'nested-macvlan':
            vif = os_vif_util.neutron_to_osvif_vif_nested_macvlan(
                port, subnets)
        else:
            raise SystemExit(f'unknown driver {driver}')
        h = Handler()
        kp = {'apiVersion': 'openstack.org/v1', 'kind': 'KuryrPort',
              'metadata': {'namespace': 'default', 'name': port.id}}
        kuryrport.KuryrPortHandler._update_kuryrport_crd(
            h, kp, {'eth0': {'default': True, 'vif': vif}})
        [(what, _, status)] = h.k8s.patches
        assert what == 'status', what
        # through JSON, as the API stores it, and back as the daemon reads it
        status = json.loads(json.dumps(status))
        back = os_vif.objects.base.VersionedObject.obj_from_primitive(
            status['vifs']['eth0']['vif'])
        out.append({'status': status, 'fields': fields_of(back)})
    return out


def main():
    mode = sys.argv[1] if len(sys.argv) == 2 else ''
    if mode not in ('read', 'write'):
        raise SystemExit(f'usage: {sys.argv[0]} read|write < JSON')
    data = json.load(sys.stdin)
    json.dump(read(data) if mode == 'read' else write(data), sys.stdout,
              indent=1, sort_keys=True)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
