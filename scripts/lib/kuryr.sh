# shellcheck shell=bash
# kuryr-rs on the running test stack, as plain processes: shared by
# scripts/demo and scripts/conformance. Sourced after the stack's env file;
# the caller sets:
#   KD        a directory of its own (bin/, logs, sockets, state)
#   KCLUSTER  the cluster id (tag kuryr-cluster:<id>, lease, node groups)
# and may set KCONTROLLER_ARGS (an array of extra controller flags).
# Functions fail through `fail MSG`, which the caller defines.

# kuryr_skip CHECK REASON: a check that cannot run here, said on stderr and
# recorded for scripts/test's count of skips
kuryr_skip() {
    echo "  SKIP: $1: $2" >&2
    if [ -n "${KURYR_TEST_SKIPS:-}" ]; then echo "SKIP: $1: $2" >> "$KURYR_TEST_SKIPS"; fi
}

# kuryr_build: the release binaries into $KD/bin
kuryr_build() {
    ./scripts/build-release "$KD/bin" > "$KD/build.log" 2>&1 \
        || { tail -20 "$KD/build.log"; fail "build (log: $KD/build.log)"; }
}

# kuryr_network NAME CIDR [routed]: a Neutron network and subnet for pods
# (attached to the stack's router with `routed`: pods then reach the host
# and the API server through SNAT); sets KNET and KSUBNET
kuryr_network() {
    KNET=$(openstack network create -f value -c id "$1")
    KSUBNET=$(openstack subnet create -f value -c id --network "$KNET" --subnet-range "$2" "$1")
    if [ "${3:-}" = routed ]; then
        openstack router add subnet "$KURYR_STACK_ROUTER" "$KSUBNET"
        KROUTED=1
    fi
}

# kuryr_conf FILE POOL_DRIVER [services [policy]]: kuryr.conf for the stack:
# pods on $KSUBNET in the project's default group, node ports on, the
# daemon's files in $KD; with `services` (Neutron on OVN), Services become
# load balancers of Octavia's ovn provider with their VIPs on the stack's
# service subnet; with `policy` too, NetworkPolicies become security groups
# and a pod no policy selects is in group kuryr/$KCLUSTER/pods, open to
# every IPv4 source (Kubernetes' default: Neutron's default group admits
# only its own members, which a pod selected by a policy is not)
kuryr_conf() {
    local project sg
    project=$(openstack project show -f value -c id "$OS_PROJECT_NAME")
    if [ "${4:-}" = policy ]; then
        sg=$(openstack security group create -f value -c id --project "$project" \
            --description "kuryr-rs test cluster $KCLUSTER: pods no NetworkPolicy selects" "kuryr/$KCLUSTER/pods")
        openstack security group rule create --ingress --ethertype IPv4 "$sg" >/dev/null
        KPODSG=$sg
    else
        sg=$(openstack security group list --project "$project" -f value -c ID -c Name | awk '$2 == "default" {print $1; exit}')
    fi
    [ -n "$sg" ] || fail "no default security group in project $OS_PROJECT_NAME"
    KPROJECT=$project KSG=$sg
    cat > "$1" <<EOF
[kubernetes]
pod_vif_driver = neutron-vif
vif_pool_driver = ${2:-noop}

[neutron_defaults]
project = $project
pod_subnet = $KSUBNET
pod_security_groups = $sg
ovs_bridge = br-int
resource_tags = $KCLUSTER

[cni_daemon]
vif_annotation_timeout = 120
daemon_socket = $KD/daemon.sock
state_dir = $KD/state
EOF
    if [ "${3:-}" = services ]; then
        cat >> "$1" <<EOF

[neutron_defaults]
service_subnet = $KURYR_STACK_SERVICE_SUBNET

[kubernetes]
endpoints_driver_octavia_provider = ovn
EOF
        if [ "${4:-}" = policy ]; then
            printf '\n[kubernetes]\npod_security_groups_driver = policy\nenabled_handlers = vif,kuryrport,service,endpoints,kuryrloadbalancer,policy%s\n' \
                "$([ "${KNSNETS:-0}" = 1 ] && echo ,namespace)" >> "$1"
        fi
    else
        # no Services: they need a provider that carries traffic
        printf '\n[kubernetes]\nenabled_handlers = vif,kuryrport%s\n' "$([ "${KNSNETS:-0}" = 1 ] && echo ,namespace)" >> "$1"
    fi
}

# kuryr_namespace_networks FILE CIDR: every namespace on a network and
# subnet of its own, from subnet pool kuryr/$KCLUSTER/namespaces (CIDR, /24
# each) attached to the stack's router (which $KSUBNET, with the node ports,
# must be on too); appended to kuryr.conf FILE (made by kuryr_conf, whose
# enabled_handlers name namespace when KNSNETS=1); sets KPOOL
kuryr_namespace_networks() {
    KPOOL=$(openstack subnet pool create -f value -c id --pool-prefix "$2" --default-prefix-length 24 "kuryr/$KCLUSTER/namespaces")
    printf '\n[kubernetes]\npod_subnets_driver = namespace\n[namespace_subnet]\npod_subnet_pool = %s\npod_router = %s\n' \
        "$KPOOL" "$KURYR_STACK_ROUTER" >> "$1"
}

# kuryr_remove_namespace_networks: after kuryr-controller has stopped, the
# KuryrNetworks' finalizers, then the namespaces' networks (tagged with the
# cluster: off the router, their ports, themselves) and the subnet pool
kuryr_remove_namespace_networks() {
    local k="kubectl --kubeconfig $KUBECONFIG" ns n net sn
    [ -n "${KPOOL:-}" ] || return 0
    if command -v jq >/dev/null; then
        $k get kuryrnetworks -A -o json 2>/dev/null | jq -r '.items[] | [.metadata.namespace, .metadata.name] | @tsv' \
            | while IFS=$'\t' read -r ns n; do
                $k -n "$ns" patch kuryrnetwork "$n" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
            done
    fi
    for net in $(openstack network list --tags "kuryr-cluster:$KCLUSTER" -f value -c ID 2>/dev/null); do
        for sn in $(openstack subnet list --network "$net" -f value -c ID 2>/dev/null); do
            openstack router remove subnet "$KURYR_STACK_ROUTER" "$sn" >/dev/null 2>&1 || true
        done
        openstack port list --network "$net" -f value -c ID 2>/dev/null | xargs -r openstack port delete >/dev/null 2>&1 || true
        openstack network delete "$net" >/dev/null 2>&1 || true
    done
    openstack subnet pool delete "$KPOOL" >/dev/null 2>&1 || true
}

# kuryr_wait_ready PID URL LOG NAME: until URL answers, failing if PID exits
kuryr_wait_ready() {
    local _i
    # a restarted controller first waits for its dead predecessor's lease
    for _i in $(seq 1 300); do
        curl -fs "$2" >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || { tail -n 20 "$3"; fail "$4 exited"; }
        sleep 0.2
    done
    fail "$4 not ready in 60 s (log: $3)"
}

# kuryr_start_controller CONF [ARGS...]: sets KCONTROLLER_PID
kuryr_start_controller() {
    local conf=$1; shift
    "$KD/bin/kuryr-controller" --config-file "$conf" --kubeconfig "$KUBECONFIG" \
        --cluster-id "$KCLUSTER" --metrics-address 127.0.0.1:9654 \
        --leader-lease "kube-system/$KCLUSTER-controller" "${KCONTROLLER_ARGS[@]}" "$@" \
        >> "$KD/controller.log" 2>&1 &
    KCONTROLLER_PID=$!
    kuryr_wait_ready "$KCONTROLLER_PID" 127.0.0.1:9654/readyz "$KD/controller.log" kuryr-controller
}

# kuryr_start_daemon CONF: sets KDAEMON_PID
kuryr_start_daemon() {
    "$KD/bin/kuryr-daemon" --config-file "$1" --kubeconfig "$KUBECONFIG" \
        --node-name "$KURYR_STACK_NODE" --ovsdb "$OVSDB_SOCK" --metrics-address 127.0.0.1:9655 \
        >> "$KD/daemon.log" 2>&1 &
    KDAEMON_PID=$!
    kuryr_wait_ready "$KDAEMON_PID" 127.0.0.1:9655/ready "$KD/daemon.log" kuryr-daemon
}

# kuryr_install_cni: kuryr-cni becomes the kubelet's CNI plugin (a conflist
# sorted before the stack's bridge one; CNI 1.0.0 for containerd 1.6)
kuryr_install_cni() {
    install -m 0755 "$KD/bin/kuryr-cni" "$KURYR_STACK_CNI_BIN_DIR/kuryr-cni"
    cat > "$KURYR_STACK_CNI_CONF_DIR/05-kuryr.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "kuryr",
 "plugins": [{"type": "kuryr-cni", "daemonSocket": "$KD/daemon.sock", "timeout": 180}]}
EOF
}

# kuryr_uninstall_cni: the stack's bridge plugin is the node's CNI again
kuryr_uninstall_cni() {
    rm -f "$KURYR_STACK_CNI_CONF_DIR/05-kuryr.conflist" "$KURYR_STACK_CNI_BIN_DIR/kuryr-cni"
}

# kuryr_stop: SIGTERM to the controller and the daemon (the daemon keeps pods
# and the node port plugged, by design)
kuryr_stop() {
    # either may have exited already (the reason a caller is cleaning up):
    # a failed kill must not end the caller's cleanup under set -e
    if [ -n "${KCONTROLLER_PID:-}" ]; then kill "$KCONTROLLER_PID" 2>/dev/null || true; fi
    if [ -n "${KDAEMON_PID:-}" ]; then kill "$KDAEMON_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}

# kuryr_remove_node_port: the node's own interface and its OVS port
# (kuryr-daemon leaves them when it stops, so the node keeps reaching pods)
kuryr_remove_node_port() {
    local p
    # the Node's record of a port deleted with the network: a daemon started
    # later would plug that stale port until the controller made a new one
    kubectl --kubeconfig "$KUBECONFIG" annotate node "$KURYR_STACK_NODE" openstack.org/kuryr-node-port- >/dev/null 2>&1 || true
    ip link del kuryr-node 2>/dev/null || true
    for p in $(ovs-vsctl --db="unix:$OVSDB_SOCK" --bare --columns=name find Interface external_ids:kuryr-node-port="$KURYR_STACK_NODE" 2>/dev/null); do
        ovs-vsctl --db="unix:$OVSDB_SOCK" --if-exists del-port "$p" >/dev/null 2>&1 || true
        ip link del "$p" 2>/dev/null || true
    done
}

# kuryr_coredns_up [LABEL]: cluster DNS: CoreDNS (built by the stack from
# its Go modules, imported into containerd) as the kube-dns Deployment and
# Service at $KURYR_STACK_CLUSTER_DNS, until its pods are Ready; LABEL
# ("key: value") is added to its pods' labels (a controller that selects
# pods must select them too). Logs the builds to $KD/build-coredns.log.
kuryr_coredns_up() {
    local k="kubectl --kubeconfig $KUBECONFIG" img
    img=$(./stack/stack build-coredns 2>>"$KD/build-coredns.log" | tail -n 1) \
        || fail "stack build-coredns (log: $KD/build-coredns.log)"
    ./stack/stack import-coredns-image 2>>"$KD/build-coredns.log" \
        || fail "stack import-coredns-image (log: $KD/build-coredns.log)"
    sed -e "s|@IMAGE@|$img|g" -e "s|@DNS_IP@|$KURYR_STACK_CLUSTER_DNS|g" \
        -e "s|^        k8s-app: kube-dns\$|&${1:+\\n        $1}|" stack/coredns/coredns.yaml > "$KD/coredns.yaml"
    KCOREDNS=1
    # CoreDNS pods an earlier run left (its network gone with it, held by
    # kuryr's pod finalizer after that run's controller stopped) go first
    local p
    for p in $($k -n kube-system get pods -l k8s-app=kube-dns -o name 2>/dev/null); do
        $k -n kube-system patch "$p" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
        $k -n kube-system delete "$p" --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    done
    $k apply -f "$KD/coredns.yaml" >/dev/null
    $k -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null \
        || { $k -n kube-system describe pods -l k8s-app=kube-dns | tail -20; fail "CoreDNS did not become Ready"; }
}

# kuryr_coredns_down: CoreDNS goes (while kuryr-rs still runs, to give its
# pods' ports back)
kuryr_coredns_down() {
    [ -n "${KCOREDNS:-}" ] || return 0
    kubectl --kubeconfig "$KUBECONFIG" delete -f "$KD/coredns.yaml" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
    # its pods too (a Deployment's pods go after it, in the background)
    kubectl --kubeconfig "$KUBECONFIG" -n kube-system wait --for=delete pod -l k8s-app=kube-dns --timeout=120s >/dev/null 2>&1 || true
}

# kuryr_remove_load_balancers: after kuryr-controller has stopped, what it
# made for Services goes: its finalizers off the Services, the
# KuryrLoadBalancers, the cluster's Octavia load balancers (cascade)
kuryr_remove_load_balancers() {
    local k="kubectl --kubeconfig $KUBECONFIG" ns n rest lb
    command -v jq >/dev/null || return 0
    $k get services -A -o json 2>/dev/null | jq -r '.items[]
        | select((.metadata.finalizers // []) | index("kuryr.openstack.org/service-finalizer"))
        | [.metadata.namespace, .metadata.name, ((.metadata.finalizers - ["kuryr.openstack.org/service-finalizer"]) | tojson)] | @tsv' \
        | while IFS=$'\t' read -r ns n rest; do
            $k -n "$ns" patch service "$n" --type merge -p "{\"metadata\":{\"finalizers\":$rest}}" >/dev/null 2>&1 || true
        done
    $k get kuryrloadbalancers -A -o json 2>/dev/null | jq -r '.items[] | [.metadata.namespace, .metadata.name] | @tsv' \
        | while IFS=$'\t' read -r ns n; do
            $k -n "$ns" patch kuryrloadbalancer "$n" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
            $k -n "$ns" delete kuryrloadbalancer "$n" --ignore-not-found --wait=false >/dev/null 2>&1 || true
        done
    for lb in $(openstack loadbalancer list --tags "kuryr-cluster:$KCLUSTER" -f value -c id 2>/dev/null); do
        openstack loadbalancer delete --cascade --wait "$lb" >/dev/null 2>&1 || true
    done
}

# kuryr_remove_network: every port left on $KNET (a pool's, the node ports),
# the router interface, subnet and network, then the cluster's node groups
# (node access first: it names the nodes' group). Best effort: a failed
# delete does not end the caller's cleanup.
kuryr_remove_network() {
    if [ -n "${KSUBNET:-}" ] && [ -n "${KROUTED:-}" ]; then
        openstack router remove subnet "$KURYR_STACK_ROUTER" "$KSUBNET" >/dev/null 2>&1 || true
    fi
    if [ -n "${KNET:-}" ]; then
        openstack port list --network "$KNET" -f value -c ID 2>/dev/null | xargs -r openstack port delete >/dev/null 2>&1 || true
    fi
    if [ -n "${KSUBNET:-}" ]; then openstack subnet delete "$KSUBNET" >/dev/null 2>&1 || true; fi
    if [ -n "${KNET:-}" ]; then openstack network delete "$KNET" >/dev/null 2>&1 || true; fi
    local g
    # NetworkPolicies' groups and peer-set groups (tagged with the cluster,
    # named sg/... and kuryr/<cluster>/peers/...)
    for g in $(openstack security group list --tags "kuryr-cluster:$KCLUSTER" -f value -c ID -c Name 2>/dev/null \
               | awk -v p="kuryr/$KCLUSTER/peers/" '$2 ~ /^sg[/]/ || index($2, p) == 1 {print $1}'); do
        openstack security group delete "$g" >/dev/null 2>&1 || true
    done
    for g in "kuryr/$KCLUSTER/node-access" "kuryr/$KCLUSTER/nodes" "kuryr/$KCLUSTER/open-ingress" "kuryr/$KCLUSTER/open-egress" ${KPODSG:-}; do
        openstack security group delete "$g" >/dev/null 2>&1 || true
    done
}

# kuryr_remove_policies: after kuryr-controller has stopped, its finalizers
# come off the NetworkPolicies and KuryrNetworkPolicies left (their groups
# go with kuryr_remove_network)
kuryr_remove_policies() {
    local k="kubectl --kubeconfig $KUBECONFIG" kind ns n
    command -v jq >/dev/null || return 0
    for kind in networkpolicies kuryrnetworkpolicies; do
        $k get "$kind" -A -o json 2>/dev/null | jq -r '.items[]
            | select((.metadata.finalizers // []) | index("kuryr.openstack.org/networkpolicy-finalizer"))
            | [.metadata.namespace, .metadata.name] | @tsv' \
            | while IFS=$'\t' read -r ns n; do
                $k -n "$ns" patch "$kind" "$n" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
            done
    done
}
