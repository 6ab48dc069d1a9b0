# shellcheck shell=bash
# Neutron backend "ovn" (ML2/OVN), part of component openstack: OVN 23.03
# from Debian 12 run by hand under $S/ovn -- the northbound and southbound
# ovsdb-servers, ovn-northd, and ovn-controller on the stack's own Open
# vSwitch (userspace datapath). The chassis is named after the Kubernetes
# node, so Neutron binds a pod's port to the node kuryr names; it is a
# gateway chassis (routers' external ports live here) with the bridge
# mappings physnet1:br-phys and public:br-ex. Neutron's ML2/OVN driver
# writes the NB database; OVN does DHCP, routing, NAT, security groups
# (ACLs) and load balancers (Octavia's `ovn` provider) itself, no agents.

OVN_DIR=$S/ovn
OVN_NB_SOCK=$OVN_DIR/nb.sock
OVN_SB_SOCK=$OVN_DIR/sb.sock
OVN_PKGS=(ovn-central ovn-host python3-ovn-octavia-provider)

nbctl() { ovn-nbctl --db="unix:$OVN_NB_SOCK" --timeout=20 "$@"; }
sbctl() { ovn-sbctl --db="unix:$OVN_SB_SOCK" --timeout=20 "$@"; }

# ovn_ml2_config: ml2_conf.ini for the ovn mechanism driver
ovn_ml2_config() {
    cat <<INI
[ml2]
type_drivers = local,flat,vlan,geneve
tenant_network_types = geneve
mechanism_drivers = ovn
extension_drivers = port_security,qos
overlay_ip_version = 4
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:2000
[ml2_type_geneve]
vni_ranges = 1:65536
max_header_size = 38
[securitygroup]
enable_security_group = true
[ovn]
ovn_nb_connection = unix:$OVN_NB_SOCK
ovn_sb_connection = unix:$OVN_SB_SOCK
ovn_l3_scheduler = leastloaded
# no metadata agent: pods and the test VMs are configured from their ports
ovn_metadata_enabled = false
enable_distributed_floating_ip = false
# OVN answers DHCP itself (native DHCP), no agent
disable_ovn_dhcp_for_baremetal_ports = false
INI
}

# ovn_service_plugins: Neutron's service plugins on OVN (the OVN L3 plugin
# instead of the agent-based router plugin)
ovn_service_plugins() { echo "ovn-router,trunk,segments,qos"; }

# ovn_octavia_options: what octavia-api and octavia-driver-agent need for
# the ovn provider
ovn_octavia_options() {
    cat <<INI
[ovn]
ovn_nb_connection = unix:$OVN_NB_SOCK
ovn_sb_connection = unix:$OVN_SB_SOCK
INI
}

# ovn_central_up: NB and SB databases and ovn-northd. Runs before
# neutron-server, which connects to both databases when it starts.
ovn_central_up() {
    need_pkgs "${OVN_PKGS[@]}"
    mkdir -p "$OVN_DIR"
    local db
    for db in nb sb; do
        [ -f "$OVN_DIR/ovn$db.db" ] || ovsdb-tool create "$OVN_DIR/ovn$db.db" "/usr/share/ovn/ovn-$db.ovsschema" \
            || die "creating the OVN ${db^^} database failed (ovsdb-tool, schema /usr/share/ovn/ovn-$db.ovsschema)"
        start "ovsdb-$db" ovsdb-server "$OVN_DIR/ovn$db.db" --remote="punix:$OVN_DIR/$db.sock" \
            --unixctl="$OVN_DIR/ovsdb-$db.ctl" --pidfile="$OVN_DIR/ovsdb-$db.pid" \
            --log-file="$LOGS/ovsdb-$db.log" --no-chdir
    done
    wait_for "OVN northbound database $OVN_NB_SOCK" 30 nbctl show
    wait_for "OVN southbound database $OVN_SB_SOCK" 30 sbctl show
    start ovn-northd ovn-northd --ovnnb-db="unix:$OVN_NB_SOCK" --ovnsb-db="unix:$OVN_SB_SOCK" \
        --unixctl="$OVN_DIR/ovn-northd.ctl" --pidfile="$OVN_DIR/ovn-northd.pid" \
        --log-file="$LOGS/ovn-northd.log" --no-chdir
    wait_proc ovn-northd "ovn-northd" 30 ovn-appctl -t "$OVN_DIR/ovn-northd.ctl" status
}

# ovn_chassis_ready: the SB database has this node's chassis
ovn_chassis_ready() {
    [ -n "$(sbctl --bare --columns=name find Chassis name="$STACK_NODE")" ]
}

# ovn_controller_up: this node as an OVN chassis on the stack's OVS
ovn_controller_up() {
    # the chassis: named after the node (Neutron binds ports by this
    # hostname), Geneve tunnels from the host's public address (only used
    # once a second chassis exists; userspace tunnelling needs the endpoint
    # on a netdev bridge, br-ex), a gateway for routers' external ports
    vsctl set Open_vSwitch . \
        external_ids:system-id="$STACK_NODE" external_ids:hostname="$STACK_NODE" \
        external_ids:ovn-remote="unix:$OVN_SB_SOCK" \
        external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip="$PUBLIC_HOST_IP" \
        external_ids:ovn-bridge=br-int external_ids:ovn-bridge-datapath-type=netdev \
        external_ids:ovn-bridge-mappings="physnet1:br-phys,public:br-ex" \
        external_ids:ovn-cms-options=enable-chassis-as-gw
    vsctl set Bridge br-int fail_mode=secure other_config:disable-in-band=true
    ( ovs_env; export OVN_RUNDIR=$OVN_DIR
      start ovn-controller ovn-controller "unix:$OVSDB_SOCK" \
          --pidfile="$OVN_DIR/ovn-controller.pid" --log-file="$LOGS/ovn-controller.log" --no-chdir )
    wait_proc ovn-controller "ovn-controller (chassis $STACK_NODE in the southbound database)" 60 ovn_chassis_ready
}

# ovn_agent_alive: Neutron sees this node's OVN controller as an alive agent
# (it binds ports only to hosts with one)
ovn_agent_alive() {
    curl -sf -H "X-Auth-Token: $OS_TOKEN" "$NEUTRON_URL/v2.0/agents?host=$STACK_NODE" |
        python3 -c 'import json, sys
agents = [a for a in json.load(sys.stdin)["agents"] if a["agent_type"].startswith("OVN Controller")]
sys.exit(0 if agents and agents[0]["alive"] else 1)'
}

ovn_down() {
    # ovn-controller first: it re-creates br-int while it runs
    stop 5 ovn-controller
    stop 5 ovn-northd
    stop 5 ovsdb-nb ovsdb-sb
    return 0
}

ovn_status() {
    local rc=0 n
    for n in ovsdb-nb ovsdb-sb ovn-northd ovn-controller; do
        pid_alive "$n" || { echo "  openstack: $n NOT running"; rc=1; }
    done
    echo "  OVN:        NB unix:$OVN_NB_SOCK, SB unix:$OVN_SB_SOCK, chassis $STACK_NODE (gateway, Geneve)"
    return $rc
}
