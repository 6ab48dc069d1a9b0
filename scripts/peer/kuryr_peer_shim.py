"""Start-up shim for running kuryr-kubernetes 10.0.0 next to other tests.

Run by scripts/bench-kuryr-peer with the venv's python:

    python kuryr_peer_shim.py controller|daemon [kuryr options...]

It changes four things before handing over to kuryr's own entry point, and
logs each of them (WARNING "kuryr-peer shim: ..."):

1. os-vif's OVS plugin defaults a VIF's datapath type to "system" when the
   port profile carries none (kuryr 10.0.0 never passes Neutron's
   binding:vif_details datapath_type), and its plug() then runs
   `ovs-vsctl add-br --may-exist br-int -- set Bridge br-int
   datapath_type=system`, which breaks the stack's userspace OVS. The default
   becomes "netdev" (the datapath br-int has here).
2. kuryr watches pods, KuryrPorts, Services, Endpoints,
   KuryrLoadBalancers, NetworkPolicies and KuryrNetworkPolicies in ALL
   namespaces. Its controller would make KuryrPorts (and Neutron ports) for
   other tests' pods, finalize their KuryrPorts, load balancers and
   policies, so its watches are scoped to KURYR_PEER_NAMESPACE (the
   controller's VIF, KuryrPort, Service, Endpoints, KuryrLoadBalancer,
   policy, KuryrNetworkPolicy and pod label handlers, the daemon's
   KuryrPort and pod watchers).
3. Its health servers and Prometheus exporters listen on "::" (every
   address); they are moved to 127.0.0.1.
4. REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE would override [kubernetes]
   ssl_ca_crt_file (requests lets the environment win): dropped.
"""
import logging
import os
import sys

LOG = logging.getLogger("kuryr-peer-shim")
NOTES = []


def note(msg):
    NOTES.append(msg)


def netdev_default_datapath():
    from vif_plug_ovs import constants
    from vif_plug_ovs import ovs

    def _get_vif_datapath_type(vif, datapath=constants.OVS_DATAPATH_NETDEV):
        profile = ovs.OvsPlugin._get_vif_port_profile(vif)
        if 'datapath_type' not in profile or not profile.datapath_type:
            return datapath
        return profile.datapath_type

    ovs.OvsPlugin._get_vif_datapath_type = staticmethod(_get_vif_datapath_type)
    note("os-vif OVS plugin: default datapath_type system -> netdev "
         "(br-int is a userspace bridge here)")


def loopback_http_servers():
    import flask

    orig = flask.Flask.run

    def run(self, host=None, port=None, *args, **kwargs):
        if host in (None, '::', '0.0.0.0', ''):
            host = '127.0.0.1'
        return orig(self, host, port, *args, **kwargs)

    flask.Flask.run = run
    note("health servers and Prometheus exporters bound to 127.0.0.1 "
         "instead of '::'")


def scope_namespace(role, ns):
    from kuryr_kubernetes import constants as k_const
    pods = f'{k_const.K8S_API_BASE}/namespaces/{ns}/pods'
    kps = f'{k_const.K8S_API_CRD_NAMESPACES}/{ns}/kuryrports'
    if role == 'controller':
        from kuryr_kubernetes.controller.handlers import kuryrport
        from kuryr_kubernetes.controller.handlers import lbaas
        from kuryr_kubernetes.controller.handlers import loadbalancer
        from kuryr_kubernetes.controller.handlers import vif
        vif.VIFHandler.OBJECT_WATCH_PATH = pods
        kuryrport.KuryrPortHandler.OBJECT_WATCH_PATH = kps
        # the pool's list of ports in use (read-only) too
        k_const.K8S_API_CRD_KURYRPORTS = kps
        # Services, Endpoints and KuryrLoadBalancers (when those handlers
        # are enabled): the periodic load balancer reconciliation lists
        # KuryrLoadBalancers through the constant
        base = f'{k_const.K8S_API_BASE}/namespaces/{ns}'
        klbs = f'{k_const.K8S_API_CRD_NAMESPACES}/{ns}/kuryrloadbalancers'
        lbaas.ServiceHandler.OBJECT_WATCH_PATH = f'{base}/services'
        lbaas.EndpointsHandler.OBJECT_WATCH_PATH = f'{base}/endpoints'
        loadbalancer.KuryrLoadBalancerHandler.OBJECT_WATCH_PATH = klbs
        k_const.K8S_API_CRD_KURYRLOADBALANCERS = klbs
        # NetworkPolicies (policy, kuryrnetworkpolicy and pod_label
        # handlers): the policies, their KNPs and the pods whose labels
        # they follow
        from kuryr_kubernetes.controller.handlers import kuryrnetworkpolicy
        from kuryr_kubernetes.controller.handlers import pod_label
        from kuryr_kubernetes.controller.handlers import policy
        nps = f'/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies'
        knps = f'{k_const.K8S_API_CRD_NAMESPACES}/{ns}/kuryrnetworkpolicies'
        policy.NetworkPolicyHandler.OBJECT_WATCH_PATH = nps
        kuryrnetworkpolicy.KuryrNetworkPolicyHandler.OBJECT_WATCH_PATH = knps
        pod_label.PodLabelHandler.OBJECT_WATCH_PATH = pods
        kps = f'{kps}, {base}/services, {base}/endpoints, {klbs}, {nps}, {knps}'
    else:
        # read when the watcher services are built (f-strings at init)
        k_const.K8S_API_PODS = pods
        k_const.K8S_API_CRD_KURYRPORTS = kps
    note(f"{role} watches scoped to namespace {ns}: {pods}, {kps}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ('controller', 'daemon'):
        sys.exit("usage: kuryr_peer_shim.py controller|daemon [options]")
    role = sys.argv.pop(1)
    ns = os.environ.get('KURYR_PEER_NAMESPACE')
    if not ns:
        sys.exit("kuryr_peer_shim: KURYR_PEER_NAMESPACE is not set")
    for var in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE'):
        os.environ.pop(var, None)
    if role == 'controller':
        # kuryr's own eventlet entry point monkey-patches first: keep that
        # order (kuryr-k8s-controller = kuryr_kubernetes.cmd.eventlet...)
        from kuryr_kubernetes.cmd.eventlet import controller as entry
        sys.argv[0] = 'kuryr-k8s-controller'
    else:
        from kuryr_kubernetes.cmd import daemon as entry
        sys.argv[0] = 'kuryr-daemon'
        netdev_default_datapath()
    loopback_http_servers()
    scope_namespace(role, ns)

    # kuryr sets its logging up inside start(); report the patches once it has
    from kuryr_kubernetes import config
    setup = config.setup_logging

    def setup_logging():
        setup()
        for msg in NOTES:
            LOG.warning("kuryr-peer shim: %s", msg)

    config.setup_logging = setup_logging
    sys.exit(entry.start())


if __name__ == '__main__':
    main()
