# shellcheck shell=bash
# The public (external) network of component openstack, as a single-node
# OpenStack install has it: an OVS bridge br-ex on the userspace datapath
# whose own port carries the host's public address 172.24.4.1/24, mapped to
# the flat provider network `public` (physical network "public"); a Neutron
# network `public` (router:external) with subnet 172.24.4.0/24 whose gateway
# is the host; and a router `kuryr-stack-router` with its gateway there and
# SNAT. A tenant subnet attached to that router reaches the host (and the
# kube-apiserver served on the public address); floating IPs on `public`
# reach ports from the host.

PUBLIC_BRIDGE=br-ex
PUBLIC_CIDR=172.24.4.0/24
PUBLIC_HOST_IP=172.24.4.1
PUBLIC_PREFIX=24
# Kubernetes' service IP range (kube-apiserver --service-cluster-ip-range)
# inside the Neutron service subnet, whose other half is Neutron's own
SERVICE_RANGE=10.96.0.0/16
SERVICE_SUBNET_CIDR=10.96.0.0/15
SERVICE_NEUTRON_START=10.97.0.2

# public_address_on_bridge: br-ex holds the host's public address (the
# output is read whole: `grep -q` under pipefail would fail on ip's SIGPIPE)
public_address_on_bridge() {
    local a
    a=$(ip -o addr show dev "$PUBLIC_BRIDGE" 2>/dev/null) || return 1
    grep -qw "$PUBLIC_HOST_IP/$PUBLIC_PREFIX" <<< "$a"
}

# public_bridge_up: br-ex with the host's public address (before the
# backend maps it)
public_bridge_up() {
    vsctl --may-exist add-br "$PUBLIC_BRIDGE" -- set Bridge "$PUBLIC_BRIDGE" datapath_type=netdev
    local i
    for i in $(seq 1 50); do [ -e "/sys/class/net/$PUBLIC_BRIDGE" ] && break; sleep 0.1; done
    [ -e "/sys/class/net/$PUBLIC_BRIDGE" ] || die "ovs-vswitchd made no device $PUBLIC_BRIDGE for bridge $PUBLIC_BRIDGE (log: $OVS_DIR/ovs-vswitchd.log)"
    if ! public_address_on_bridge; then
        local holder
        holder=$(ip -o addr show | awk -v a="$PUBLIC_HOST_IP/" 'index($4, a) == 1 { print $2 }' | head -1)
        [ -z "$holder" ] || die "the public address $PUBLIC_HOST_IP is already on $holder: another stack or a leftover? (remove it, or 'stack down' the other stack)"
        ip addr add "$PUBLIC_HOST_IP/$PUBLIC_PREFIX" dev "$PUBLIC_BRIDGE" \
            || die "adding $PUBLIC_HOST_IP/$PUBLIC_PREFIX to $PUBLIC_BRIDGE failed"
    fi
    ip link set "$PUBLIC_BRIDGE" up
}

# public_network_up: Neutron's public network, subnet and the stack's router
# (idempotent: found by name); exports their ids into env.d/public.env
public_network_up() {
    local out
    out=$(KEYSTONE_URL=$KEYSTONE_URL PASSWORD=$OS_PW NEUTRON_URL=$NEUTRON_URL \
          PUBLIC_CIDR=$PUBLIC_CIDR PUBLIC_GATEWAY=$PUBLIC_HOST_IP \
          SERVICE_CIDR=$SERVICE_SUBNET_CIDR SERVICE_NEUTRON_START=$SERVICE_NEUTRON_START \
          python3 "$STACK_SRC/openstack/public_network.py" 2>>"$LOGS/public-network.log") \
        || { tail -n 5 "$LOGS/public-network.log" >&2; die "creating the public network and router failed (log: $LOGS/public-network.log)"; }
    eval "$out"
    [ -n "${PUBLIC_NET_ID:-}" ] && [ -n "${ROUTER_ID:-}" ] || die "public_network.py printed no ids: $out"
    log "openstack: public network $PUBLIC_CIDR ($PUBLIC_NET_ID), router $ROUTER_ID (gateway $ROUTER_GW_IP, SNAT), service subnet $SERVICE_SUBNET_CIDR ($SERVICE_SUBNET_ID)"
    write_env public <<ENV
export KURYR_STACK_PUBLIC_NET=$PUBLIC_NET_ID KURYR_STACK_PUBLIC_SUBNET=$PUBLIC_SUBNET_ID
export KURYR_STACK_PUBLIC_CIDR=$PUBLIC_CIDR KURYR_STACK_HOST_PUBLIC_IP=$PUBLIC_HOST_IP
export KURYR_STACK_ROUTER=$ROUTER_ID KURYR_STACK_ROUTER_GW_IP=$ROUTER_GW_IP
export KURYR_STACK_SERVICE_NET=$SERVICE_NET_ID KURYR_STACK_SERVICE_SUBNET=$SERVICE_SUBNET_ID
export KURYR_STACK_SERVICE_RANGE=$SERVICE_RANGE
ENV
}

# (no public_down: br-ex and its address go with the bridges openstack_down
# deletes, the Neutron objects with Neutron's database)
public_status() {
    if public_address_on_bridge; then
        echo "  public:     $PUBLIC_BRIDGE $PUBLIC_HOST_IP/$PUBLIC_PREFIX, Neutron network public $PUBLIC_CIDR, router kuryr-stack-router (SNAT)"
    else
        echo "  public:     $PUBLIC_BRIDGE has no address $PUBLIC_HOST_IP"; return 1
    fi
}
