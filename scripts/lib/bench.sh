# shellcheck shell=bash
# bench_pair NAME BENCH PEER: `cargo bench -p kuryr-controller --bench BENCH`
# run twice on the stack's ovn backend, first with kuryr-rs' controller in
# the bench's process, then with KURYR_BENCH_PEER=PEER (a script starting
# kuryr-kubernetes 10.0.0's controller); each run's figures in
# $KURYR_STACK_HOME/NAME/<run>.txt (log beside), both printed at the end.
# Used by scripts/bench-services and scripts/bench-policy.
bench_pair() {
    local name=$1 bench=$2 peer=$3 stack_home out t0=$SECONDS
    [ "$(id -u)" = 0 ] || { echo "$name: run as root: sudo scripts/$name" >&2; exit 2; }
    stack_home=${KURYR_STACK_HOME:-/var/tmp/kuryr-stack}
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$stack_home/cache/cargo-target}
    [ "$(cat "$stack_home/state/neutron" 2>/dev/null)" = ovn ] \
        || { echo "$name: needs the stack up on the ovn backend (sudo stack/stack up --neutron ovn)" >&2; exit 1; }
    out=$stack_home/$name
    rm -rf "$out"; mkdir -p "$out"
    say() { printf '[bench %5ss] %s\n' "$((SECONDS - t0))" "$*"; }
    say "building the benchmark"
    # the bench and kst-echo (its servers and clients) in the bench profile
    { cargo bench -p kuryr-controller --features stack --bench "$bench" --no-run \
        && cargo build --profile bench -p kuryr-stack-tests --bins; } 2> "$out/build.log" \
        || { tail -20 "$out/build.log"; exit 1; }
    local run who
    for run in kuryr-rs kuryr-kubernetes; do
        who=; [ "$run" = kuryr-kubernetes ] && who=$peer
        say "$run: cargo bench --bench $bench (log $out/$run.log)"
        KURYR_BENCH_PEER=$who cargo bench -q -p kuryr-controller --features stack --bench "$bench" \
            2> "$out/$run.log" > "$out/$run.txt" \
            || { tail -30 "$out/$run.log"; exit 1; }
        cat "$out/$run.txt"
    done
    echo
    echo "== sudo scripts/$name ($(date -u +%Y-%m-%d), $(nproc) cores)"
    cat "$out/kuryr-rs.txt" "$out/kuryr-kubernetes.txt"
}
