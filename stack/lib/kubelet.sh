# shellcheck shell=bash
# Component "kubelet": one Kubernetes node named $STACK_NODE -- containerd
# (Debian) + runc + kubelet -- with CNI dirs the caller chooses and images
# built locally (nothing can be pulled here): our own static `pause`, and a
# busybox test image from Debian's busybox-static.

KL=$S/kubelet
CTRD=$S/containerd
CTRD_SOCK=$CTRD/containerd.sock
PAUSE_IMAGE=localhost/kuryr-stack/pause:1.0
TEST_IMAGE=localhost/kuryr-test/busybox:latest
CNI_BIN=${KURYR_STACK_CNI_BIN_DIR:-$S/cni/bin}
CNI_CONF=${KURYR_STACK_CNI_CONF_DIR:-$S/cni/net.d}
POD_CIDR=10.244.0.0/24
CNI_BRIDGE=kstack0
# kube-dns's ClusterIP (in the service range of stack/lib/public.sh)
CLUSTER_DNS_IP=10.96.0.10

# sha FILE: hex sha256 of FILE
sha() { sha256sum "$1" | cut -d' ' -f1; }

# oci_image NAME ROOTFS ENTRYPOINT_JSON OUT [CMD_JSON [PATH]]: pack directory
# ROOTFS as a one-layer OCI image archive named NAME (for `ctr images
# import`); CMD_JSON, if given, is the image's Cmd, PATH its PATH (/bin)
oci_image() {
    local name=$1 rootfs=$2 entry=$3 out=$4 cmd=${5:-} path=${6:-/bin} extra=""
    [ -n "$cmd" ] && extra=",\"Cmd\":$cmd"
    local d; d=$(mktemp -d)
    mkdir -p "$d/blobs/sha256"
    # reproducible, uncompressed layer: its digest is also its diff_id
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$d/layer.tar" .
    local layer lsize; layer=$(sha "$d/layer.tar"); lsize=$(stat -c %s "$d/layer.tar")
    mv "$d/layer.tar" "$d/blobs/sha256/$layer"
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s%s,"Env":["PATH=%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$entry" "$extra" "$path" "$layer" > "$d/config.json"
    local cfg csize; cfg=$(sha "$d/config.json"); csize=$(stat -c %s "$d/config.json")
    mv "$d/config.json" "$d/blobs/sha256/$cfg"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$cfg" "$csize" "$layer" "$lsize" > "$d/manifest.json"
    local man msize; man=$(sha "$d/manifest.json"); msize=$(stat -c %s "$d/manifest.json")
    mv "$d/manifest.json" "$d/blobs/sha256/$man"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$man" "$msize" "$name" "${name##*:}" > "$d/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$d/oci-layout"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$d" -cf "$out.tmp" oci-layout index.json blobs
    mv "$out.tmp" "$out"
    rm -rf "$d"
}

# oci_manifest_digest TAR: the digest of the (one) manifest in the OCI archive TAR
oci_manifest_digest() {
    tar -xOf "$1" index.json | sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p'
}

# build_images: the pause and busybox image archives, cached in $CACHE/images
# (rebuilt when pause.c changes)
build_images() {
    local dir=$CACHE/images tag r
    mkdir -p "$dir"
    tag=$(sha "$STACK_SRC/images/pause.c" | cut -c1-12)
    if [ ! -f "$dir/pause-$tag.tar" ]; then
        need_cmd gcc "a C compiler is needed to build the pause image (Debian: gcc, libc6-dev)"
        r=$(mktemp -d)
        gcc -static -Os -o "$r/pause" "$STACK_SRC/images/pause.c" || die "compiling stack/images/pause.c failed"
        oci_image "$PAUSE_IMAGE" "$r" '["/pause"]' "$dir/pause-$tag.tar"
        rm -rf "$r"
        log "kubelet: built the pause image"
    fi
    PAUSE_TAR=$dir/pause-$tag.tar
    tag=$(sha /bin/busybox | cut -c1-12)
    if [ ! -f "$dir/busybox-$tag.tar" ]; then
        r=$(mktemp -d)
        mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/proc" "$r/sys" "$r/dev"
        cp /bin/busybox "$r/bin/busybox"
        local a
        for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
        printf 'root:x:0:0:root:/:/bin/sh\n' > "$r/etc/passwd"
        printf 'root:x:0:\n' > "$r/etc/group"
        oci_image "$TEST_IMAGE" "$r" '["/bin/sh"]' "$dir/busybox-$tag.tar"
        rm -rf "$r"
        log "kubelet: built the busybox test image"
    fi
    BUSYBOX_TAR=$dir/busybox-$tag.tar
}

ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

kubelet_config() {
    mkdir -p "$CTRD" "$KL" "$CNI_BIN" "$CNI_CONF" "$S/cni/ipam"
    cat > "$CTRD/config.toml" <<TOML
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # without it every sandbox fails in runc with "can't get final child's PID
  # from pipe: EOF": this sandbox lacks CAP_SYS_RESOURCE to lower oom_score_adj
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$CNI_CONF"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
TOML
    # default network for pods: the reference bridge plugin (a test that wants
    # another plugin points KURYR_STACK_CNI_CONF_DIR/BIN_DIR elsewhere)
    if [ -z "${KURYR_STACK_CNI_BIN_DIR:-}" ]; then
        local p
        for p in /usr/lib/cni/*; do ln -sf "$p" "$CNI_BIN/"; done
    fi
    if [ -z "${KURYR_STACK_CNI_CONF_DIR:-}" ]; then
        cat > "$CNI_CONF/10-kuryr-stack-bridge.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "kuryr-stack-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$S/cni/ipam"}}
  ]
}
JSON
        record link "$CNI_BRIDGE"
    fi
    mkcert kubelet-client "system:node:$STACK_NODE" system:nodes ""
    mkcert kubelet-server "$STACK_NODE" "" "DNS:$STACK_NODE,DNS:localhost,IP:127.0.0.1" server
    mkkubeconfig "$KL/kubeconfig" kubelet-client
    cat > "$KL/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$CTRD_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
cgroupDriver: cgroupfs
failSwapOn: false
# a test machine's disk is often fuller than kubelet's defaults allow
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
# the cluster DNS Service (kube-dns, 10.96.0.10), served once CoreDNS runs
# behind kuryr-rs (scripts/conformance deploys it)
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: cluster.local
YAML
}

node_ready() {
    "$(k8s_bin_dir)/kubectl" --kubeconfig "$S/kubeconfig" get node "$STACK_NODE" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

kubelet_up() {
    need_pkgs containerd runc containernetworking-plugins busybox-static iptables gcc libc6-dev
    pid_alive kube-apiserver || die "kubelet needs the k8s component: stack up --kubelet starts both"
    check_ports kubelet:10250 kubelet:10248
    build_images
    kubelet_config
    start containerd containerd --config "$CTRD/config.toml"
    wait_for "containerd $CTRD_SOCK" 30 ctr_ version
    local img
    for img in "$PAUSE_TAR" "$BUSYBOX_TAR"; do
        ctr_ images import --no-unpack "$img" >>"$LOGS/ctr-import.log" 2>&1 \
            || die "importing $img into containerd failed (log: $LOGS/ctr-import.log)"
    done
    grep -qx "$PAUSE_IMAGE" <<< "$(ctr_ images ls -q)" || die "pause image $PAUSE_IMAGE missing after import"
    # no --node-ip: kubelet refuses a loopback one; the apiserver reaches it by
    # host name (--kubelet-preferred-address-types=Hostname,...)
    start kubelet "$(k8s_bin_dir)/kubelet" --config="$KL/config.yaml" --kubeconfig="$KL/kubeconfig" \
        --hostname-override="$STACK_NODE" --root-dir="$KL/root" --cert-dir="$KL/pki"
    wait_for "node $STACK_NODE Ready" 120 node_ready
    write_env kubelet <<ENV
export KURYR_STACK_CONTAINERD_SOCK=$CTRD_SOCK
export KURYR_STACK_CNI_BIN_DIR=$CNI_BIN KURYR_STACK_CNI_CONF_DIR=$CNI_CONF KURYR_STACK_POD_CIDR=$POD_CIDR
export KURYR_STACK_TEST_IMAGE=$TEST_IMAGE KURYR_STACK_PAUSE_IMAGE=$PAUSE_IMAGE
export KURYR_STACK_CLUSTER_DNS=$CLUSTER_DNS_IP
ENV
}

# descendants PID: PID's children, grandchildren, ... (deepest last)
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}

kubelet_down() {
    local kubectl
    kubectl=$(k8s_bin_dir)/kubectl
    # pods first, while kubelet runs: it tears down their sandboxes and calls
    # CNI DEL, so their network namespaces and veths go the ordinary way
    if pid_alive kubelet && pid_alive kube-apiserver; then
        timeout 60 "$kubectl" --kubeconfig "$S/kubeconfig" delete pods --all --all-namespaces \
            --grace-period=1 --wait=true >/dev/null 2>&1 || log "kubelet: some pods did not stop in time"
    fi
    stop 10 kubelet
    # whatever is left of our containers: their shims name our containerd socket
    local shims p
    shims=$(pgrep -f "containerd-shim.*-address $CTRD_SOCK" || true)
    for p in $shims; do
        kill -KILL $(descendants "$p") "$p" 2>/dev/null || true
    done
    stop 10 containerd
    local m
    while read -r m; do umount -l "$m" 2>/dev/null || true; done \
        < <(awk -v a="$KL/" -v b="$CTRD/" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/self/mounts | sort -r)
    # sandbox network namespaces containerd made and nobody removed
    local base=$STACK_HOME/baseline/netns n
    for n in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }'); do
        grep -qx "$n" "$base" 2>/dev/null || ip netns del "$n" 2>/dev/null || true
    done
    if [ -e "/sys/class/net/$CNI_BRIDGE" ] && [ -z "${KURYR_STACK_CNI_CONF_DIR:-}" ]; then
        ip link del "$CNI_BRIDGE" 2>/dev/null || true
    fi
    return 0
}

kubelet_status() {
    local rc=0 n
    for n in containerd kubelet; do pid_alive "$n" || { echo "  kubelet: $n NOT running"; rc=1; }; done
    echo "  node:       $STACK_NODE (kubelet https://127.0.0.1:10250), containerd $CTRD_SOCK"
    echo "              CNI bin $CNI_BIN, conf $CNI_CONF; images $PAUSE_IMAGE $TEST_IMAGE"
    return $rc
}
