# shellcheck shell=bash
# cnitool: the reference CNI runtime of containernetworking/cni (it drives a
# plugin through libcni, as containerd and CRI-O do), for the conformance
# checks of kuryr-cni. Built from the Go module pinned in stack/cnitool/go.mod
# with the stack's Go environment (go_env) and cached in $CACHE/cnitool.
# Not a component: nothing runs, `stack build-cnitool` only builds it.

CNITOOL_MOD=$STACK_SRC/cnitool

cnitool_version() { awk '$1 == "require" && $2 == "github.com/containernetworking/cni" { print $3 }' "$CNITOOL_MOD/go.mod"; }

# the binary of this exact go.mod/go.sum: a change of either builds anew
cnitool_path() {
    echo "$CACHE/cnitool/$(cnitool_version)-$(cat "$CNITOOL_MOD/go.mod" "$CNITOOL_MOD/go.sum" | sha256sum | cut -c1-12)/cnitool"
}

# cnitool_build: build (or find cached) cnitool and print its path on stdout.
# The build log goes to the cache, so that building never touches state/.
cnitool_build() {
    local path v dir
    path=$(cnitool_path); v=$(cnitool_version); dir=$(dirname "$path")
    if [ -x "$path" ]; then log "cnitool $v cached in $dir"; echo "$path"; return 0; fi
    go_env "cnitool $v"
    local blog=$CACHE/cnitool/build.log tmp=$dir.tmp.$$ t0=$SECONDS
    mkdir -p "$CACHE/cnitool" "$tmp"
    log "cnitool $v: downloading Go modules and building (log: $blog)"
    if ! ( cd "$CNITOOL_MOD" && go mod download \
            && go build -trimpath -ldflags "-s -w" -o "$tmp/cnitool" github.com/containernetworking/cni/cnitool ) \
            >>"$blog" 2>&1; then
        rm -rf "$tmp"; tail -n 20 "$blog" >&2
        die "building cnitool $v from Go modules failed (log: $blog)"
    fi
    rm -rf "$dir"; mv "$tmp" "$dir"
    log "cnitool $v built in $((SECONDS - t0))s: $path"
    echo "$path"
}
