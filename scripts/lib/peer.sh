# shellcheck shell=bash
# kuryr-kubernetes 10.0.0, the Python original, as the peer benchmarks run
# it: shared by scripts/bench-kuryr-peer and scripts/peer/services-controller.
# The caller sets ROOT (the checkout), VENV (the venv's directory), D (its
# log directory) and defines `say MSG` and `fail MSG`.

# peer_venv: makes or reuses $VENV (/usr/bin/python3 + pip install -r
# scripts/peer/requirements.txt -c scripts/peer/constraints.txt); sets
# KURYR_V, PYROUTE2_V, OSVIF_V (the installed versions)
peer_venv() {
    local py=/usr/bin/python3 req=$ROOT/scripts/peer/requirements.txt cons=$ROOT/scripts/peer/constraints.txt stamp kver
    stamp=$(cat "$req" "$cons" | sha256sum | cut -c1-16)
    if [ -x "$VENV/bin/kuryr-daemon" ] && [ "$(cat "$VENV/.kuryr-peer-stamp" 2>/dev/null)" = "$stamp" ]; then
        say "venv $VENV present: reusing it"
    else
        say "creating venv $VENV ($($py -V)) and installing kuryr-kubernetes==10.0.0 (about a minute)"
        rm -rf "$VENV"; mkdir -p "$(dirname "$VENV")"
        $py -m venv "$VENV"
        if ! "$VENV/bin/pip" install --disable-pip-version-check -r "$req" -c "$cons" > "$D/pip.log" 2>&1; then
            tail -20 "$D/pip.log"; rm -rf "$VENV"; fail "pip install (log: $D/pip.log)"
        fi
        echo "$stamp" > "$VENV/.kuryr-peer-stamp"
    fi
    kver=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kuryr-kubernetes"), m.version("pyroute2"), m.version("os_vif"))')
    read -r KURYR_V PYROUTE2_V OSVIF_V <<< "$kver"
    "$VENV/bin/python" -c 'import kuryr_kubernetes.cni.daemon.service' 2>"$D/import.err" \
        || { cat "$D/import.err"; fail "kuryr-kubernetes does not import"; }
    say "kuryr-kubernetes $KURYR_V, pyroute2 $PYROUTE2_V, os-vif $OSVIF_V on $("$VENV/bin/python" -V)"
}

# peer_kube_conf: the [kubernetes] connection options kuryr needs, from
# $KUBECONFIG's client certificate files (printed)
peer_kube_conf() {
    local api ca crt key
    kc() { kubectl --kubeconfig "$KUBECONFIG" config view --raw --minify -o "jsonpath={$1}"; }
    api=$(kc .clusters[0].cluster.server) ca=$(kc .clusters[0].cluster.certificate-authority)
    crt=$(kc .users[0].user.client-certificate) key=$(kc .users[0].user.client-key)
    [ -f "$crt" ] && [ -f "$key" ] && [ -f "$ca" ] || fail "kubeconfig $KUBECONFIG has no client certificate files kuryr could use"
    printf '%s\n' "api_root = $api" "ssl_ca_crt_file = $ca" "ssl_verify_server_crt = true" \
        "ssl_client_crt_file = $crt" "ssl_client_key_file = $key" "token_file ="
}

# peer_neutron_conf: the [neutron] section's options from the stack's env (printed)
peer_neutron_conf() {
    printf '%s\n' "auth_type = password" "auth_url = $OS_AUTH_URL" "username = $OS_USERNAME" \
        "password = $OS_PASSWORD" "project_name = $OS_PROJECT_NAME" \
        "user_domain_name = $OS_USER_DOMAIN_NAME" "project_domain_name = $OS_PROJECT_DOMAIN_NAME" \
        "region_name = $OS_REGION_NAME"
}

# peer_start_controller HEALTH_PORT: starts kuryr-k8s-controller with
# $D/kuryr.conf through the shim (watches scoped to $KURYR_PEER_NAMESPACE) as
# a process group of its own; prints its process group id once its health
# server answers /ready (fails after 150 s)
peer_start_controller() {
    local health=$1 pid
    : > "$D/controller.log"
    KURYR_PEER_NAMESPACE=$KURYR_PEER_NAMESPACE PATH="$VENV/bin:$PATH" \
        setsid "$VENV/bin/python" "$ROOT/scripts/peer/kuryr_peer_shim.py" controller \
        --config-file "$D/kuryr.conf" --log-file "$D/controller.log" \
        > "$D/controller.out" 2>&1 < /dev/null &
    pid=$!
    for _ in $(seq 1 300); do
        if curl -fs -o /dev/null "http://127.0.0.1:$health/ready"; then
            say "kuryr-k8s-controller $KURYR_V ready (namespace $KURYR_PEER_NAMESPACE, log $D/controller.log)"
            echo "$pid"   # setsid made it a process group leader: pgid = pid
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$D/controller.log" "$D/controller.out" >&2; fail "kuryr-k8s-controller exited"; }
        sleep 0.5
    done
    kill -TERM -- "-$pid" 2>/dev/null || true
    tail -n 30 "$D/controller.log" >&2
    fail "kuryr-k8s-controller not ready in 150 s"
}
