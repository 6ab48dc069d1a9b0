# shellcheck shell=bash
# Component "k8s": Kubernetes control plane on loopback -- etcd (Debian's
# etcd-server), kube-apiserver, kube-controller-manager, kube-scheduler -- with
# a self-made PKI. The Kubernetes binaries are built from Go modules of
# k8s.io/kubernetes pinned in stack/k8s/go.mod and cached in $CACHE/k8s.

K8S_MOD=$STACK_SRC/k8s
K8S=$S/k8s
PKI=$S/k8s/pki
APISERVER=https://$H:6443
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

k8s_version() { awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$K8S_MOD/go.mod"; }

# the binaries of this exact go.mod/go.sum: a change of either builds anew
k8s_bin_dir() {
    echo "$CACHE/k8s/$(k8s_version)-$(cat "$K8S_MOD/go.mod" "$K8S_MOD/go.sum" | sha256sum | cut -c1-12)/bin"
}

# k8s_ldflags V: linker flags of a Kubernetes binary of version V (stripped,
# version stamped, reproducible build date)
k8s_ldflags() {
    local v=$1 p minor ld="-s -w"
    minor=${v#v1.}; minor=${minor%%.*}
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
        ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$ld"
}

k8s_build() {
    local bin v c have=1
    bin=$(k8s_bin_dir); v=$(k8s_version)
    for c in "${K8S_CMDS[@]}"; do [ -x "$bin/$c" ] || have=0; done
    if [ $have = 1 ]; then log "Kubernetes $v binaries cached in $bin"; return 0; fi
    go_env "Kubernetes $v"
    local t0=$SECONDS
    log "Kubernetes $v: downloading Go modules (k8s.io/kubernetes and its dependencies)"
    ( cd "$K8S_MOD" && go mod download ) >>"$LOGS/k8s-build.log" 2>&1 \
        || { tail -n 20 "$LOGS/k8s-build.log" >&2; die "go mod download for Kubernetes $v failed (log: $LOGS/k8s-build.log)"; }
    log "Kubernetes $v: modules ready in $((SECONDS - t0))s; building ${K8S_CMDS[*]} (several minutes the first time)"
    local ld; ld=$(k8s_ldflags "$v")
    local tmp=$bin.tmp.$$ pkgs=()
    for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    mkdir -p "$tmp"
    ( cd "$K8S_MOD" && go build -trimpath -ldflags "$ld" -o "$tmp/" "${pkgs[@]}" ) >>"$LOGS/k8s-build.log" 2>&1 &
    if ! wait_build "Kubernetes $v" $! "$t0"; then
        rm -rf "$tmp"; tail -n 30 "$LOGS/k8s-build.log" >&2
        die "building Kubernetes $v from Go modules failed (log: $LOGS/k8s-build.log)"
    fi
    rm -rf "$bin"; mkdir -p "$(dirname "$bin")"; mv "$tmp" "$bin"
    log "Kubernetes $v built in $((SECONDS - t0))s: $bin"
}

# mkcert NAME CN ORG SAN [client|server|both]: key + cert signed by the stack CA
mkcert() {
    local name=$1 cn=$2 org=$3 san=$4 usage=${5:-client}
    [ -f "$PKI/$name.crt" ] && return 0
    local eku=clientAuth
    case $usage in server) eku=serverAuth ;; both) eku=serverAuth,clientAuth ;; esac
    local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        [ -n "$san" ] && echo "subjectAltName=$san"
    } > "$PKI/$name.ext"
    openssl req -new -newkey rsa:2048 -nodes -subj "$subj" -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# mkkubeconfig FILE CERTNAME: kubeconfig for the apiserver with a client cert
mkkubeconfig() {
    cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kuryr-stack
  cluster:
    server: $APISERVER
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: kuryr-stack
  context: {cluster: kuryr-stack, user: $2}
current-context: kuryr-stack
KC
}

k8s_pki() {
    mkdir -p "$PKI"
    if [ ! -f "$PKI/ca.crt" ]; then
        log "k8s: creating the cluster PKI (CA, serving and client certificates)"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=kuryr-stack-ca \
            -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
    fi
    mkcert apiserver kube-apiserver "" \
        "IP:127.0.0.1,IP:$PUBLIC_HOST_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" server
    mkcert admin kubernetes-admin system:masters ""
    mkcert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
    mkcert kube-controller-manager system:kube-controller-manager "" ""
    mkcert kube-scheduler system:kube-scheduler "" ""
    [ -f "$PKI/sa.key" ] || {
        openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
        openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    }
    mkkubeconfig "$S/kubeconfig" admin
    mkkubeconfig "$K8S/controller-manager.kubeconfig" kube-controller-manager
    mkkubeconfig "$K8S/scheduler.kubeconfig" kube-scheduler
}

apiserver_ready() {
    curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$APISERVER/readyz"
}

k8s_up() {
    need_pkgs etcd-server openssl curl
    k8s_build
    local bin; bin=$(k8s_bin_dir)
    check_ports etcd:2379 etcd:2380 etcd:2381 kube-apiserver:6443 kube-controller-manager:10257 kube-scheduler:10259
    mkdir -p "$K8S"
    k8s_pki
    start etcd etcd --name kuryr-stack --data-dir "$K8S/etcd" \
        --listen-client-urls "http://$H:2379" --advertise-client-urls "http://$H:2379" \
        --listen-peer-urls "http://$H:2380" --initial-advertise-peer-urls "http://$H:2380" \
        --initial-cluster "kuryr-stack=http://$H:2380" --listen-metrics-urls "http://$H:2381"
    wait_for "etcd $H:2379" 30 curl -sf --max-time 2 "http://$H:2379/health"
    # Served on every address of the host: on loopback for the stack's own
    # clients, and on the host's public address (br-ex, component openstack),
    # which it advertises: the `kubernetes` Service's endpoint, reachable
    # from pods through the stack's router. kubelet is reached by host name.
    start kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers="http://$H:2379" \
        --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$PUBLIC_HOST_IP" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$PKI/ca.crt" \
        --kubelet-preferred-address-types=Hostname,InternalIP \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-cluster-ip-range="$SERVICE_RANGE" \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --endpoint-reconciler-type=lease --profiling=false
    wait_for "kube-apiserver $APISERVER" 90 apiserver_ready
    # nodeipam needs a cluster CIDR; pods get addresses from the CNI plugin
    start kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$K8S/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$K8S/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$K8S/controller-manager.kubeconfig" \
        --bind-address=$H --secure-port=10257 \
        --controllers='*,-nodeipam' --use-service-account-credentials \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
        --service-cluster-ip-range="$SERVICE_RANGE" --leader-elect=false --profiling=false
    start kube-scheduler "$bin/kube-scheduler" \
        --kubeconfig="$K8S/scheduler.kubeconfig" \
        --authentication-kubeconfig="$K8S/scheduler.kubeconfig" \
        --authorization-kubeconfig="$K8S/scheduler.kubeconfig" \
        --bind-address=$H --secure-port=10259 --leader-elect=false --profiling=false
    wait_for "kube-controller-manager" 60 curl -sk --max-time 2 -o /dev/null "https://$H:10257/healthz"
    wait_for "kube-scheduler" 60 curl -sk --max-time 2 -o /dev/null "https://$H:10259/healthz"
    # the default service account exists once the controllers run
    wait_for "service accounts" 60 "$bin/kubectl" --kubeconfig "$S/kubeconfig" -n default get serviceaccount default
    write_env k8s <<ENV
export KUBECONFIG=$S/kubeconfig
export KURYR_STACK_K8S_BIN=$bin KURYR_STACK_K8S_VERSION=$(k8s_version)
export KURYR_STACK_APISERVER=$APISERVER KURYR_STACK_K8S_CA=$PKI/ca.crt
export KURYR_STACK_APISERVER_PUBLIC=https://$PUBLIC_HOST_IP:6443
ENV
}

k8s_down() {
    # kube-scheduler has been seen to ignore SIGTERM: stop() escalates to SIGKILL
    stop 5 kube-scheduler kube-controller-manager
    stop 10 kube-apiserver
    stop 10 etcd
}

k8s_status() {
    local rc=0 n
    for n in etcd kube-apiserver kube-controller-manager kube-scheduler; do pid_alive "$n" || { echo "  k8s: $n NOT running"; rc=1; }; done
    echo "  Kubernetes: $APISERVER and https://$PUBLIC_HOST_IP:6443 ($(k8s_version)), etcd http://$H:2379, kubeconfig $S/kubeconfig"
    return $rc
}
