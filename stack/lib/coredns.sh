# shellcheck shell=bash
# coredns: CoreDNS for the cluster DNS of the stack, built from the Go module
# stack/coredns (the CoreDNS release its go.mod pins, with only the plugins
# a Kubernetes cluster DNS needs: main.go) and packed as the OCI image
# localhost/kuryr-stack/coredns:<version> -- nothing pulled from a registry.
# stack/coredns/coredns.yaml runs it in kube-system behind the Service
# kube-dns ($COREDNS_IP).
# Not a component: `stack build-coredns` builds (or finds cached) the binary
# and the image and prints the image's name; `stack import-coredns-image`
# (coredns_import_image) puts the image into the containerd of the running
# kubelet component.
#
# Cache:
#   $CACHE/coredns/<coredns version>-<hash of stack/coredns/go.mod, go.sum, *.go>/
#       coredns                    built with the stack's Go environment (go_env)
#   $CACHE/coredns/build.log       Go output (building never touches state/)
#   $CACHE/images/coredns-<hash>.tar  OCI archive (oci_image, stack/lib/kubelet.sh)

COREDNS_MOD=$STACK_SRC/coredns
# the Service kube-dns: kubelet's clusterDNS (CLUSTER_DNS_IP, stack/lib/kubelet.sh)
COREDNS_IP=${CLUSTER_DNS_IP:-10.96.0.10}

# the github.com/coredns/coredns version stack/coredns/go.mod requires (one-line or block form)
coredns_version() {
    awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3; exit }
         $1 == "github.com/coredns/coredns" && $2 ~ /^v/ { print $2; exit }' "$COREDNS_MOD/go.mod"
}

coredns_image_name() { echo "localhost/kuryr-stack/coredns:$(coredns_version)"; }

# the build of this exact module (go.mod, go.sum, Go sources): a change builds anew
coredns_dir() {
    echo "$CACHE/coredns/$(coredns_version)-$(cat "$COREDNS_MOD/go.mod" "$COREDNS_MOD/go.sum" "$COREDNS_MOD"/*.go | sha256sum | cut -c1-12)"
}

# coredns_plugins: the directives main.go selects, one a line, in its order
coredns_plugins() {
    awk '/^var directives = / { on = 1; next } on && /^}/ { exit } on { gsub(/[",\t ]/, ""); if ($0 != "") print }' \
        "$COREDNS_MOD/main.go"
}

# coredns_check BINARY: BINARY runs and has every plugin main.go selects
# (`coredns -plugins`: the registered plugins, one a line); else print what
# is wrong and fail. Registered besides them are the plugin packages the
# selected ones import for their types (forward: dnstap, debug; kubernetes:
# transfer; several: metadata): without a directive, a Corefile cannot use them.
coredns_check() {
    local bin=$1 have want missing extra
    "$bin" -version >/dev/null 2>&1 || { echo "$bin -version failed: the CoreDNS binary is broken"; return 1; }
    have=$("$bin" -plugins 2>/dev/null | awk NF | sort) || { echo "$bin -plugins failed: the CoreDNS binary is broken"; return 1; }
    want=$(coredns_plugins | sort)
    [ -n "$want" ] || { echo "no directives found in $COREDNS_MOD/main.go (var directives = []string{...})"; return 1; }
    missing=$(comm -13 <(echo "$have") <(echo "$want"))
    [ -z "$missing" ] || {
        echo "$bin lacks the plugins $(tr '\n' ' ' <<< "$missing")that stack/coredns/main.go selects: import their packages there"
        return 1
    }
    extra=$(comm -23 <(echo "$have") <(echo "$want") | tr '\n' ' ')
    log "CoreDNS plugins: $(coredns_plugins | tr '\n' ' ' | sed 's/ $//')${extra:+ (registered by their imports, without a directive: ${extra% })}"
}

# coredns_build: build (or find cached) the CoreDNS binary and its image;
# print the image's name on stdout
coredns_build() {
    local v dir blog=$CACHE/coredns/build.log
    v=$(coredns_version); dir=$(coredns_dir)
    [ -n "$v" ] || die "stack/coredns/go.mod has no 'require github.com/coredns/coredns' line"
    mkdir -p "$CACHE/coredns"
    if [ -x "$dir/coredns" ]; then
        log "CoreDNS $v: binary cached in $dir"
    else
        go_env "CoreDNS $v"
        # go_env accepts Go 1.24, but without toolchain downloads the go line of
        # coredns's own go.mod (copied into ours) is the minimum
        local need gov
        need=$(awk '$1 == "go" { print $2; exit }' "$COREDNS_MOD/go.mod"); gov=$(go env GOVERSION); gov=${gov#go}; gov=${gov%% *}
        [ "$(printf '%s\n' "$need" "$gov" | sort -V | head -n 1)" = "$need" ] \
            || die "CoreDNS $v needs Go $need or newer (go line of stack/coredns/go.mod), this is Go $gov: install a newer Go or pin an older github.com/coredns/coredns"
        local t0=$SECONDS tmp=$dir.tmp.$$
        log "CoreDNS $v: downloading Go modules (log: $blog)"
        ( cd "$COREDNS_MOD" && go mod download ) >>"$blog" 2>&1 \
            || { tail -n 20 "$blog" >&2; die "go mod download for CoreDNS $v failed (log: $blog)"; }
        log "CoreDNS $v: modules ready in $((SECONDS - t0))s; building coredns (a few minutes the first time)"
        mkdir -p "$tmp"
        ( cd "$COREDNS_MOD" \
            && go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$v" \
                -o "$tmp/coredns" . ) >>"$blog" 2>&1 &
        if ! wait_build "CoreDNS $v" $! "$t0"; then
            rm -rf "$tmp"; tail -n 30 "$blog" >&2
            die "building CoreDNS $v from Go modules failed (log: $blog)"
        fi
        local err
        err=$(coredns_check "$tmp/coredns") || { rm -rf "$tmp"; die "$err"; }
        rm -rf "$dir"; mv "$tmp" "$dir"
        log "CoreDNS $v built in $((SECONDS - t0))s: $dir/coredns ($(du -h "$dir/coredns" | cut -f1))"
    fi
    coredns_image "$dir/coredns"
    coredns_image_name
}

# coredns_rootfs ROOT BINARY: the image's root filesystem in ROOT: the static
# BINARY as /coredns, users and groups (it runs as root, with only
# NET_BIND_SERVICE: coredns.yaml), /tmp. No /etc/hosts or /etc/resolv.conf:
# kubelet mounts them (dnsPolicy Default: the node's resolv.conf, which
# `forward . /etc/resolv.conf` uses).
coredns_rootfs() {
    local r=$1 bin=$2
    mkdir -p "$r/etc" "$r/tmp"
    # ROOT is mktemp's (0700): / of the image must be readable by every user
    chmod 0755 "$r"; chmod 1777 "$r/tmp"
    printf '%s\n' 'root:x:0:0:root:/:/coredns' 'nonroot:x:65532:65532:nonroot:/:/coredns' \
        'nobody:x:65534:65534:nobody:/nonexistent:/coredns' > "$r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' 'nogroup:x:65534:' > "$r/etc/group"
    cp "$bin" "$r/coredns"; chmod 0755 "$r/coredns"
}

# coredns_image BINARY: the image archive of BINARY, cached in $CACHE/images
# by a hash of the binary, the image name and the code that makes it; sets
# COREDNS_TAR
coredns_image() {
    local bin=$1 dir=$CACHE/images key r name
    name=$(coredns_image_name)
    key=$( {
        sha "$bin"
        echo "$name"
        declare -f coredns_rootfs oci_image
    } | sha256sum | cut -c1-12)
    COREDNS_TAR=$dir/coredns-$key.tar
    if [ -f "$COREDNS_TAR" ]; then
        log "CoreDNS image cached: $COREDNS_TAR"
        return 0
    fi
    mkdir -p "$dir"
    r=$(mktemp -d "$dir/rootfs.XXXXXX")
    coredns_rootfs "$r" "$bin"
    # as upstream's image: the binary is the entrypoint, coredns.yaml gives
    # `-conf /etc/coredns/Corefile` as arguments
    oci_image "$name" "$r" '["/coredns"]' "$COREDNS_TAR"
    rm -rf "$r"
    log "CoreDNS image built: $name ($COREDNS_TAR, $(du -h "$COREDNS_TAR" | cut -f1))"
}

# coredns_manifest: stack/coredns/coredns.yaml with the image and the
# Service address filled in, on stdout (for `kubectl apply -f -`)
coredns_manifest() {
    sed -e "s|@IMAGE@|$(coredns_image_name)|g" -e "s|@DNS_IP@|$COREDNS_IP|g" "$COREDNS_MOD/coredns.yaml"
}

# coredns_import_image: build (or find cached) the CoreDNS image and import
# it into the running kubelet component's containerd (namespace k8s.io);
# coredns.yaml's pod (imagePullPolicy Never) then finds it there.
# Idempotent: the image already there with the same manifest is left alone.
coredns_import_image() {
    [ "$(id -u)" = 0 ] || die "importing the CoreDNS image needs root (containerd's socket)"
    pid_alive containerd || die "containerd of the kubelet component is not running: stack up --kubelet first"
    local name want have list
    coredns_build >/dev/null
    name=$(coredns_image_name)
    want=$(oci_manifest_digest "$COREDNS_TAR")
    list=$(ctr_ images ls 2>/dev/null) || die "ctr images ls failed on $CTRD_SOCK"
    have=$(awk -v n="$name" '$1 == n { print $3 }' <<< "$list")
    if [ -n "$want" ] && [ "$have" = "$want" ]; then
        log "CoreDNS image $name already in containerd"
        return 0
    fi
    ctr_ images import --no-unpack "$COREDNS_TAR" >>"$LOGS/ctr-import.log" 2>&1 \
        || die "importing $COREDNS_TAR into containerd failed (log: $LOGS/ctr-import.log)"
    list=$(ctr_ images ls 2>/dev/null) || die "ctr images ls failed on $CTRD_SOCK"
    awk -v n="$name" '$1 == n { f = 1 } END { exit !f }' <<< "$list" \
        || die "CoreDNS image $name missing in containerd after importing $COREDNS_TAR"
    log "CoreDNS image $name imported"
}
