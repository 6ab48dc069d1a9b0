# shellcheck shell=bash
# Component "ovs": Open vSwitch started by hand -- ovsdb-server and
# ovs-vswitchd with their own database, sockets and logs under $S/ovs -- and
# a bridge br-int on the userspace datapath (the kernel module is absent on
# these machines). Runs in the root network namespace: one userspace OVS per
# namespace, since each creates taps named after its bridges and ovs-netdev.

OVS_DIR=$S/ovs
OVSDB_SOCK=$OVS_DIR/db.sock

vsctl() { ovs-vsctl --db="unix:$OVSDB_SOCK" --timeout=20 "$@"; }

ovs_env() {
    export OVS_RUNDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_SYSCONFDIR=$OVS_DIR
}

ovs_up() {
    need_pkgs openvswitch-switch iproute2 iputils-ping
    mkdir -p "$OVS_DIR"
    ovs_env
    [ -f "$OVS_DIR/conf.db" ] || ovsdb-tool create "$OVS_DIR/conf.db" >/dev/null
    start ovsdb-server ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVSDB_SOCK" \
        --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
        --pidfile="$OVS_DIR/ovsdb-server.pid" --log-file="$OVS_DIR/ovsdb-server.log" --no-chdir
    wait_for "ovsdb-server $OVSDB_SOCK" 30 vsctl --no-wait show
    vsctl --no-wait init
    # with the userspace datapath, TCP through veths carries bad checksums
    # unless OVS does TSO/checksum offload itself
    vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
    start ovs-vswitchd ovs-vswitchd "unix:$OVSDB_SOCK" --pidfile="$OVS_DIR/ovs-vswitchd.pid" \
        --log-file="$OVS_DIR/ovs-vswitchd.log" --no-chdir
    wait_for "ovs-vswitchd" 30 ovs-appctl -t "$OVS_DIR/ovs-vswitchd.$(cat "$RUN/ovs-vswitchd.pid").ctl" version
    vsctl --may-exist add-br br-int -- set Bridge br-int datapath_type=netdev
    write_env ovs <<ENV
export OVS_RUNDIR=$OVS_DIR OVSDB_SOCK=$OVSDB_SOCK KURYR_STACK_OVS_DIR=$OVS_DIR
ENV
}

ovs_down() {
    ovs_env
    if pid_alive ovs-vswitchd; then
        # the netdev datapath leaves its bridge and internal ports behind as
        # taps: note them before the database goes
        local taps t
        taps=$(vsctl -f csv --no-headings --columns=name find Interface type=internal 2>/dev/null | tr -d '"')
        timeout 10 ovs-appctl -t "$OVS_DIR/ovs-vswitchd.$(cat "$RUN/ovs-vswitchd.pid").ctl" exit --cleanup >/dev/null 2>&1
        stop 5 ovs-vswitchd
        for t in $taps ovs-netdev; do
            ip -d link show "$t" 2>/dev/null | grep -q 'tun type tap' && { ip link del "$t" 2>/dev/null || true; }
        done
    fi
    stop 5 ovsdb-server
    return 0
}

ovs_status() {
    local rc=0 n
    for n in ovsdb-server ovs-vswitchd; do pid_alive "$n" || { echo "  ovs: $n NOT running"; rc=1; }; done
    echo "  OVS:        unix:$OVSDB_SOCK, bridges: $(vsctl list-br 2>/dev/null | tr '\n' ' ')(datapath netdev)"
    return $rc
}
