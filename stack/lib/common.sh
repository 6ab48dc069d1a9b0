# shellcheck shell=bash
# Common helpers of the kuryr-rs test stack. Sourced by stack/stack and by the
# component files stack/lib/<component>.sh; never run on its own.
#
# Layout (everything the stack owns lives under one directory):
#   $STACK_HOME            KURYR_STACK_HOME, default /var/tmp/kuryr-stack
#   $STACK_HOME/cache      what is built or installed once and reused: Go build
#                          cache and module cache, Kubernetes binaries, images,
#                          the cargo target dir used by CI. `stack down` keeps it.
#   $STACK_HOME/state      everything of one running stack: configs, data,
#                          logs, pid files, the env file, the kubeconfig,
#                          clouds.yaml. `stack down` removes it.
#   $S/run/<name>.pid      one file per process group `start` created
#   $S/log/<name>.log      its stdout and stderr
#   $S/created/<kind>      network namespaces, links and mounts the stack made
#                          (one name per line), removed again by `stack down`
#   $S/env.d/<comp>.env    variables each component exports; `stack` joins
#                          them into $S/env

STACK_HOME=${KURYR_STACK_HOME:-/var/tmp/kuryr-stack}
CACHE=$STACK_HOME/cache
S=$STACK_HOME/state
RUN=$S/run
LOGS=$S/log
CREATED=$S/created
# Node name shared by kubelet (Kubernetes node) and neutron-openvswitch-agent
# (Neutron host): kuryr sets binding:host_id to the pod's node name, so they
# must be the same for ports to bind.
STACK_NODE=${KURYR_STACK_NODE:-localhost}
H=127.0.0.1

_T0=${_STACK_T0:-$(date +%s.%N)}
export _STACK_T0=$_T0
elapsed() { awk -v a="$_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# log MSG: one progress line on stderr, with the time since `stack` started
log() { printf '[stack %6ss] %s\n' "$(elapsed)" "$*" >&2; }
# die MSG: a clear error naming what is missing or broken, exit 1
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

stack_dirs() { mkdir -p "$CACHE" "$RUN" "$LOGS" "$CREATED" "$S/env.d"; }

# need_pkgs PKG...: install the Debian packages that are missing. Package
# scripts are kept from starting system-wide daemons (they would take our
# ports). KURYR_STACK_NO_INSTALL=1 turns a missing package into an error.
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "${KURYR_STACK_NO_INSTALL:-0}" = 1 ] && die "missing Debian packages: ${missing[*]} (KURYR_STACK_NO_INSTALL=1)"
    [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]}: run as root to install them"
    log "installing Debian packages: ${missing[*]} (takes a minute or two the first time)"
    local own_policy=0 t0=$SECONDS
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
    fi
    local stamp=/var/lib/apt/periodic/kuryr-stack-update
    if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 update -qq >>"$LOGS/apt.log" 2>&1 \
            && mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q \
            --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1; then
        [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
        tail -n 20 "$LOGS/apt.log" >&2
        die "apt-get install ${missing[*]} failed (log: $LOGS/apt.log)"
    fi
    [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    log "installed ${#missing[@]} packages in $((SECONDS - t0))s"
}

# need_cmd CMD HINT: fail clearly when a command is missing
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# pid_alive NAME: the process of run/NAME.pid exists and is not a zombie
pid_alive() {
    local line
    [ -f "$RUN/$1.pid" ] || return 1
    read -r line 2>/dev/null < "/proc/$(cat "$RUN/$1.pid")/stat" || return 1
    line=${line##*) }
    [ "${line:0:1}" != Z ]
}

# start NAME CMD...: run CMD in its own session (process group id = pid) in
# the background, output to log/NAME.log, pid to run/NAME.pid. Does nothing
# when NAME already runs, so `stack up` is idempotent.
start() {
    local name=$1; shift
    pid_alive "$name" && return 0
    setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

# stop SECONDS NAME...: SIGTERM to the process groups of NAMEs, SIGKILL to
# what is left after SECONDS. Only touches processes whose pid files `start`
# wrote.
stop() {
    local secs=$1 n p i left; shift
    local pids=()
    for n in "$@"; do
        [ -f "$RUN/$n.pid" ] || continue
        p=$(cat "$RUN/$n.pid")
        [ -n "$p" ] || continue
        pids+=("$p")
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    done
    for ((i = 0; i < secs * 10; i++)); do
        left=0
        for p in "${pids[@]}"; do pgrp_alive "$p" && left=1; done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        left=0
        for p in "${pids[@]}"; do pgrp_alive "$p" && left=1; done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for n in "$@"; do rm -f "$RUN/$n.pid"; done
    return 0
}

# pgrp_alive PGID: some live (non-zombie) process is in process group PGID
pgrp_alive() {
    local want=$1 f line state ppid pgrp _
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null < "$f" || continue
        # fields after "comm)": state ppid pgrp ...
        read -r state ppid pgrp _ <<< "${line##*) }"
        [ "$pgrp" = "$want" ] && [ "$state" != Z ] && return 0
    done 2>/dev/null
    return 1
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds, or die naming WHAT
wait_for() {
    local what=$1 secs=$2; shift 2
    local end=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || die "$what did not come up in ${secs}s (logs in $LOGS)"
        sleep 0.2
    done
    log "$what ready"
}

# wait_build WHAT PID T0: waits for the background build PID (a child of
# this shell), saying every 30 s that WHAT is still building, with the time
# since T0 (a $SECONDS value) and the Go build cache's size; answers the
# build's exit status
wait_build() {
    local what=$1 pid=$2 t0=$3 n=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1; n=$((n + 1))
        [ $((n % 30)) = 0 ] && log "$what: still building ($((SECONDS - t0))s; Go build cache: $(du -sh "$GOCACHE" 2>/dev/null | cut -f1))"
    done
    wait "$pid"
}

# wait_proc NAME WHAT SECONDS CMD...: wait_for, but fail at once, with the
# end of its log, when the process NAME (started by `start`) has exited
wait_proc() {
    local name=$1 what=$2 secs=$3; shift 3
    local end=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        if ! pid_alive "$name"; then
            tail -n 5 "$LOGS/$name.log" >&2 2>/dev/null
            die "$name exited before $what (log: $LOGS/$name.log)"
        fi
        [ "$(date +%s)" -lt "$end" ] || die "$what did not come up in ${secs}s (logs in $LOGS)"
        sleep 0.2
    done
    log "$what ready"
}

http_ok() { curl -sf -o /dev/null --max-time 5 "$1"; }

# record KIND NAME: remember a namespace/link/mount the stack created, so that
# `stack down` removes it (KIND: netns, link, mount)
record() { mkdir -p "$CREATED"; grep -qxF -- "$2" "$CREATED/$1" 2>/dev/null || echo "$2" >> "$CREATED/$1"; }

# write_env COMPONENT: stdin becomes env.d/COMPONENT.env
write_env() { mkdir -p "$S/env.d"; cat > "$S/env.d/$1.env"; }

# check_ports NAME:PORT...: each fixed loopback port is free unless NAME (ours)
# already runs; otherwise die naming the holder. Without this a service that
# cannot bind dies quietly while readiness checks talk to someone else's
# server (e.g. a second stack on the same machine).
check_ports() {
    local listening np n p
    listening=$(ss -Hltn | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
    for np in "$@"; do
        n=${np%:*}; p=${np#*:}
        pid_alive "$n" && continue
        if grep -qx "$p" <<< "$listening"; then
            die "port $H:$p (for $n) is taken by another process -- another stack? ($(ss -Hltnp "sport = :$p" | grep -o 'users:.*' | head -1))"
        fi
    done
}

# go_env WHAT: check that Go 1.24 or newer is there (WHAT names what needs it,
# e.g. "Kubernetes v1.34.4") and export the stack's Go environment: module and
# build caches under $CACHE/go, no toolchain download (GOTOOLCHAIN=local), the
# go.mod/go.sum as checked in (-mod=readonly), static binaries (no cgo).
go_env() {
    need_cmd go "Go 1.24 or newer is needed to build $1 from Go modules (see README)"
    local gov
    gov=$(go env GOVERSION)
    case $gov in go1.2[4-9]*|go1.[3-9][0-9]*) ;; *) die "Go $gov is too old to build $1: need Go 1.24 or newer" ;; esac
    export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
    mkdir -p "$GOMODCACHE" "$GOCACHE"
}
