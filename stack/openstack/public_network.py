#!/usr/bin/env python3
"""Create the test stack's public network and router in Neutron, as a
single-node OpenStack install has them: network `public` (flat, physical
network "public", router:external, shared off), subnet `public-subnet`
(PUBLIC_CIDR, gateway PUBLIC_GATEWAY = the host's address on br-ex, no
DHCP), and router `kuryr-stack-router` with its external gateway on it and
SNAT. Also the Kubernetes service network, as kuryr deployments have it:
network `k8s-services` with subnet `k8s-services` SERVICE_CIDR (which holds
the cluster's service IP range: VIPs are ClusterIPs), whose gateway and
allocation pool sit in the part of it outside that range, attached to the
router so pods reach the VIPs. Idempotent: objects are found by name.
Prints shell assignments of their ids and the router's gateway address.

Environment: KEYSTONE_URL, PASSWORD, NEUTRON_URL, PUBLIC_CIDR, PUBLIC_GATEWAY,
SERVICE_CIDR, SERVICE_NEUTRON_START (first address Neutron may hand out)."""
import ipaddress
import os

from osapi import admin_token, call

NEUTRON = os.environ["NEUTRON_URL"].rstrip("/") + "/v2.0"


class Neutron:
    def __init__(self, token):
        self.token = token

    def find(self, collection, name):
        found, _ = call("GET", f"{NEUTRON}/{collection}?name={name}", token=self.token)
        items = found[collection]
        return items[0] if items else None

    def list_ports(self, network_id):
        found, _ = call("GET", f"{NEUTRON}/ports?network_id={network_id}", token=self.token)
        return found["ports"]

    def ensure(self, kind, collection, name, attrs):
        have = self.find(collection, name)
        if have:
            return have
        created, _ = call("POST", f"{NEUTRON}/{collection}", {kind: dict(name=name, **attrs)},
                          token=self.token)
        return created[kind]


def main():
    cidr = ipaddress.ip_network(os.environ["PUBLIC_CIDR"])
    gateway = os.environ["PUBLIC_GATEWAY"]
    hosts = list(cidr.hosts())
    n = Neutron(admin_token(os.environ["KEYSTONE_URL"], os.environ["PASSWORD"]))
    net = n.ensure("network", "networks", "public", {
        "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": "public"})
    subnet = n.ensure("subnet", "subnets", "public-subnet", {
        "network_id": net["id"], "ip_version": 4, "cidr": str(cidr), "gateway_ip": gateway,
        "enable_dhcp": False,
        # the host holds the gateway address; everything after it is Neutron's
        "allocation_pools": [{"start": str(hosts[1]), "end": str(hosts[-1])}]})
    router = n.ensure("router", "routers", "kuryr-stack-router", {
        "external_gateway_info": {"network_id": net["id"], "enable_snat": True}})
    svc_cidr = ipaddress.ip_network(os.environ["SERVICE_CIDR"])
    start = ipaddress.ip_address(os.environ["SERVICE_NEUTRON_START"])
    svc_hosts = list(svc_cidr.hosts())
    svc_net = n.ensure("network", "networks", "k8s-services", {})
    svc_sub = n.ensure("subnet", "subnets", "k8s-services", {
        "network_id": svc_net["id"], "ip_version": 4, "cidr": str(svc_cidr),
        "gateway_ip": str(svc_hosts[-1]), "enable_dhcp": False,
        "allocation_pools": [{"start": str(start), "end": str(svc_hosts[-2])}]})
    attached = [p for p in n.list_ports(svc_net["id"]) if p["device_id"] == router["id"]]
    if not attached:
        call("PUT", f"{NEUTRON}/routers/{router['id']}/add_router_interface",
             {"subnet_id": svc_sub["id"]}, token=n.token)
    gw_ips = [ip["ip_address"] for ip in
              (router.get("external_gateway_info") or {}).get("external_fixed_ips", [])]
    if not gw_ips:
        raise SystemExit(f"router {router['id']} has no external gateway address: {router}")
    print(f"PUBLIC_NET_ID={net['id']} PUBLIC_SUBNET_ID={subnet['id']} "
          f"ROUTER_ID={router['id']} ROUTER_GW_IP={gw_ips[0]} "
          f"SERVICE_NET_ID={svc_net['id']} SERVICE_SUBNET_ID={svc_sub['id']}")


if __name__ == "__main__":
    main()
