# shellcheck shell=bash
# e2e: the upstream Kubernetes end-to-end tests of the stack's Kubernetes
# version (e2e.test, network tests only: stack/e2e/e2e_test.go) and the two
# images they run, agnhost and jessie-dnsutils, under the exact names the
# e2e framework of that version uses -- built from Go modules and the host's
# Debian packages, nothing pulled from a registry.
# Not a component: `stack build-e2e` builds (or finds cached) and prints the
# path of e2e.test; `stack import-e2e-images` (e2e_import_images) puts the
# images into the containerd of the running kubelet component.
#
# Cache:
#   $CACHE/e2e/<k8s version>-<hash of stack/e2e/go.mod, go.sum, *.go>/
#       e2e.test, agnhost          built with the stack's Go environment (go_env)
#   $CACHE/e2e/build.log           Go and apt output (building never touches state/)
#   $CACHE/images/agnhost-<hash>.tar, jessie-dnsutils-<hash>.tar
#                                  OCI archives (oci_image, stack/lib/kubelet.sh)

E2E_MOD=$STACK_SRC/e2e
# the names test/utils/image/manifest.go of Kubernetes v1.34.4 gives them;
# e2e_build checks them against the built e2e.test (--list-images)
E2E_AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.56
E2E_DNSUTILS_IMAGE=registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7

# The images' root filesystem: the commands the network, DNS and
# NetworkPolicy tests run in those containers (`sh -c` loops with curl, nc,
# dig, getent, seq, timeout, ...), copied from the host with the shared
# libraries ldd lists, in Debian's merged-/usr layout. Chosen over
# `debootstrap --variant=minbase` because it needs no mirror download, no
# root and no package scripts, takes seconds and gives a small image of just
# what the tests use. The shell is a real one (dash as /bin/sh, and bash):
# with busybox as sh, its own nc applet would run instead of netcat-openbsd.
E2E_PKGS=(dash bash coreutils grep sed mawk findutils procps hostname libc-bin netbase
    curl wget netcat-openbsd bind9-dnsutils bind9-host iproute2 iputils-ping conntrack)
E2E_CMDS=(sh dash bash cat sleep timeout echo printf test true false ls mkdir rm cp mv ln
    touch chmod head tail wc sort uniq cut tr date env id uname seq tee dd stat readlink
    basename dirname mktemp nproc expr od base64 md5sum sha256sum grep sed awk find xargs
    ps kill hostname getent curl wget nc dig nslookup host ip ss ping conntrack)

# the k8s.io/kubernetes version stack/e2e/go.mod requires (one-line or block form)
e2e_k8s_version() {
    awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }
         $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$E2E_MOD/go.mod"
}

# the build of this exact module (go.mod, go.sum, Go sources): a change builds anew
e2e_dir() {
    echo "$CACHE/e2e/$(e2e_k8s_version)-$(cat "$E2E_MOD/go.mod" "$E2E_MOD/go.sum" "$E2E_MOD"/*.go | sha256sum | cut -c1-12)"
}

# e2e_build: build (or find cached) e2e.test, agnhost and the two images;
# print the path of e2e.test on stdout
e2e_build() {
    local v dir blog=$CACHE/e2e/build.log
    v=$(e2e_k8s_version); dir=$(e2e_dir)
    # jq reads e2e.test's --spec-dump (scripts/conformance)
    need_pkgs jq
    [ -n "$v" ] || die "stack/e2e/go.mod has no 'require k8s.io/kubernetes' line"
    [ "$v" = "$(k8s_version)" ] \
        || die "stack/e2e/go.mod requires k8s.io/kubernetes $v but the stack runs $(k8s_version) (stack/k8s/go.mod): make them the same"
    mkdir -p "$CACHE/e2e"
    if [ -x "$dir/e2e.test" ] && [ -x "$dir/agnhost" ]; then
        log "e2e $v: e2e.test and agnhost cached in $dir"
    else
        go_env "the Kubernetes $v e2e tests"
        local t0=$SECONDS tmp=$dir.tmp.$$
        log "e2e $v: downloading Go modules (log: $blog)"
        ( cd "$E2E_MOD" && go mod download ) >>"$blog" 2>&1 \
            || { tail -n 20 "$blog" >&2; die "go mod download for the Kubernetes $v e2e tests failed (log: $blog)"; }
        log "e2e $v: modules ready in $((SECONDS - t0))s; building e2e.test and agnhost (about 5 minutes the first time)"
        mkdir -p "$tmp"
        ( cd "$E2E_MOD" \
            && go test -c -vet=off -trimpath -ldflags "$(k8s_ldflags "$v")" -o "$tmp/e2e.test" . \
            && go build -trimpath -ldflags "-s -w" -o "$tmp/agnhost" k8s.io/kubernetes/test/images/agnhost ) \
            >>"$blog" 2>&1 &
        if ! wait_build "e2e $v" $! "$t0"; then
            rm -rf "$tmp"; tail -n 30 "$blog" >&2
            die "building the Kubernetes $v e2e tests from Go modules failed (log: $blog)"
        fi
        rm -rf "$dir"; mv "$tmp" "$dir"
        log "e2e $v: e2e.test and agnhost built in $((SECONDS - t0))s: $dir"
    fi
    e2e_check_image_names "$dir/e2e.test"
    e2e_images "$dir/agnhost"
    echo "$dir/e2e.test"
}

# e2e_check_image_names E2E_TEST: the framework in E2E_TEST asks for the
# agnhost and jessie-dnsutils images by the names we build
e2e_check_image_names() {
    local list i
    list=$("$1" --list-images 2>/dev/null) || die "$1 --list-images failed: the e2e.test binary is broken"
    for i in "$E2E_AGNHOST_IMAGE" "$E2E_DNSUTILS_IMAGE"; do
        grep -qxF "$i" <<< "$list" || die "the e2e framework of $(e2e_k8s_version) does not use $i (its images: $(grep -E '/(agnhost|jessie-dnsutils):' <<< "$list" | tr '\n' ' ')): update E2E_*_IMAGE in stack/lib/e2e.sh"
    done
}

# e2e_copy ROOT PATH: copy the file PATH into ROOT at the same path (through
# symlinks: PATH becomes a link to the real file, as on the host), with the
# shared libraries and dynamic loader ldd lists for it
e2e_copy() {
    local r=$1 p=$2 real l libs
    { [ -e "$r$p" ] || [ -L "$r$p" ]; } && return 0
    real=$(readlink -f "$p")
    [ -f "$real" ] || die "$p not found on the host (needed in the e2e images)"
    if [ ! -e "$r$real" ]; then
        mkdir -p "$r$(dirname "$real")"
        cp --preserve=mode "$real" "$r$real"
    fi
    if [ "$real" != "$p" ]; then
        mkdir -p "$r$(dirname "$p")"
        ln -s "$real" "$r$p"
    fi
    # "libx.so.1 => /lib/.../libx.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)";
    # a static binary or a script has none (ldd fails)
    libs=$(ldd "$real" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }') || libs=""
    for l in $libs; do
        { [ -e "$r$l" ] || [ -L "$r$l" ]; } && continue
        mkdir -p "$r$(dirname "$l")"
        cp -L --preserve=mode "$l" "$r$l"
    done
}

# e2e_rootfs ROOT AGNHOST: the images' root filesystem in ROOT: E2E_CMDS from
# the host, agnhost as /agnhost (and /agnhost-2, which the entrypoint tests
# use), porter's TLS files, and the users, groups and directories upstream's
# agnhost image has. No /etc/hosts or /etc/resolv.conf: kubelet mounts them.
e2e_rootfs() {
    local r=$1 agnhost=$2 c p d
    mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/usr/lib" "$r/usr/lib64" "$r/etc" "$r/root" \
        "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/uploads" "$r/home/user-defined-in-image"
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$r/$d"; done
    chmod 1777 "$r/tmp"
    for c in "${E2E_CMDS[@]}"; do
        p=$(PATH=/usr/sbin:/usr/bin; type -P "$c") \
            || die "$c not found on the host: the e2e images need it (Debian packages: ${E2E_PKGS[*]})"
        e2e_copy "$r" "$p"
    done
    # NSS modules getent and the resolver may load (not in ldd's list)
    for p in /usr/lib/*-linux-gnu/libnss_files.so.2 /usr/lib/*-linux-gnu/libnss_dns.so.2; do
        [ -f "$p" ] && e2e_copy "$r" "$p"
    done
    [ -d /etc/iproute2 ] && cp -r /etc/iproute2 "$r/etc/"
    cp /etc/services /etc/protocols "$r/etc/"
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' \
        > "$r/etc/nsswitch.conf"
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' > "$r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'user-defined-in-image:x:1000:' \
        'group-defined-in-image:x:50000:user-defined-in-image' 'nogroup:x:65534:' > "$r/etc/group"
    cp "$agnhost" "$r/agnhost"; chmod 0755 "$r/agnhost"
    ln -s agnhost "$r/agnhost-2"
    local porter
    porter=$GOMODCACHE/k8s.io/kubernetes@$(e2e_k8s_version)/test/images/agnhost/porter
    for p in localhost.crt localhost.key; do
        [ -f "$porter/$p" ] || die "$porter/$p not found: the k8s.io/kubernetes module is not in the Go module cache"
        cp "$porter/$p" "$r/$p"; chmod 0644 "$r/$p"
    done
}

# e2e_images AGNHOST: the agnhost and jessie-dnsutils image archives (one
# root filesystem, two names), cached in $CACHE/images by a hash of agnhost,
# the Debian packages' versions and the code that makes them; sets
# E2E_AGNHOST_TAR and E2E_DNSUTILS_TAR
e2e_images() {
    local agnhost=$1 dir=$CACHE/images key r
    # need_pkgs logs to $LOGS: the cache's build log here, not state/
    local LOGS=$CACHE/e2e
    need_pkgs "${E2E_PKGS[@]}"
    go_env "the e2e images"
    # upstream's agnhost image carries CoreDNS as /coredns: the DNS specs run
    # their own DNS server pods from it (`/coredns -conf ...`); ours gets the
    # stack's own CoreDNS build
    # shellcheck source=coredns.sh
    declare -F coredns_build >/dev/null || . "$HERE/lib/coredns.sh"
    coredns_build >/dev/null
    local coredns
    coredns="$(coredns_dir)/coredns"
    key=$( {
        sha "$agnhost"
        sha "$coredns"
        sha "$GOMODCACHE/k8s.io/kubernetes@$(e2e_k8s_version)/test/images/agnhost/porter/localhost.crt"
        dpkg-query -W "${E2E_PKGS[@]}"
        printf '%s\n' "$E2E_AGNHOST_IMAGE" "$E2E_DNSUTILS_IMAGE" "${E2E_CMDS[@]}"
        declare -f e2e_rootfs e2e_copy oci_image
    } | sha256sum | cut -c1-12)
    E2E_AGNHOST_TAR=$dir/agnhost-$key.tar
    E2E_DNSUTILS_TAR=$dir/jessie-dnsutils-$key.tar
    if [ -f "$E2E_AGNHOST_TAR" ] && [ -f "$E2E_DNSUTILS_TAR" ]; then
        log "e2e images cached: $E2E_AGNHOST_TAR, $E2E_DNSUTILS_TAR"
        return 0
    fi
    mkdir -p "$dir"
    r=$(mktemp -d "$dir/rootfs.XXXXXX")
    # mktemp makes it 0700: it becomes the image's /, which every user must traverse
    chmod 0755 "$r"
    e2e_rootfs "$r" "$agnhost"
    install -m 0755 "$coredns" "$r/coredns"
    local path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    # as upstream: agnhost's entrypoint is /agnhost with `pause` as default
    # argument; jessie-dnsutils (a Debian image upstream) runs a shell
    oci_image "$E2E_AGNHOST_IMAGE" "$r" '["/agnhost"]' "$E2E_AGNHOST_TAR" '["pause"]' "$path"
    oci_image "$E2E_DNSUTILS_IMAGE" "$r" 'null' "$E2E_DNSUTILS_TAR" '["/bin/bash"]' "$path"
    rm -rf "$r"
    log "e2e images built: $E2E_AGNHOST_IMAGE ($E2E_AGNHOST_TAR, $(du -h "$E2E_AGNHOST_TAR" | cut -f1)), $E2E_DNSUTILS_IMAGE"
}

# e2e_import_images: build (or find cached) the e2e images and import them
# into the running kubelet component's containerd (namespace k8s.io) under
# the names the e2e framework uses; pods with those images (pull policy
# IfNotPresent, the default for a tag) then never go to the registry.
# Idempotent: an image already there with the same manifest is left alone.
e2e_import_images() {
    [ "$(id -u)" = 0 ] || die "importing the e2e images needs root (containerd's socket)"
    pid_alive containerd || die "containerd of the kubelet component is not running: stack up --kubelet first"
    e2e_build >/dev/null
    local pair name tar want have list
    for pair in "$E2E_AGNHOST_IMAGE=$E2E_AGNHOST_TAR" "$E2E_DNSUTILS_IMAGE=$E2E_DNSUTILS_TAR"; do
        name=${pair%%=*}; tar=${pair#*=}
        want=$(oci_manifest_digest "$tar")
        list=$(ctr_ images ls 2>/dev/null) || die "ctr images ls failed on $CTRD_SOCK"
        have=$(awk -v n="$name" '$1 == n { print $3 }' <<< "$list")
        if [ -n "$want" ] && [ "$have" = "$want" ]; then
            log "e2e image $name already in containerd"
            continue
        fi
        ctr_ images import --no-unpack "$tar" >>"$LOGS/ctr-import.log" 2>&1 \
            || die "importing $tar into containerd failed (log: $LOGS/ctr-import.log)"
        list=$(ctr_ images ls 2>/dev/null) || die "ctr images ls failed on $CTRD_SOCK"
        awk -v n="$name" '$1 == n { f = 1 } END { exit !f }' <<< "$list" \
            || die "e2e image $name missing in containerd after importing $tar"
        log "e2e image $name imported"
    done
}
