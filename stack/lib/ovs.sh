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

# tap_holders NAME: pids of the processes that hold tap device NAME open
# (a tun fd's fdinfo names its device: "iff: NAME")
tap_holders() {
    local fd pid
    for fd in /proc/[0-9]*/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = /dev/net/tun ] || continue
        pid=${fd#/proc/}; pid=${pid%%/*}
        grep -qx "iff:[[:space:]]*$1" "/proc/$pid/fdinfo/${fd##*/}" 2>/dev/null && echo "$pid"
    done | sort -u
}

# held_taps PID: the tap devices process PID holds open
held_taps() {
    local fd
    for fd in /proc/"$1"/fd/*; do
        [ "$(readlink "$fd" 2>/dev/null)" = /dev/net/tun ] || continue
        awk '$1 == "iff:" && NF > 1 { print $2 }' "/proc/$1/fdinfo/${fd##*/}" 2>/dev/null
    done
}

is_tap() { ip -d link show "$1" 2>/dev/null | grep -q 'tun type tap'; }

# ovs_check_namespace: refuse to start a second userspace OVS in this network
# namespace. Both would create the taps ovs-netdev and br-int: the second one
# finds them busy, and its clean-up deletes the first one's devices (whose
# vswitchd then spins on dead fds). Taps that nobody holds are leftovers of a
# killed OVS and are removed.
ovs_check_namespace() {
    local t holders
    for t in ovs-netdev br-int br-tun br-phys; do
        is_tap "$t" || continue
        holders=$(tap_holders "$t" | tr '\n' ' ')
        [ -z "$holders" ] || die "another userspace Open vSwitch runs in this network namespace (pid ${holders% } holds tap $t); stop it first (its 'stack down') -- only one per namespace"
        log "ovs: removing leftover tap $t"
        ip link del "$t" 2>/dev/null || true
    done
}

# vswitchd_ctl ARGS...: ovs-appctl to the running vswitchd (its own pid
# file: under --monitor that is the daemon, not the monitor `start` noted).
vswitchd_ctl() {
    local p
    p=$(cat "$OVS_DIR/ovs-vswitchd.pid" 2>/dev/null) || return 1
    ovs-appctl -t "$OVS_DIR/ovs-vswitchd.$p.ctl" "$@"
}

# ovs_crashes: how many times the monitor restarted a crashed vswitchd.
ovs_crashes() {
    grep -c 'crashes: pid' "$OVS_DIR/ovs-vswitchd.log" 2>/dev/null || true
}

ovs_up() {
    need_pkgs openvswitch-switch iproute2 iputils-ping
    mkdir -p "$OVS_DIR"
    ovs_env
    pid_alive ovs-vswitchd || ovs_check_namespace
    [ -f "$OVS_DIR/conf.db" ] || ovsdb-tool create "$OVS_DIR/conf.db" >/dev/null
    start ovsdb-server ovsdb-server "$OVS_DIR/conf.db" --remote="punix:$OVSDB_SOCK" \
        --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
        --pidfile="$OVS_DIR/ovsdb-server.pid" --log-file="$OVS_DIR/ovsdb-server.log" --no-chdir
    wait_for "ovsdb-server $OVSDB_SOCK" 30 vsctl --no-wait show
    vsctl --no-wait init
    # with the userspace datapath, TCP through veths carries bad checksums
    # unless OVS does TSO/checksum offload itself
    vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
    # --monitor, as ovs-ctl starts it: a crashed vswitchd is restarted (and
    # ovn-controller or the OVS agent put its flows back). OVS 3.1.0's
    # userspace conntrack can abort on NAT'd traffic ("assertion
    # conn->conn_type == CT_CONN_TYPE_DEFAULT failed in conn_update_state"):
    # seen under Services' load balancers with ML2/OVN. `stack status` and
    # scripts/conformance report such restarts.
    start ovs-vswitchd ovs-vswitchd "unix:$OVSDB_SOCK" --pidfile="$OVS_DIR/ovs-vswitchd.pid" \
        --log-file="$OVS_DIR/ovs-vswitchd.log" --no-chdir --monitor
    wait_for "ovs-vswitchd" 30 vswitchd_ctl version
    vsctl --may-exist add-br br-int -- set Bridge br-int datapath_type=netdev
    write_env ovs <<ENV
export OVS_RUNDIR=$OVS_DIR OVSDB_SOCK=$OVSDB_SOCK KURYR_STACK_OVS_DIR=$OVS_DIR
ENV
}

ovs_down() {
    ovs_env
    if pid_alive ovs-vswitchd; then
        # The netdev datapath makes its ports (ovs-netdev, each bridge, each
        # type=internal interface) persistent taps, which outlive the
        # vswitchd. Note the ones this vswitchd holds -- by fd, not by name,
        # so a same-named device of someone else is never touched.
        local pid taps t
        pid=$(cat "$OVS_DIR/ovs-vswitchd.pid" 2>/dev/null || cat "$RUN/ovs-vswitchd.pid")
        taps=$(held_taps "$pid")
        timeout 10 ovs-appctl -t "$OVS_DIR/ovs-vswitchd.$pid.ctl" exit --cleanup >/dev/null 2>&1
        stop 5 ovs-vswitchd
        for t in $taps; do
            if is_tap "$t" && [ -z "$(tap_holders "$t")" ]; then ip link del "$t" 2>/dev/null || true; fi
        done
    fi
    stop 5 ovsdb-server
    return 0
}

ovs_status() {
    local rc=0 n
    for n in ovsdb-server ovs-vswitchd; do pid_alive "$n" || { echo "  ovs: $n NOT running"; rc=1; }; done
    # a vswitchd whose tap was deleted under it keeps running, busy on a dead fd
    if pid_alive ovs-vswitchd && ! is_tap br-int; then echo "  ovs: tap br-int is gone (deleted by someone else?)"; rc=1; fi
    echo "  OVS:        unix:$OVSDB_SOCK, bridges: $(vsctl list-br 2>/dev/null | tr '\n' ' ')(datapath netdev)"
    local crashes
    crashes=$(ovs_crashes)
    if [ "${crashes:-0}" != 0 ]; then
        echo "  ovs: ovs-vswitchd crashed and was restarted $crashes time(s): see $OVS_DIR/ovs-vswitchd.log"
    fi
    return $rc
}
