# shellcheck shell=bash
# Component "openstack": a real OpenStack control plane on loopback, from
# Debian 12's packages (Keystone 22, Neutron 21, Octavia 11 -- release Zed):
# MariaDB (unix socket only), RabbitMQ, Keystone v3, Neutron server on one of
# two backends (neutron_ovn.sh: ML2/OVN, the default; neutron_ovs.sh:
# ML2/openvswitch with its OVS and L3 agents), Octavia API + worker (amphora
# provider with no-op amphora/compute drivers: load balancers reach ACTIVE
# but carry nothing) and, on OVN, Octavia's `ovn` provider with the driver
# agent (real OVN load balancers), and the public network (public.sh).
# Needs component ovs.

OS=$S/openstack
OS_ETC=$OS/etc
MYSOCK=$OS/mysql.sock
OS_PW=${KURYR_STACK_PASSWORD:-secret}
KEYSTONE_URL=http://$H:5000
NEUTRON_URL=http://$H:9696
OCTAVIA_URL=http://$H:9876
RABBIT_PORT=5672
# the driver agent's sockets: ovn-octavia-provider 3.0.0 only knows the default
# place (octavia_lib's DriverLibrary() without arguments)
OCTAVIA_SOCK_DIR=/run/octavia
TRANSPORT=rabbit://guest:guest@$H:$RABBIT_PORT/
OS_PKGS=(mariadb-server rabbitmq-server python3-keystone python3-keystonemiddleware python3-neutron
         neutron-common python3-octavia python3-pymysql uwsgi-core uwsgi-plugin-python3
         python3-openstackclient python3-octaviaclient python3-neutronclient openssl curl iproute2)

# The Neutron backend of this stack: fixed at the first `up` of openstack
# (choose_neutron_backend), kept in $S/neutron until openstack goes down
NEUTRON_BACKEND=$(cat "$S/neutron" 2>/dev/null || echo "${KURYR_STACK_NEUTRON:-ovn}")

# choose_neutron_backend [REQUESTED]: --neutron's value, else
# KURYR_STACK_NEUTRON, else what runs, else ovn
choose_neutron_backend() {
    local want=${1:-${KURYR_STACK_NEUTRON:-}} have=""
    case $want in ""|ovn|ovs) ;; *) die "unknown Neutron backend '$want': use --neutron ovn or --neutron ovs" ;; esac
    [ -f "$S/neutron" ] && have=$(cat "$S/neutron")
    if [ -n "$have" ] && [ -n "$want" ] && [ "$want" != "$have" ]; then
        die "this stack runs Neutron on $have: 'stack down' first to bring it up on $want"
    fi
    NEUTRON_BACKEND=${want:-${have:-ovn}}
}

db_url() { echo "mysql+pymysql://root@localhost/$1?unix_socket=$MYSOCK&charset=utf8"; }

os_mariadb() {
    if [ ! -d "$OS/mysql/mysql" ]; then
        cat > "$OS_ETC/my.cnf" <<CNF
[mysqld]
datadir=$OS/mysql
socket=$MYSOCK
pid-file=$OS/mysqld.pid
log-error=$LOGS/mysqld.err
# unix socket only: no TCP port to collide with
skip-networking
skip-name-resolve
user=root
innodb_buffer_pool_size=128M
# test data: durability traded for speed
innodb_flush_log_at_trx_commit=0
innodb_doublewrite=0
# the default 96 MB redo log only costs disk, and time when the state goes
innodb_log_file_size=16M
max_connections=1000
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
CNF
        mariadb-install-db --defaults-file="$OS_ETC/my.cnf" --user=root --skip-test-db \
            --auth-root-authentication-method=normal >>"$LOGS/mysql-install.log" 2>&1 \
            || die "mariadb-install-db failed (log: $LOGS/mysql-install.log)"
    fi
    start mariadb mariadbd --defaults-file="$OS_ETC/my.cnf"
}

rabbit_env() {
    export HOME=$OS/rabbit/home RABBITMQ_NODENAME=kuryr-stack@localhost
    export RABBITMQ_NODE_IP_ADDRESS=$H RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_DIST_PORT=25672
    export ERL_EPMD_ADDRESS=$H ERL_EPMD_PORT=4369
    export RABBITMQ_MNESIA_BASE=$OS/rabbit/mnesia RABBITMQ_LOG_BASE=$LOGS/rabbit
    export RABBITMQ_CONFIG_FILE=$OS/rabbit/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$OS/rabbit/enabled_plugins
    export RABBITMQ_ADVANCED_CONFIG_FILE=$OS/rabbit/advanced.config RABBITMQ_CONF_ENV_FILE=$OS/rabbit/env.conf
    export RABBITMQ_PID_FILE=$OS/rabbit/rabbit.pid
    # a crashing Erlang VM writes its dump into the current directory otherwise
    export ERL_CRASH_DUMP=$LOGS/erl_crash.dump
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

os_rabbit() {
    mkdir -p "$OS/rabbit/home" "$OS/rabbit/mnesia" "$LOGS/rabbit"
    printf 'listeners.tcp.default = %s:%s\nloopback_users = none\nlog.console = false\nlog.file.level = warning\n' \
        "$H" "$RABBIT_PORT" > "$OS/rabbit/rabbitmq.conf"
    echo '[].' > "$OS/rabbit/enabled_plugins"
    echo '[].' > "$OS/rabbit/advanced.config"
    : > "$OS/rabbit/env.conf"
    RABBIT_WAS_UP=0
    pid_alive rabbitmq && RABBIT_WAS_UP=1
    (
        rabbit_env
        # our own epmd, in the foreground so that its pid file is ours
        start epmd epmd -address "$H" -port 4369
        start rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
    )
}

# rabbit_ready: RabbitMQ has booted. rabbitmqctl costs ~1 s of Erlang start-up,
# so a node that was already up before this `stack up` only needs its AMQP port.
rabbit_ready() {
    if [ "${RABBIT_WAS_UP:-0}" = 1 ] && pid_alive rabbitmq && (: < "/dev/tcp/$H/$RABBIT_PORT") 2>/dev/null; then
        return 0
    fi
    ( rabbit_env; /usr/lib/rabbitmq/bin/rabbitmqctl -q await_startup --timeout 5 )
}

authtoken_section() {
    cat <<INI
[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $OS_PW
region_name = RegionOne
INI
}

os_configs() {
    mkdir -p "$OS_ETC/neutron/plugins/ml2" "$OS_ETC/octavia" "$OS_ETC/keystone" \
        "$OS/neutron/state" "$OS/neutron/lock" "$OS/octavia/lock" "$OS/octavia/certs" "$OS/keystone"
    cat > "$OS_ETC/keystone/keystone.conf" <<INI
[DEFAULT]
log_file = $LOGS/keystone.log
[database]
connection = $(db_url keystone)
[token]
provider = fernet
expiration = ${KURYR_STACK_TOKEN_EXPIRATION:-86400}
[fernet_tokens]
key_repository = $OS/keystone/fernet-keys
[fernet_receipts]
key_repository = $OS/keystone/fernet-keys
[credential]
key_repository = $OS/keystone/credential-keys
[identity]
# a test stack: cheap password hashing makes logins take ms, not ~0.3 s
password_hash_rounds = 4
[cache]
# one uwsgi process: an in-process cache stays coherent
enabled = true
backend = dogpile.cache.memory
INI
    cat > "$OS_ETC/neutron/neutron.conf" <<INI
[DEFAULT]
core_plugin = ml2
service_plugins = $("${NEUTRON_BACKEND}_service_plugins")
auth_strategy = keystone
bind_host = $H
bind_port = 9696
api_workers = 2
rpc_workers = 1
rpc_state_report_workers = 1
transport_url = $TRANSPORT
state_path = $OS/neutron/state
log_file = $LOGS/neutron-server.log
allow_overlapping_ips = true
# no DHCP agent runs: ports must not wait for DHCP provisioning to go ACTIVE
enable_traditional_dhcp = false
dhcp_agent_notification = false
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
global_physnet_mtu = 1500
[database]
connection = $(db_url neutron)
max_pool_size = 20
[oslo_concurrency]
lock_path = $OS/neutron/lock
[oslo_messaging_notifications]
driver = noop
# a test cluster's projects hold many groups and rules (a NetworkPolicy is a
# group; its rules grow with pods): Neutron's defaults (10 groups, 100
# rules per project) are a production operator's to choose
[quotas]
quota_security_group = -1
quota_security_group_rule = -1
$(authtoken_section neutron)
INI
    "${NEUTRON_BACKEND}_ml2_config" > "$OS_ETC/neutron/plugins/ml2/ml2_conf.ini"
    [ "$NEUTRON_BACKEND" = ovs ] && ovs_agent_configs
    local role providers="amphora:Amphora provider (no-op amphorae in this stack),octavia:Alias of amphora,noop_driver:No-op provider"
    [ "$NEUTRON_BACKEND" = ovn ] && providers+=",ovn:OVN provider (real OVN load balancers)"
    for role in api worker driver-agent; do
        {
            cat <<INI
[DEFAULT]
transport_url = $TRANSPORT
[api_settings]
bind_host = $H
bind_port = 9876
auth_strategy = keystone
api_base_uri = $OCTAVIA_URL
enabled_provider_drivers = $providers
default_provider_driver = amphora
[driver_agent]
# where the ovn provider (3.0.0) looks for them whatever is configured
status_socket_path = $OCTAVIA_SOCK_DIR/status.sock
stats_socket_path = $OCTAVIA_SOCK_DIR/stats.sock
get_socket_path = $OCTAVIA_SOCK_DIR/get.sock
enabled_provider_agents = $([ "$NEUTRON_BACKEND" = ovn ] && echo ovn)
[database]
connection = $(db_url octavia)
[controller_worker]
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
# the API allocates real VIP ports; the worker plugs nothing (see kuryr_stack_octavia.py)
network_driver = $([ $role = api ] && echo allowed_address_pairs_driver || echo kuryr_stack_noop_real_vip)
loadbalancer_topology = SINGLE
workers = 1
client_ca = $OS/octavia/certs/ca.pem
[certificates]
ca_certificate = $OS/octavia/certs/ca.pem
ca_private_key = $OS/octavia/certs/ca.key
[oslo_messaging]
topic = octavia_prov
[oslo_messaging_notifications]
driver = noop
[task_flow]
jobboard_enabled = false
[neutron]
endpoint = $NEUTRON_URL
region_name = RegionOne
[oslo_concurrency]
lock_path = $OS/octavia/lock
[service_auth]
auth_type = password
auth_url = $KEYSTONE_URL
project_domain_name = Default
user_domain_name = Default
project_name = service
username = octavia
password = $OS_PW
$(authtoken_section octavia)
INI
            [ "$NEUTRON_BACKEND" = ovn ] && ovn_octavia_options
        } > "$OS_ETC/octavia/octavia-$role.conf"
    done
    # the worker's network driver, found through an entry point on PYTHONPATH
    local ext=$OS/octavia/pyext
    mkdir -p "$ext/kuryr_stack_octavia-1.0.dist-info"
    cp "$STACK_SRC/openstack/kuryr_stack_octavia.py" "$ext/"
    printf 'Metadata-Version: 2.1\nName: kuryr-stack-octavia\nVersion: 1.0\n' > "$ext/kuryr_stack_octavia-1.0.dist-info/METADATA"
    printf '[octavia.network.drivers]\nkuryr_stack_noop_real_vip = kuryr_stack_octavia:NoopDriverWithRealVip\n' \
        > "$ext/kuryr_stack_octavia-1.0.dist-info/entry_points.txt"
    if [ ! -f "$OS/octavia/certs/ca.pem" ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=kuryr-stack-octavia-ca \
            -keyout "$OS/octavia/certs/ca.key" -out "$OS/octavia/certs/ca.pem" 2>/dev/null
    fi
    # WSGI entry points; both apps parse sys.argv, so hide uwsgi's
    cat > "$OS/keystone/wsgi.py" <<PY
import os, sys
sys.argv = sys.argv[:1]
os.environ["OS_KEYSTONE_CONFIG_FILES"] = "$OS_ETC/keystone/keystone.conf"
from keystone.server.wsgi import initialize_public_application
application = initialize_public_application()
PY
    cat > "$OS/octavia/wsgi.py" <<PY
import sys
sys.argv = sys.argv[:1]
from octavia.api import app
application = app.setup_app(argv=["octavia-api", "--config-file", "$OS_ETC/octavia/octavia-api.conf",
                                  "--log-file", "$LOGS/octavia-api.log"])
PY
}

NEUTRON_CONF=(--config-file "$OS_ETC/neutron/neutron.conf" --config-file "$OS_ETC/neutron/plugins/ml2/ml2_conf.ini")

# os_migrate: database schemas and Keystone bootstrap, in parallel; each
# leaves a stamp so a restart on kept data skips it
os_migrate() {
    local pids=() d km=(keystone-manage --config-file "$OS_ETC/keystone/keystone.conf")
    for d in neutron octavia keystone; do
        mariadb --socket="$MYSOCK" -uroot -e "create database if not exists $d character set utf8"
    done
    if [ ! -f "$OS/neutron/migrated" ]; then
        ( neutron-db-manage "${NEUTRON_CONF[@]}" upgrade heads && touch "$OS/neutron/migrated" ) \
            >>"$LOGS/neutron-db-manage.log" 2>&1 &
        pids+=($!)
    fi
    if [ ! -f "$OS/octavia/migrated" ]; then
        ( octavia-db-manage --config-file "$OS_ETC/octavia/octavia-api.conf" upgrade head && touch "$OS/octavia/migrated" ) \
            >>"$LOGS/octavia-db-manage.log" 2>&1 &
        pids+=($!)
    fi
    if [ ! -f "$OS/keystone/migrated" ]; then
        (
            set -e
            "${km[@]}" db_sync
            [ -d "$OS/keystone/fernet-keys" ] || "${km[@]}" fernet_setup --keystone-user root --keystone-group root
            [ -d "$OS/keystone/credential-keys" ] || "${km[@]}" credential_setup --keystone-user root --keystone-group root
            "${km[@]}" bootstrap --bootstrap-password "$OS_PW" --bootstrap-username admin \
                --bootstrap-project-name admin --bootstrap-role-name admin \
                --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
                --bootstrap-admin-url "$KEYSTONE_URL/v3" --bootstrap-public-url "$KEYSTONE_URL/v3" \
                --bootstrap-internal-url "$KEYSTONE_URL/v3"
            touch "$OS/keystone/migrated"
        ) >>"$LOGS/keystone-manage.log" 2>&1 &
        pids+=($!)
    fi
    [ ${#pids[@]} -gt 0 ] && log "openstack: migrating databases (neutron, octavia, keystone)"
    local p
    for p in "${pids[@]}"; do
        wait "$p" || die "a database migration failed (logs: $LOGS/*-manage.log)"
    done
}

# uwsgi NAME PORT WSGI PROCESSES THREADS: serve a WSGI app on loopback.
# uwsgi's --http-socket has no keep-alive but does not say so: without
# "Connection: close" pooled clients reuse closed sockets and fail.
# uwsgi_app NAME PORT WSGI PROCESSES THREADS [UWSGI OPTION...]
uwsgi_app() {
    start "$1" uwsgi --plugin python3 --master --enable-threads --die-on-term --lazy-apps --need-app \
        --disable-logging --buffer-size 65535 --add-header "Connection: close" \
        --http-socket "$H:$2" --wsgi-file "$3" --processes "$4" --threads "$5" \
        --logto "$LOGS/$1.uwsgi.log" "${@:6}"
}

keystone_token() {
    curl -sf -D - -o /dev/null -H 'Content-Type: application/json' \
        -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"admin\",\"domain\":{\"id\":\"default\"},\"password\":\"$OS_PW\"}}},\"scope\":{\"project\":{\"name\":\"admin\",\"domain\":{\"id\":\"default\"}}}}}" \
        "$KEYSTONE_URL/v3/auth/tokens" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-subject-token" { print $2 }'
}

# octavia_sockets_free: no other driver agent serves $OCTAVIA_SOCK_DIR (a
# real Octavia on this machine); stale sockets of ours are removed
octavia_sockets_free() {
    pid_alive octavia-driver-agent && return 0
    local f
    for f in status stats get; do
        [ -S "$OCTAVIA_SOCK_DIR/$f.sock" ] || continue
        if grep -q " $OCTAVIA_SOCK_DIR/$f.sock " <<< "$(ss -Hxl)"; then
            die "another Octavia driver agent serves $OCTAVIA_SOCK_DIR/$f.sock: stop it first (the ovn provider only finds its agent there)"
        fi
        rm -f "$OCTAVIA_SOCK_DIR/$f.sock"
    done
}

openstack_up() {
    local b=$NEUTRON_BACKEND
    need_pkgs "${OS_PKGS[@]}"
    if [ "$b" = ovn ]; then need_pkgs "${OVN_PKGS[@]}"; else need_pkgs "${NEUTRON_OVS_PKGS[@]}"; fi
    pid_alive ovsdb-server || die "openstack needs the ovs component (stack up --openstack starts both)"
    local ports=(keystone:5000 neutron-server:9696 octavia-api:9876 rabbitmq:$RABBIT_PORT rabbitmq:25672 epmd:4369)
    [ "$b" = ovs ] && ports+=(neutron-openvswitch-agent:6633)
    check_ports "${ports[@]}"
    echo "$b" > "$S/neutron"
    [ "$b" = ovs ] && choose_ovs_firewall
    log "openstack: Neutron backend $b ($([ "$b" = ovn ] && echo ML2/OVN || echo "ML2/openvswitch + L3 agent, $OVS_FIREWALL firewall"))"
    mkdir -p "$OS_ETC"
    os_configs
    os_mariadb
    os_rabbit   # boots (~10 s) while the databases migrate
    local br
    for br in br-int br-phys; do
        vsctl --may-exist add-br "$br" -- set Bridge "$br" datapath_type=netdev
    done
    public_bridge_up
    # neutron-server connects to OVN's databases when it starts
    [ "$b" = ovn ] && ovn_central_up
    wait_for "MariaDB $MYSOCK" 60 mariadb --socket="$MYSOCK" -uroot -e 'select 1'
    os_migrate
    log "openstack: databases ready"

    uwsgi_app keystone 5000 "$OS/keystone/wsgi.py" 1 4
    # Neutron, its agents and Octavia need RabbitMQ when they start, but not
    # Keystone (tokens are checked per request): they boot (~10 s) while
    # Keystone comes up and gets its users
    wait_for "RabbitMQ $H:$RABBIT_PORT" 120 rabbit_ready
    start neutron-server neutron-server "${NEUTRON_CONF[@]}"
    if [ "$b" = ovn ]; then ovn_controller_up; else ovs_agents_start; fi
    # the ovn provider leaks a descriptor and about 1.5 MB per provider call
    # (README, Services): past ~1000 calls select() fails, every ovn call
    # answers "Provider 'ovn' was not found" and the listen queue fills (a
    # whole Netpol run gets there). A worker past 600 MB (~500 calls: a
    # worker measured 1151 MB with 1119 descriptors, so 1200 MB came too
    # late) is replaced after its request. Not by request count: that
    # counts the many status GETs too and would recycle often, and a
    # recycle can drop a call the provider still finishes in the background.
    uwsgi_app octavia-api 9876 "$OS/octavia/wsgi.py" 1 8 --reload-on-rss 600
    PYTHONPATH=$OS/octavia/pyext start octavia-worker octavia-worker \
        --config-file "$OS_ETC/octavia/octavia-worker.conf" --log-file "$LOGS/octavia-worker.log"
    # the ovn provider reports load balancers' status through the driver
    # agent, and octavia-api waits for its sockets when it loads the provider
    if [ "$b" = ovn ]; then
        octavia_sockets_free
        mkdir -p "$OCTAVIA_SOCK_DIR"
        start octavia-driver-agent octavia-driver-agent \
            --config-file "$OS_ETC/octavia/octavia-driver-agent.conf" --log-file "$LOGS/octavia-driver-agent.log"
        wait_proc octavia-driver-agent "octavia-driver-agent's sockets" 60 test -S "$OCTAVIA_SOCK_DIR/get.sock"
    fi

    wait_for "Keystone $KEYSTONE_URL/v3" 90 http_ok "$KEYSTONE_URL/v3"
    if [ ! -f "$OS/keystone/setup-done" ]; then
        KEYSTONE_URL=$KEYSTONE_URL PASSWORD=$OS_PW NEUTRON_URL=$NEUTRON_URL OCTAVIA_URL=$OCTAVIA_URL \
            python3 "$STACK_SRC/openstack/keystone_setup.py" >>"$LOGS/keystone-setup.log" 2>&1 \
            || die "setting up Keystone's users and catalogue failed (log: $LOGS/keystone-setup.log)"
        touch "$OS/keystone/setup-done"
        log "openstack: Keystone projects, users and catalogue set up"
    fi

    write_env openstack <<ENV
export OS_AUTH_URL=$KEYSTONE_URL/v3 OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne OS_INTERFACE=public
export OS_USERNAME=admin OS_PASSWORD=$OS_PW OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default
export OS_CLIENT_CONFIG_FILE=$S/clouds.yaml
export KURYR_STACK_KEYSTONE_URL=$KEYSTONE_URL KURYR_STACK_NEUTRON_URL=$NEUTRON_URL KURYR_STACK_OCTAVIA_URL=$OCTAVIA_URL
export KURYR_STACK_AGENT_HOST=$STACK_NODE KURYR_STACK_NEUTRON_BACKEND=$b
$([ "$b" = ovs ] && echo "export KURYR_STACK_OVS_FIREWALL=$OVS_FIREWALL")
$([ "$b" = ovn ] && echo "export KURYR_STACK_OVN_NB=unix:$OVN_NB_SOCK KURYR_STACK_OVN_SB=unix:$OVN_SB_SOCK OVN_RUNDIR=$OVN_DIR")
ENV
    cat > "$S/clouds.yaml" <<YAML
clouds:
  kuryr-stack:
    auth: {auth_url: "$KEYSTONE_URL/v3", username: admin, password: "$OS_PW", project_name: admin,
           user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    identity_api_version: 3
  kuryr-stack-demo:
    auth: {auth_url: "$KEYSTONE_URL/v3", username: demo, password: "$OS_PW", project_name: demo,
           user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    identity_api_version: 3
YAML

    wait_for "Neutron $NEUTRON_URL" 120 http_ok "$NEUTRON_URL/"
    OS_TOKEN=$(keystone_token)
    [ -n "$OS_TOKEN" ] || die "no Keystone token for admin (log: $LOGS/keystone.log)"
    wait_for "Neutron with a Keystone token" 60 curl -sf -o /dev/null -H "X-Auth-Token: $OS_TOKEN" "$NEUTRON_URL/v2.0/networks"
    wait_for "Octavia $OCTAVIA_URL" 120 http_ok "$OCTAVIA_URL/"
    wait_for "octavia-worker" 90 grep -q 'Starting V2 consumer' "$LOGS/octavia-worker.log"
    if [ "$b" = ovn ]; then
        wait_for "octavia-driver-agent (ovn provider agent)" 90 grep -q 'Started ovn provider agent\|OVN provider agent has started' "$LOGS/octavia-driver-agent.log"
        wait_for "Neutron's OVN controller agent (host $STACK_NODE)" 120 ovn_agent_alive
    else
        ovs_agents_ready
    fi
    public_network_up
}

openstack_down() {
    # API servers and agents first, then what they use. The OVS agents send
    # their last RPCs on SIGTERM and wait up to 10 s for answers: stop them
    # while neutron-server still answers, and neutron-server after them; OVN
    # after neutron-server, which keeps connections to its databases.
    stop 8 octavia-api octavia-worker octavia-driver-agent keystone
    if [ "$NEUTRON_BACKEND" = ovs ]; then ovs_agents_down; fi
    stop 8 neutron-server
    if [ "$NEUTRON_BACKEND" = ovn ]; then ovn_down; fi
    if pid_alive rabbitmq; then
        ( rabbit_env; timeout 30 /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1 )
    fi
    stop 10 rabbitmq
    stop 20 epmd mariadb
    # bridges the agent (and kuryr: trunk bridges tbr-*) made; br-int belongs
    # to component ovs. A netdev bridge leaves its persistent tap behind when
    # deleted, and our vswitchd held it until just now: remove it.
    if pid_alive ovs-vswitchd; then
        local b
        for b in $(vsctl list-br 2>/dev/null); do
            [ "$b" = br-int ] && continue
            vsctl --if-exists del-br "$b"
            if is_tap "$b"; then ip link del "$b" 2>/dev/null || true; fi
        done
    fi
    rm -f "$OCTAVIA_SOCK_DIR"/{status,stats,get}.sock
    rmdir "$OCTAVIA_SOCK_DIR" 2>/dev/null || true
    rm -f "$S/neutron"
    return 0
}

openstack_status() {
    local rc=0 n
    for n in mariadb epmd rabbitmq keystone neutron-server octavia-api octavia-worker; do
        pid_alive "$n" || { echo "  openstack: $n NOT running"; rc=1; }
    done
    if [ "$NEUTRON_BACKEND" = ovn ]; then
        pid_alive octavia-driver-agent || { echo "  openstack: octavia-driver-agent NOT running"; rc=1; }
        ovn_status || rc=1
    else
        ovs_agents_status || rc=1
    fi
    public_status || rc=1
    local providers="amphora (no-op backends: LBs go ACTIVE, no traffic)"
    [ "$NEUTRON_BACKEND" = ovn ] && providers="ovn (real OVN load balancers), $providers"
    cat <<TXT
  Keystone:   $KEYSTONE_URL/v3  admin/$OS_PW (project admin), demo/$OS_PW (project demo)
  Neutron:    $NEUTRON_URL  ($([ "$NEUTRON_BACKEND" = ovn ] && echo "ML2/OVN, chassis $STACK_NODE" || echo "ML2/openvswitch + L3 agent, agent host $STACK_NODE"))
  Octavia:    $OCTAVIA_URL  (providers: $providers)
  RabbitMQ:   $H:$RABBIT_PORT   MariaDB: unix:$MYSOCK
  clouds.yaml $S/clouds.yaml (clouds kuryr-stack, kuryr-stack-demo)
TXT
    return $rc
}
