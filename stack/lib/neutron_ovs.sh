# shellcheck shell=bash
# Neutron backend "ovs" (ML2/openvswitch), part of component openstack:
# neutron-openvswitch-agent on the stack's OVS (OVS firewall, VXLAN tunnels,
# bridge mappings physnet1:br-phys and public:br-ex) wires ports, and
# neutron-l3-agent runs routers as network namespaces (qrouter-<id>) with
# iptables NAT. Both report as host $STACK_NODE, the Kubernetes node name.
#
# The agent's security-group firewall (KURYR_STACK_OVS_FIREWALL, fixed at
# the first `up` of openstack and kept in $S/ovs_firewall until `down`):
#   openvswitch      (default) OpenFlow rules in br-int; ports plug straight
#                    into br-int
#   iptables_hybrid  the older default many clouds still run: Neutron asks
#                    for hybrid plug (binding:vif_details ovs_hybrid_plug),
#                    each port gets a Linux bridge qbr<id> between the
#                    instance and br-int, and iptables (physdev match, bridge
#                    netfilter) filters on it. The host's bridge-nf sysctls
#                    are set while it runs and restored by `down`.

NEUTRON_OVS_PKGS=(neutron-l3-agent conntrack iptables)
OVS_FIREWALL=$(cat "$S/ovs_firewall" 2>/dev/null || echo "${KURYR_STACK_OVS_FIREWALL:-openvswitch}")
BRIDGE_NF_SYSCTLS=(net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.bridge.bridge-nf-call-arptables)

# choose_ovs_firewall: KURYR_STACK_OVS_FIREWALL, else what runs, else
# openvswitch (only for the ovs backend)
choose_ovs_firewall() {
    local want=${KURYR_STACK_OVS_FIREWALL:-} have=""
    case $want in ""|openvswitch|iptables_hybrid) ;;
        *) die "unknown KURYR_STACK_OVS_FIREWALL '$want': use openvswitch or iptables_hybrid" ;;
    esac
    [ -f "$S/ovs_firewall" ] && have=$(cat "$S/ovs_firewall")
    if [ -n "$have" ] && [ -n "$want" ] && [ "$want" != "$have" ]; then
        die "this stack's OVS agent runs the $have firewall: 'stack down' first to bring it up with $want"
    fi
    OVS_FIREWALL=${want:-${have:-openvswitch}}
    if [ "$OVS_FIREWALL" = iptables_hybrid ] && [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
        modprobe br_netfilter 2>/dev/null || true
        [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] \
            || die "the iptables_hybrid firewall needs bridge netfilter (br_netfilter), which this kernel lacks"
    fi
    echo "$OVS_FIREWALL" > "$S/ovs_firewall"
}

# bridge_nf_on: remember the host's bridge-nf sysctls once, then let
# bridged traffic through iptables (the hybrid firewall filters on qbr)
bridge_nf_on() {
    local saved=$S/bridge-nf.saved k
    if [ ! -f "$saved" ]; then
        for k in "${BRIDGE_NF_SYSCTLS[@]}"; do
            echo "$k=$(sysctl -n "$k")"
        done > "$saved.tmp" && mv "$saved.tmp" "$saved"
    fi
    for k in "${BRIDGE_NF_SYSCTLS[@]}"; do sysctl -qw "$k=1"; done
}

# bridge_nf_restore: the sysctls as they were before the stack
bridge_nf_restore() {
    local saved=$S/bridge-nf.saved line
    [ -f "$saved" ] || return 0
    while IFS= read -r line; do sysctl -qw "$line" || true; done < "$saved"
    rm -f "$saved"
}

# neutron_iptables_flush: the rules and chains the OVS agent's hybrid
# firewall and the L3 agent left in the host's tables (both leave them on
# exit); the stack's own and everyone else's rules are kept
neutron_iptables_flush() {
    local cmd t r c
    for cmd in iptables ip6tables; do
        command -v "$cmd" >/dev/null || continue
        for t in filter nat mangle raw; do
            "$cmd" -t "$t" -S >/dev/null 2>&1 || continue
            # jumps into neutron chains from the built-in chains
            "$cmd" -t "$t" -S | awk '$1 == "-A" && $2 !~ /^neutron-/ && / -j neutron-/' | sed 's/^-A /-D /' |
                while IFS= read -r r; do eval "\"$cmd\" -t $t $r" || true; done
            for c in $("$cmd" -t "$t" -S | awk '$1 == "-N" && $2 ~ /^neutron-/ { print $2 }'); do
                "$cmd" -t "$t" -F "$c" || true
            done
            for c in $("$cmd" -t "$t" -S | awk '$1 == "-N" && $2 ~ /^neutron-/ { print $2 }'); do
                "$cmd" -t "$t" -X "$c" || true
            done
        done
    done
}

# ovs_ml2_config: ml2_conf.ini for the openvswitch mechanism driver
ovs_ml2_config() {
    cat <<INI
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security,qos
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:2000
[ml2_type_vxlan]
vni_ranges = 1:10000
[securitygroup]
enable_security_group = true
firewall_driver = $OVS_FIREWALL
INI
}

ovs_service_plugins() { echo "router,trunk,segments,qos"; }

# ovs_agent_configs: the OVS agent's and the L3 agent's ini files
ovs_agent_configs() {
    cat > "$OS_ETC/neutron/plugins/ml2/openvswitch_agent.ini" <<INI
[DEFAULT]
# = the Kubernetes node name: kuryr binds a pod's port to its node
host = $STACK_NODE
log_file = $LOGS/neutron-openvswitch-agent.log
[ovs]
integration_bridge = br-int
tunnel_bridge = br-tun
local_ip = $H
# no OVS kernel module here: every bridge the agent makes is userspace
datapath_type = netdev
ovsdb_connection = unix:$OVSDB_SOCK
bridge_mappings = physnet1:br-phys,public:br-ex
of_listen_address = $H
of_listen_port = 6633
[agent]
tunnel_types = vxlan
polling_interval = 1
# root already: no sudo; ovs-ofctl and privsep must find the stack's OVS
root_helper = env PATH=/usr/sbin:/usr/bin:/sbin:/bin OVS_RUNDIR=$OVS_DIR
[securitygroup]
enable_security_group = true
firewall_driver = $OVS_FIREWALL
# no ipset userspace tool needed: one iptables rule per remote address
enable_ipset = false
INI
    cat > "$OS_ETC/neutron/l3_agent.ini" <<INI
[DEFAULT]
host = $STACK_NODE
log_file = $LOGS/neutron-l3-agent.log
interface_driver = openvswitch
agent_mode = legacy
# the userspace datapath's internal ports are taps held by ovs-vswitchd:
# moved into a router's namespace they stop carrying traffic, veths do not
ovs_use_veth = true
# no metadata service in this stack (and no haproxy)
enable_metadata_proxy = false
[agent]
root_helper = env PATH=/usr/sbin:/usr/bin:/sbin:/bin OVS_RUNDIR=$OVS_DIR
report_interval = 5
[ovs]
integration_bridge = br-int
ovsdb_connection = unix:$OVSDB_SOCK
INI
}

# agent_fresh BINARY SINCE: the agent BINARY of $STACK_NODE reports alive,
# started after SINCE
agent_fresh() {
    curl -sf -H "X-Auth-Token: $OS_TOKEN" \
        "$NEUTRON_URL/v2.0/agents?binary=$1&host=$STACK_NODE" |
        SINCE=$2 python3 -c 'import json, os, sys
agents = json.load(sys.stdin)["agents"]
ok = agents and agents[0]["alive"] and agents[0]["started_at"].replace(" ", "T")[:19] >= os.environ["SINCE"]
sys.exit(0 if ok else 1)'
}

# ovs_agents_start: the OVS agent (it boots while Keystone comes up)
ovs_agents_start() {
    need_pkgs "${NEUTRON_OVS_PKGS[@]}"
    # a restarted agent on kept data: its old row looks alive for a while, so
    # wait for a report from the agent started now (started_at: UTC, 1 s)
    OVS_AGENTS_SINCE=""
    pid_alive neutron-openvswitch-agent || OVS_AGENTS_SINCE=$(date -u -d '-1 sec' '+%Y-%m-%dT%H:%M:%S')
    [ "$OVS_FIREWALL" = iptables_hybrid ] && bridge_nf_on
    ( ovs_env; start neutron-openvswitch-agent neutron-openvswitch-agent \
        --config-file "$OS_ETC/neutron/neutron.conf" --config-file "$OS_ETC/neutron/plugins/ml2/openvswitch_agent.ini" )
}

# ovs_agents_ready: the OVS agent reports, then the L3 agent starts: its
# first RPC call, sent before neutron-server consumes its topic, would be
# lost and only time out after a minute
ovs_agents_ready() {
    wait_proc neutron-openvswitch-agent "neutron-openvswitch-agent (host $STACK_NODE)" 120 \
        agent_fresh neutron-openvswitch-agent "${OVS_AGENTS_SINCE:-0}"
    ( ovs_env; start neutron-l3-agent neutron-l3-agent \
        --config-file "$OS_ETC/neutron/neutron.conf" --config-file "$OS_ETC/neutron/l3_agent.ini" )
    wait_proc neutron-l3-agent "neutron-l3-agent (host $STACK_NODE)" 120 \
        agent_fresh neutron-l3-agent "${OVS_AGENTS_SINCE:-0}"
}

# ovs_agents_down: the agents, then the router namespaces the L3 agent made
# (it leaves them behind on exit) and their veths
ovs_agents_down() {
    stop 8 neutron-openvswitch-agent neutron-l3-agent
    local base=$STACK_HOME/baseline/netns n
    for n in $(ip netns list 2>/dev/null | awk '$1 ~ /^(qrouter|snat|fip|qdhcp)-/ { print $1 }'); do
        grep -qx "$n" "$base" 2>/dev/null || ip netns del "$n" 2>/dev/null || true
    done
    # the hybrid firewall's qbr/qvb/qvo links of ports nothing unplugged
    for n in $(ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E '^(qbr|qvb|qvo)[0-9a-f]{8}'); do
        ip link del "$n" 2>/dev/null || true
    done
    neutron_iptables_flush
    bridge_nf_restore
    rm -f "$S/ovs_firewall"
    return 0
}

ovs_agents_status() {
    local rc=0 n
    for n in neutron-openvswitch-agent neutron-l3-agent; do
        pid_alive "$n" || { echo "  openstack: $n NOT running"; rc=1; }
    done
    return $rc
}
