# shellcheck shell=bash
# raftvip's network-namespace test bed. Source it; nothing happens until bed_create.
#
#                         namespace $BED_ID-br
#              +---------------------------------------------+
#              |                    br0                      |
#              |   box1      box2     ...  boxN      client  |   <- veth ends on the bridge
#              +----|---------|-------------|----------|-----+
#                   |         |             |          |
#                 eth0      eth0          eth0       eth0
#             $BED_ID-box1  -box2   ...   -boxN     $BED_ID-client
#             192.0.2.11    .12           .1N       192.0.2.50
#             2001:db8::11  ::12          ::1N      2001:db8::50
#
#   Each box: HAProxy (master-worker) with a frontend on VIP:80 (v4 and v6, bound before the
#   box holds the VIP thanks to ip_nonlocal_bind) and on its own address, forwarding to a
#   backend server (python3 http.server on 127.0.0.1:8080 answering the box's name); and
#   raftvip listening on BOX_ADDRESS:PORT.
#   Cluster "a" (default: every box): VIP 192.0.2.100/32 + 2001:db8::100/128, port 7480.
#   A second cluster (bed_cluster b ...): VIP 192.0.2.200/32 + 2001:db8::200/128, port 7481.
#
# Every name carries the run's id ($BED_ID = rv<pid>-<random>); everything created is
# recorded under $BED_DIR and bed_cleanup (installed as the EXIT/INT/TERM trap by
# bed_create) kills the processes in those namespaces by pid and deletes exactly those
# namespaces (the veths and the bridge go with them). Nothing touches the root namespace.
#
# Ground truth for "who holds the VIP" is the kernel: bed_holders reads `ip -n BOX addr`;
# `ip -ts monitor address` runs in every box from the start, so bed_events / bed_overlap
# replay the exact add/delete times of any address.
#
# Boxes are named by number (1..N) in every function.

set -euo pipefail
export LC_ALL=C

BED_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BED_REPO=$(cd "$BED_LIB_DIR/../.." && pwd)
BED_TOOL="$BED_LIB_DIR/bedtool.py"

# Addresses (documentation ranges only).
BED_NET4=192.0.2
BED_NET6=2001:db8:
BED_CLIENT4=192.0.2.50
BED_CLIENT6=2001:db8::50
# Backend server port inside each box (loopback only).
BED_BACKEND_PORT=8080
# Frontend port of HAProxy on the VIPs and box addresses.
BED_HTTP_PORT=80
# Raft-only mode: configs without [haproxy] and [[vip]] (Raft alone, no health gate, no VIP).
BED_RAFT_ONLY=${BED_RAFT_ONLY:-0}
# Log filter for raftvip: its RAFTVIP_LOG (a tracing filter such as info or raftvip=debug).
# Unset: the binary's own default (info, openraft's logs off), as an operator runs it.
BED_RAFTVIP_LOG=${BED_RAFTVIP_LOG:-}
# Many-VIP beds: this many more IPv4 VIPs per box of cluster a, 198.51.100.1 upward (on-link
# on the segment; the client routes the /24 onto eth0). 0..254.
BED_EXTRA_VIPS=${BED_EXTRA_VIPS:-0}
BED_EXTRA_NET4=198.51.100
# The interface the VIPs of clusters a and b are configured on (and bed_holders looks at):
# a scenario may use a second interface, e.g. a dummy it creates in each box.
BED_VIP_IF=${BED_VIP_IF:-eth0}
# Soft limit of open files for raftvip (e.g. 1024, systemd's default); empty: inherited.
BED_NOFILE=${BED_NOFILE:-}
# Port of a separate status listener on each box's loopback (status_listen); empty: none,
# status is read from the peer port.
BED_STATUS_PORT=${BED_STATUS_PORT:-}

BED_ID=""
BED_DIR=""
BED_N=0
declare -a BED_NETNS=()
# Cluster definitions: name -> "vip4 vip6 port" and name -> "box box ..."; box -> cluster.
declare -A BED_CL_VIPS=() BED_CL_BOXES=() BED_BOX_CLUSTER=() BED_WITNESS=()
# Boxes moved behind the router (bed_route_box): box -> its address on the other subnet.
declare -A BED_ROUTED4=()

bed_log() { printf '  [bed] %s\n' "$*" >&2; }
bed_die() { printf 'bed: %s\n' "$*" >&2; exit 1; }
# Runs a command that changes state, echoing it when BED_VERBOSE=1 (wg-quick's cmd()).
bed_cmd() {
    [[ ${BED_VERBOSE:-0} == 1 ]] && printf '  [bed] # %s\n' "$*" >&2
    "$@"
}
bed_now_ms() { local t=${EPOCHREALTIME/./}; echo "${t:0:13}"; }

bed_ns() { # bed_ns BOX|client|br -> namespace name
    case $1 in
        client) echo "$BED_ID-client" ;;
        br) echo "$BED_ID-br" ;;
        *) echo "$BED_ID-box$1" ;;
    esac
}
bed_addr4() { echo "${BED_ROUTED4[$1]:-$BED_NET4.$((10 + $1))}"; }
bed_addr6() { echo "$BED_NET6:1$1"; }
bed_boxdir() { echo "$BED_DIR/box$1"; }
bed_boxname() { echo "box$1"; }
bed_vip4() { local v; read -r v _ _ <<<"${BED_CL_VIPS[${1:-a}]}"; echo "$v"; }
bed_vip6() { local v; read -r _ v _ <<<"${BED_CL_VIPS[${1:-a}]}"; echo "$v"; }
bed_port() { local p; read -r _ _ p <<<"${BED_CL_VIPS[${1:-a}]}"; echo "$p"; }
bed_boxes() { echo "${BED_CL_BOXES[${1:-a}]}"; }
bed_exec() { local box=$1; shift; ip netns exec "$(bed_ns "$box")" "$@"; }
# bed_reach BOX|client HOST PORT: a TCP connect from inside the namespace succeeds within 500 ms.
bed_reach() { bed_exec "$1" timeout 0.5 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }

# Fails unless the bed can run here: root and the tools. Never skips.
bed_require() {
    [[ $EUID -eq 0 ]] || bed_die "must run as root (network namespaces, nftables, raw sockets)"
    local tool missing=()
    for tool in ip haproxy nft python3; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || bed_die "missing tools: ${missing[*]} (apt-get install -y haproxy iproute2 nftables python3)"
}

# The raftvip binary: $RAFTVIP, else the newest of target/release and target/debug.
bed_raftvip_bin() {
    if [[ -n ${RAFTVIP:-} ]]; then echo "$RAFTVIP"; return; fi
    local rel="$BED_REPO/target/release/raftvip" dbg="$BED_REPO/target/debug/raftvip"
    if [[ -x $rel && ( ! -x $dbg || $rel -nt $dbg ) ]]; then echo "$rel"
    elif [[ -x $dbg ]]; then echo "$dbg"
    else bed_die "no raftvip binary: run cargo build --release (or set RAFTVIP)"
    fi
}

# Polls COMMAND every 10 ms until it succeeds or TIMEOUT_MS passes (then returns 1).
bed_wait() {
    local timeout_ms=$1; shift
    local deadline=$(($(bed_now_ms) + timeout_ms))
    until "$@" 2>/dev/null; do
        (($(bed_now_ms) < deadline)) || return 1
        sleep 0.01
    done
}

# bed_wait_eq TIMEOUT_MS WANT COMMAND...: polls until COMMAND prints WANT.
bed_wait_eq() { local t=$1; shift; bed_wait "$t" bed_is "$@"; }
bed_is() { local want=$1; shift; [[ $("$@" 2>/dev/null) == "$want" ]]; }

# Creates a namespace with lo up and records it for cleanup.
bed_add_ns() {
    local ns=$1
    bed_cmd ip netns add "$ns"
    BED_NETNS+=("$ns")
    echo "$ns" >>"$BED_DIR/netns"
    ip -n "$ns" link set lo up
}

# bed_create N: the bridge, N boxes and the client; cluster "a" = every box.
bed_create() {
    local n=$1 i
    # Up to 39: box addresses .11-.49 stay below the client's .50 (scripts/bench-scale.sh runs
    # ten 3-box clusters on one segment).
    ((n >= 1 && n <= 39)) || bed_die "bed_create: 1..39 boxes, not $n"
    bed_require
    [[ -z $BED_ID ]] || bed_die "bed_create: a bed ($BED_ID) already exists in this shell"
    BED_ID="rv$$-$(printf '%04x' $((RANDOM)))"
    BED_DIR="${BED_RUN_DIR:-/run/raftvip-bed}/$BED_ID"
    BED_N=$n
    mkdir -p "$BED_DIR"
    trap 'bed_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local br; br=$(bed_ns br)
    bed_add_ns "$br"
    # The bridge namespace carries no IP traffic of its own.
    ip netns exec "$br" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    # STP off (ports forward at once) and no multicast snooping (NA/ND multicast is flooded).
    bed_cmd ip -n "$br" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ip -n "$br" link set br0 up

    for i in $(seq 1 "$n"); do
        mkdir -p "$(bed_boxdir "$i")"
        bed_add_port "$(bed_ns "$i")" "box$i" "$(bed_addr4 "$i")" "$(bed_addr6 "$i")"
        # HAProxy binds the VIPs before the box holds them.
        bed_exec "$i" sysctl -qw net.ipv4.ip_nonlocal_bind=1 net.ipv6.ip_nonlocal_bind=1
        # Every box has the same name for its segment interface, like real load balancers.
        bed_start_monitor "$i"
    done
    bed_add_port "$(bed_ns client)" client "$BED_CLIENT4" "$BED_CLIENT6"
    ((BED_EXTRA_VIPS >= 0 && BED_EXTRA_VIPS <= 254)) || bed_die "BED_EXTRA_VIPS: 0..254, not $BED_EXTRA_VIPS"
    ((BED_EXTRA_VIPS == 0)) || ip -n "$(bed_ns client)" route add "$BED_EXTRA_NET4.0/24" dev eth0
    bed_cluster a 192.0.2.100 2001:db8::100 7480 $(seq 1 "$n")
    bed_wait_monitors
    bed_log "bed $BED_ID: $n boxes + client on $(bed_ns br)/br0, files in $BED_DIR"
}

# bed_add_port NS BRIDGE_PORT_NAME ADDR4 ADDR6: eth0 in NS, its peer on br0.
bed_add_port() {
    local ns=$1 port=$2 a4=$3 a6=$4 br; br=$(bed_ns br)
    bed_add_ns "$ns"
    # No DAD: addresses are usable at once (no tentative phase), also the VIPs.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    bed_cmd ip -n "$br" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$br" link set "$port" master br0 up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" addr add "$a4/24" dev eth0
    ip -n "$ns" addr add "$a6/64" dev eth0 nodad
}

# Logs every address change of a box with timestamps (the exact VIP timeline).
bed_start_monitor() {
    local box=$1 dir; dir=$(bed_boxdir "$box")
    ip -ts -n "$(bed_ns "$box")" monitor address >"$dir/addr.log" 2>&1 &
    echo $! >"$dir/monitor.pid"
}

# Proves each monitor is subscribed: a marker address must show up in its log.
bed_wait_monitors() {
    local i marker=203.0.113.250
    for i in $(seq 1 "$BED_N"); do
        ip -n "$(bed_ns "$i")" addr add "$marker/32" dev lo
        bed_wait 2000 grep -q "$marker" "$(bed_boxdir "$i")/addr.log" ||
            bed_die "address monitor of box$i does not report changes"
        ip -n "$(bed_ns "$i")" addr del "$marker/32" dev lo
    done
}

# bed_cluster NAME VIP4 VIP6 PORT BOX...: node ids are the boxes' positions (1, 2, ...).
bed_cluster() {
    local name=$1 vip4=$2 vip6=$3 port=$4 box; shift 4
    BED_CL_VIPS[$name]="$vip4 $vip6 $port"
    BED_CL_BOXES[$name]="$*"
    for box in "$@"; do BED_BOX_CLUSTER[$box]=$name; done
    [[ -f $BED_DIR/secret-$name ]] || bed_new_secret "$BED_DIR/secret-$name"
}

# bed_new_secret FILE: a new random cluster secret in FILE, readable by root only.
bed_new_secret() {
    (umask 077 && head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1")
}

# Marks a box as a witness (votes, never leads, no HAProxy).
bed_witness() { BED_WITNESS[$1]=1; }

bed_node_id() { # bed_node_id BOX -> its id in its cluster
    local box=$1 b id=0
    for b in $(bed_boxes "${BED_BOX_CLUSTER[$box]}"); do
        id=$((id + 1))
        [[ $b == "$box" ]] && { echo "$id"; return; }
    done
    bed_die "box$box is in no cluster"
}
bed_box_of_node() { # bed_box_of_node CLUSTER ID -> box
    local -a boxes; read -r -a boxes <<<"$(bed_boxes "$1")"
    echo "${boxes[$(($2 - 1))]}"
}

# The HAProxy template (shared with integration/haproxy_health.rs).
bed_haproxy_template() { echo "$BED_REPO/haproxy/testbed.cfg.in"; }
# Name of the backend HAProxy must keep UP (the template's backend).
bed_haproxy_backend() { echo be_test; }

# bed_start_backend BOX: the "app" server HAProxy forwards to; answers the box's name.
bed_start_backend() {
    local box=$1 dir; dir=$(bed_boxdir "$box")
    mkdir -p "$dir/www"
    bed_boxname "$box" >"$dir/www/index.html"
    # Not via bed_exec: a backgrounded function would record a subshell's pid.
    ip netns exec "$(bed_ns "$box")" python3 -m http.server "$BED_BACKEND_PORT" --bind 127.0.0.1 \
        --directory "$dir/www" >>"$dir/backend.log" 2>&1 &
    echo $! >"$dir/backend.pid"
    bed_wait 3000 bed_reach "$box" 127.0.0.1 "$BED_BACKEND_PORT" ||
        bed_die "backend server of box$box does not listen"
}

# bed_stop_backend BOX: kills the backend server; HAProxy marks the backend DOWN (~200 ms).
bed_stop_backend() {
    local dir; dir=$(bed_boxdir "$1")
    bed_kill_pidfile "$dir/backend.pid" KILL
}

# bed_start_haproxy BOX: backend server + HAProxy (-W) with stats and master CLI sockets.
bed_start_haproxy() {
    local box=$1 dir cl bind
    dir=$(bed_boxdir "$box")
    cl=${BED_BOX_CLUSTER[$box]}
    if [[ ! -f $dir/backend.pid ]] || ! bed_pid_alive "$(cat "$dir/backend.pid")"; then
        bed_start_backend "$box"
    fi
    bind="$(bed_vip4 "$cl"):$BED_HTTP_PORT,[$(bed_vip6 "$cl")]:$BED_HTTP_PORT"
    bind+=",$(bed_addr4 "$box"):$BED_HTTP_PORT,[$(bed_addr6 "$box")]:$BED_HTTP_PORT"
    sed -e "s|@STATS_SOCKET@|$dir/haproxy.sock|g" -e "s|@PIDFILE@|$dir/haproxy.pid|g" \
        -e "s|@BIND@|$bind|g" -e "s|@SERVER@|127.0.0.1:$BED_BACKEND_PORT|g" \
        "$(bed_haproxy_template)" >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" || bed_die "haproxy.cfg of box$box is invalid"
    rm -f "$dir/haproxy.pid"
    ip netns exec "$(bed_ns "$box")" haproxy -W -S "$dir/master.sock" -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
    echo $! >"$dir/haproxy.master"
    bed_wait 3000 bed_haproxy_backend_up "$box" || bed_die "HAProxy of box$box did not come up with its backend UP"
}

# Runtime API command on a box's HAProxy (stats socket).
bed_haproxy_cmd() {
    python3 "$BED_TOOL" haproxy "$(bed_boxdir "$1")/haproxy.sock" "$2"
}
bed_haproxy_backend_up() {
    bed_haproxy_cmd "$1" "show stat" | awk -F, -v be="$(bed_haproxy_backend)" \
        '$1 == be && $2 == "BACKEND" && $18 == "UP" { up = 1 } END { exit !up }'
}
bed_haproxy_master_pid() { cat "$(bed_boxdir "$1")/haproxy.master"; }
# Every HAProxy process (master and workers) in a box.
bed_haproxy_pids() {
    local pid
    for pid in $(ip netns pids "$(bed_ns "$1")"); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == haproxy ]] && echo "$pid"
    done
    return 0
}
# bed_reload_haproxy BOX: master-worker reload (SIGUSR2 to the master); waits for a new worker.
# HAProxy 2.6's master ignores SIGUSR2 for a few ms after its first worker answers, so the
# signal waits until the master catches it.
bed_reload_haproxy() {
    local box=$1 before master
    before=$(bed_haproxy_cmd "$box" "show info" | awk '/^Pid:/ { print $2 }')
    master=$(bed_haproxy_master_pid "$box")
    bed_wait 3000 bed_pid_catches_usr2 "$master" || bed_die "HAProxy's master on box$box does not catch SIGUSR2"
    kill -USR2 "$master"
    bed_wait 3000 bed_haproxy_new_worker "$box" "$before" || bed_die "HAProxy reload on box$box produced no new worker"
}
# bed_pid_catches_usr2 PID: PID has a handler for SIGUSR2 (bit 12 of SigCgt).
bed_pid_catches_usr2() {
    local mask
    mask=$(awk '/^SigCgt:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
    [[ -n $mask ]] && (( (16#$mask >> 11) & 1 ))
}
bed_haproxy_new_worker() {
    local pid
    pid=$(bed_haproxy_cmd "$1" "show info" | awk '/^Pid:/ { print $2 }')
    [[ -n $pid && $pid != "$2" ]]
}
# bed_kill_haproxy BOX [SIGNAL]: every HAProxy process of the box (default SIGKILL).
bed_kill_haproxy() {
    local box=$1 sig=${2:-KILL} pids
    pids=$(bed_haproxy_pids "$box")
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill -"$sig" $pids 2>/dev/null || true
    bed_wait 3000 bed_no_haproxy "$box" || bed_die "HAProxy of box$box survived SIG$sig"
}
bed_no_haproxy() { [[ -z $(bed_haproxy_pids "$1") ]]; }

# bed_write_config BOX [EXTRA_TOML]: the raftvip config of a box (EXTRA: whole tables).
bed_write_config() {
    local box=$1 extra=${2:-} dir cl b port
    dir=$(bed_boxdir "$box")
    cl=${BED_BOX_CLUSTER[$box]}
    port=$(bed_port "$cl")
    mkdir -p "$dir/data-$cl"
    {
        echo "cluster = \"bed-$cl-$BED_ID\""
        echo "node_id = $(bed_node_id "$box")"
        echo "listen = \"$(bed_addr4 "$box"):$port\""
        echo "data_dir = \"$dir/data-$cl\""
        echo "secret_file = \"$BED_DIR/secret-$cl\""
        [[ -z $BED_STATUS_PORT ]] || echo "status_listen = \"127.0.0.1:$BED_STATUS_PORT\""
        [[ -n ${BED_WITNESS[$box]:-} ]] && echo 'role = "witness"'
        # A one- or two-box bed survives no member loss: say so, or check-config refuses it.
        (($(wc -w <<<"$(bed_boxes "$cl")") >= 3)) || echo 'accept_no_failover = true'
        for b in $(bed_boxes "$cl"); do
            printf '[[peer]]\nid = %s\naddress = "%s:%s"\n' "$(bed_node_id "$b")" "$(bed_addr4 "$b")" "$port"
            [[ -z ${BED_WITNESS[$b]:-} ]] || echo 'role = "witness"'
        done
        if [[ $BED_RAFT_ONLY != 1 && -z ${BED_WITNESS[$box]:-} ]]; then
            printf '[[vip]]\naddress = "%s/32"\ninterface = "%s"\n' "$(bed_vip4 "$cl")" "$BED_VIP_IF"
            printf '[[vip]]\naddress = "%s/128"\ninterface = "%s"\n' "$(bed_vip6 "$cl")" "$BED_VIP_IF"
            if [[ $cl == a ]]; then
                for ((b = 1; b <= BED_EXTRA_VIPS; b++)); do
                    printf '[[vip]]\naddress = "%s/32"\ninterface = "eth0"\n' "$(bed_extra_vip "$b")"
                done
            fi
            printf '[haproxy]\nstats_socket = "%s"\nbackends = ["%s"]\n' "$dir/haproxy.sock" "$(bed_haproxy_backend)"
        fi
        [[ -z $extra ]] || printf '%s\n' "$extra"
    } >"$dir/raftvip-$cl.toml"
    echo "$dir/raftvip-$cl.toml"
}

# bed_start_raftvip BOX [EXTRA_TOML]: starts raftvip in the box; waits until its API answers.
bed_start_raftvip() {
    local box=$1 extra=${2:-} config
    config=$(bed_write_config "$box" "$extra")
    "$(bed_raftvip_bin)" check-config --config "$config" >/dev/null ||
        bed_die "raftvip rejects $config: $("$(bed_raftvip_bin)" check-config --config "$config" 2>&1)"
    bed_run_raftvip "$box" "$config"
    bed_wait_raftvip "$box"
}

# bed_run_raftvip BOX CONFIG: starts raftvip in the box with CONFIG, logging to the box's
# raftvip.log, its pid in raftvip.pid; does not wait.
bed_run_raftvip() {
    local box=$1 config=$2 dir limit=()
    dir=$(bed_boxdir "$box")
    echo "=== start $(date +%T.%N)" >>"$dir/raftvip.log"
    [[ -z $BED_NOFILE ]] || limit=(prlimit "--nofile=$BED_NOFILE:$(ulimit -Hn)")
    env ${BED_RAFTVIP_LOG:+"RAFTVIP_LOG=$BED_RAFTVIP_LOG"} ip netns exec "$(bed_ns "$box")" "${limit[@]}" "$(bed_raftvip_bin)" run --config "$config" >>"$dir/raftvip.log" 2>&1 &
    echo $! >"$dir/raftvip.pid"
}

# bed_wait_raftvip BOX: waits until the box's raftvip answers on its status API (5 s).
bed_wait_raftvip() {
    local box=$1 dir
    dir=$(bed_boxdir "$box")
    if ! bed_wait 5000 bed_status "$box" node_id >/dev/null; then
        bed_pid_alive "$(cat "$dir/raftvip.pid")" ||
            bed_die "raftvip on box$box exited: $(tail -n 3 "$dir/raftvip.log")"
        bed_die "raftvip on box$box does not answer on its status API"
    fi
}

# bed_kill_raftvip BOX [SIGNAL]: default SIGKILL; waits until the process is gone.
bed_kill_raftvip() {
    bed_kill_pidfile "$(bed_boxdir "$1")/raftvip.pid" "${2:-KILL}"
}

# bed_raftvip_cli BOX ARGS...: the raftvip CLI inside a box with that box's config.
bed_raftvip_cli() {
    local box=$1; shift
    bed_exec "$box" "$(bed_raftvip_bin)" "$@" --config "$(bed_boxdir "$box")/raftvip-${BED_BOX_CLUSTER[$box]}.toml"
}

# bed_status BOX [FIELD]: the box's status document (or one field, e.g. role, term).
bed_status() {
    local box=$1
    bed_exec "$box" python3 "$BED_TOOL" get "$(bed_status_url "$box")/v1/status" "${2:-}"
}

# bed_status_url BOX: where the box serves /v1/status and /metrics (seen from inside the box).
bed_status_url() {
    if [[ -n $BED_STATUS_PORT ]]; then
        echo "http://127.0.0.1:$BED_STATUS_PORT"
    else
        echo "http://$(bed_addr4 "$1"):$(bed_port "${BED_BOX_CLUSTER[$1]}")"
    fi
}

# bed_leader [CLUSTER]: the box whose raftvip says it is leader (one line per such box).
bed_leader() {
    local b
    for b in $(bed_boxes "${1:-a}"); do
        [[ -f $(bed_boxdir "$b")/raftvip.pid ]] || continue
        [[ $(bed_status "$b" role 2>/dev/null) == leader ]] && echo "$b"
    done
    return 0
}
bed_one_leader() { [[ $(bed_leader "${1:-a}" | wc -l) -eq 1 ]]; }

# bed_holders [VIP]: boxes that have VIP bound (ground truth from the kernel), space separated.
bed_holders() {
    local vip=${1:-$(bed_vip4 a)} i out=()
    for i in $(seq 1 "$BED_N"); do
        # Not `ip | grep -q`: with pipefail, grep quitting early SIGPIPEs ip and the test fails.
        [[ $(ip -n "$(bed_ns "$i")" -o addr show dev "$BED_VIP_IF" 2>/dev/null) == *" $vip/"* ]] && out+=("$i")
    done
    echo "${out[*]}"
}

# bed_wait_holder TIMEOUT_MS [VIP] [NOT_BOX]: waits for exactly one holder (other than NOT_BOX);
# prints it.
bed_wait_holder() {
    local timeout_ms=$1 vip=${2:-$(bed_vip4 a)} not=${3:-} deadline h
    deadline=$(($(bed_now_ms) + timeout_ms))
    while :; do
        h=$(bed_holders "$vip")
        if [[ -n $h && $h != *" "* && $h != "$not" ]]; then echo "$h"; return 0; fi
        (($(bed_now_ms) < deadline)) || return 1
        sleep 0.01
    done
}
# bed_wait_no_holder TIMEOUT_MS [VIP]
bed_wait_no_holder() {
    local vip=${2:-$(bed_vip4 a)}
    bed_wait "$1" bed_no_holder "$vip"
}
bed_no_holder() { [[ -z $(bed_holders "$1") ]]; }

# Address timeline (from the monitors) of VIP: "epoch_ms box +|-" lines.
bed_monitor_specs() {
    local i
    for i in $(seq 1 "$BED_N"); do echo "$i=$(bed_boxdir "$i")/addr.log"; done
}
bed_events() {
    # shellcheck disable=SC2046 # one spec per word
    python3 "$BED_TOOL" events "${1:-$(bed_vip4 a)}" $(bed_monitor_specs)
}
# bed_overlap VIP FROM_MS TO_MS -> "MAX_HOLDERS MS_WITH_TWO_OR_MORE"
bed_overlap() {
    # shellcheck disable=SC2046 # one spec per word
    python3 "$BED_TOOL" overlap "$1" "$2" "$3" $(bed_monitor_specs)
}

# bed_vip_del BOX [VIP]: removes the VIP by hand (as a crashed or confused box would).
bed_vip_del() {
    local vip=${2:-$(bed_vip4 a)} len=32
    [[ $vip == *:* ]] && len=128
    bed_cmd ip -n "$(bed_ns "$1")" addr del "$vip/$len" dev eth0
}
# bed_vip_add BOX [VIP]: adds the VIP by hand (a stale VIP).
bed_vip_add() {
    local vip=${2:-$(bed_vip4 a)}
    if [[ $vip == *:* ]]; then bed_cmd ip -n "$(bed_ns "$1")" addr add "$vip/128" dev eth0 nodad
    else bed_cmd ip -n "$(bed_ns "$1")" addr add "$vip/32" dev eth0
    fi
}

# bed_box_mac BOX: eth0's MAC.
bed_box_mac() { ip -n "$(bed_ns "$1")" -br link show dev eth0 | awk '{ print $3 }'; }
# bed_client_neigh IP: the MAC in the client's neighbour entry for IP (empty if none).
bed_client_neigh() {
    ip -n "$(bed_ns client)" neigh show "$1" dev eth0 |
        awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }'
}
# bed_box_of_mac MAC: which box owns a MAC (empty if none).
bed_box_of_mac() {
    local i
    for i in $(seq 1 "$BED_N"); do
        [[ $(bed_box_mac "$i") == "$1" ]] && { echo "$i"; return 0; }
    done
    return 0
}

# bed_cut BOX: the box loses every other box (addresses and MACs), not the client.
bed_cut() {
    local box=$1 i a4=() a6=() macs=()
    for i in $(seq 1 "$BED_N"); do
        [[ $i == "$box" ]] && continue
        a4+=("$(bed_addr4 "$i")"); a6+=("$(bed_addr6 "$i")"); macs+=("$(bed_box_mac "$i")")
    done
    local s4 s6 sm
    s4=$(IFS=,; echo "${a4[*]}"); s6=$(IFS=,; echo "${a6[*]}"); sm=$(IFS=,; echo "${macs[*]}")
    bed_log "cut box$box from ${s4//,/ }"
    ip netns exec "$(bed_ns "$box")" nft -f - <<EOF
table inet bedcut {
    chain input {
        type filter hook input priority -300; policy accept;
        ip saddr { $s4 } drop
        ip6 saddr { $s6 } drop
        ether saddr { $sm } drop
    }
    chain output {
        type filter hook output priority -300; policy accept;
        ip daddr { $s4 } drop
        ip6 daddr { $s6 } drop
    }
}
table arp bedcut {
    chain input {
        type filter hook input priority 0; policy accept;
        ether saddr { $sm } drop
    }
}
EOF
}
# bed_heal BOX: undoes bed_cut.
bed_heal() {
    local ns; ns=$(bed_ns "$1")
    bed_cmd ip netns exec "$ns" nft delete table inet bedcut
    bed_cmd ip netns exec "$ns" nft delete table arp bedcut
}

# bed_link_down BOX / bed_link_up BOX: the box's veth on the bridge side.
bed_link_down() { bed_cmd ip -n "$(bed_ns br)" link set "box$1" down; }
bed_link_up() { bed_cmd ip -n "$(bed_ns br)" link set "box$1" up; }

# bed_probe_start [TARGET] [NAME]: the client's probe loop against TARGET:80; prints the log file.
bed_probe_start() {
    local target=${1:-$(bed_vip4 a)} name=${2:-probe} out
    out="$BED_DIR/$name.log"
    : >"$out"
    # Its own stdout/stderr: callers run this in $(...), which would wait for an inherited pipe.
    ip netns exec "$(bed_ns client)" python3 "$BED_TOOL" probe "$target" "$BED_HTTP_PORT" "$out" \
        >/dev/null 2>>"$BED_DIR/$name.err" &
    echo $! >"$BED_DIR/$name.pid"
    bed_wait 3000 grep -q . "$out" || bed_die "the probe writes nothing"
    echo "$out"
}
bed_probe_stop() { bed_kill_pidfile "$BED_DIR/${1:-probe}.pid" TERM; }
# bed_probe_wait_ok FILE TIMEOUT_MS: waits for a successful attempt after now.
bed_probe_wait_ok() {
    local file=$1 since; since=$(bed_now_ms)
    # shellcheck disable=SC2016 # an awk program
    bed_wait "$2" awk -v s="$since" '$1 >= s && $2 == "ok" { f = 1; exit } END { exit !f }' "$file"
}

# probe_outage FILE FAULT_MS: ms from the fault to the first success after the last failure.
probe_outage() { python3 "$BED_TOOL" outage "$1" "$2"; }
# probe_failures FILE FROM_MS TO_MS: failed attempts in the window.
probe_failures() { python3 "$BED_TOOL" failures "$1" "$2" "$3"; }
# probe_last_box FILE: the box that answered the latest successful attempt.
probe_last_box() { awk '$2 == "ok" { b = $3 } END { print b }' "$1"; }

bed_pid_alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }
# bed_kill_pidfile FILE SIGNAL: signals the pid and waits (3 s, then SIGKILL) until it is gone.
bed_kill_pidfile() {
    local file=$1 sig=$2 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    rm -f "$file"
    bed_pid_alive "$pid" || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    bed_wait 3000 bed_pid_gone "$pid" || { kill -KILL "$pid" 2>/dev/null || true; bed_wait 1000 bed_pid_gone "$pid" || true; }
    wait "$pid" 2>/dev/null || true
}
# Gone or a zombie (a zombie child of this shell is reaped by `wait`).
bed_pid_gone() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ -z $state || $state == Z ]]
}

bed_all_gone() {
    local pid
    for pid in "$@"; do bed_pid_gone "$pid" || return 1; done
}

# Keeps the files of a failed bed: BED_KEEP=DIR copies $BED_DIR there before cleanup.
bed_cleanup() {
    local rc=$? ns pid pids=() i
    trap - EXIT INT TERM
    [[ -n $BED_ID ]] || return "$rc"
    # Every process in our namespaces (HAProxy workers included), by pid.
    for ns in "${BED_NETNS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$pid"); done
    done
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        bed_wait 2000 bed_all_gone "${pids[@]}" || kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    bed_unmount_all
    for ((i = ${#BED_NETNS[@]} - 1; i >= 0; i--)); do
        ip netns del "${BED_NETNS[$i]}" 2>/dev/null || bed_log "cannot delete namespace ${BED_NETNS[$i]}"
    done
    if [[ -n ${BED_KEEP:-} && -d $BED_DIR ]]; then
        { mkdir -p "$BED_KEEP" && cp -r "$BED_DIR/." "$BED_KEEP/"; } 2>/dev/null || true
    fi
    rm -rf "$BED_DIR"
    BED_ID=""
    BED_NETNS=()
    return "$rc"
}

# bed_mount_disk DIR SIZE: a fresh ext4 file system of SIZE (e.g. 16M) on a loop device at
# DIR, unmounted (and the loop device freed) by bed_cleanup. bed_disk_fail breaks it.
bed_mount_disk() {
    local dir=$1 image
    image="$BED_DIR/disk$(($(wc -l <"$BED_DIR/mounts" 2>/dev/null || echo 0) + 1)).img"
    truncate -s "$2" "$image"
    mkfs.ext4 -q -F "$image"
    mkdir -p "$dir"
    # errors=remount-ro: a file system error turns every later write into EROFS.
    bed_cmd mount -o loop,errors=remount-ro "$image" "$dir"
    echo "$dir" >>"$BED_DIR/mounts"
}
# bed_disk_fail DIR: an ext4 error on DIR's file system (as a failing disk would cause): it
# goes read-only and every write fails from now on.
bed_disk_fail() {
    local dev; dev=$(findmnt -no SOURCE "$1")
    [[ $dev == /dev/loop* ]] || bed_die "bed_disk_fail: $1 is not a bed disk ($dev)"
    echo 1 >"/sys/fs/ext4/${dev#/dev/}/trigger_fs_error"
}
# Unmounts what bed_mount_disk mounted, newest first (before the files are removed).
bed_unmount_all() {
    local m
    [[ -f $BED_DIR/mounts ]] || return 0
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || bed_log "cannot unmount $m"
    done < <(tac "$BED_DIR/mounts")
    rm -f "$BED_DIR/mounts"
}

# ---- a box on another subnet, behind a router (two-box sites with a remote witness) ----
#
#   segment 192.0.2.0/24 (br0) --- eth0 192.0.2.1 [ $BED_ID-rt ] 198.51.100.1 net0 --- eth0 BOX
#                                                                                 198.51.100.1N
# The other boxes reach 198.51.100.0/24 via 192.0.2.1; BOX's default route is 198.51.100.1.
# No L2 path exists between BOX and the segment: only routed IP (what VRRP cannot cross).
BED_ROUTED_NET4=198.51.100
bed_router_ns() { echo "$BED_ID-rt"; }

# bed_route_box BOX: moves BOX (one box per bed) off the segment, behind the router.
bed_route_box() {
    local box=$1 rt ns b; rt=$(bed_router_ns); ns=$(bed_ns "$box")
    [[ ! -e /run/netns/$rt ]] || bed_die "bed_route_box: one routed box per bed"
    bed_add_port "$rt" router "$BED_NET4.1" "${BED_NET6}:1"
    ip netns exec "$rt" sysctl -qw net.ipv4.ip_forward=1
    # Off the bridge: deleting the box's eth0 deletes its bridge port with it.
    bed_cmd ip -n "$ns" link del eth0
    bed_cmd ip -n "$rt" link add net0 type veth peer name eth0 netns "$ns"
    ip -n "$rt" addr add "$BED_ROUTED_NET4.1/24" dev net0
    ip -n "$rt" link set net0 up
    ip -n "$ns" link set eth0 up
    BED_ROUTED4[$box]=$BED_ROUTED_NET4.$((10 + box))
    ip -n "$ns" addr add "${BED_ROUTED4[$box]}/24" dev eth0
    bed_cmd ip -n "$ns" route add default via "$BED_ROUTED_NET4.1"
    for b in $(seq 1 "$BED_N"); do
        [[ $b == "$box" ]] || bed_cmd ip -n "$(bed_ns "$b")" route add "$BED_ROUTED_NET4.0/24" via "$BED_NET4.1"
    done
    bed_log "box$box is now ${BED_ROUTED4[$box]}, routed via $rt"
}

# bed_raftvip_pid BOX: the pid of BOX's raftvip (as started by bed_start_raftvip).
bed_raftvip_pid() { cat "$(bed_boxdir "$1")/raftvip.pid"; }
# bed_pid_cpu_ticks PID: CPU the process used so far (utime + stime from /proc, clock ticks).
bed_pid_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# bed_pid_rss_kb PID: its resident set now, in kB, from the kernel.
bed_pid_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# bed_proc_footprint PID SECONDS -> "RSS_KB CPU_PERCENT": resident memory now and CPU used over
# SECONDS.
bed_proc_footprint() {
    local pid=$1 s=$2 t0 t1 hz rss
    hz=$(getconf CLK_TCK)
    t0=$(bed_pid_cpu_ticks "$pid")
    sleep "$s"
    t1=$(bed_pid_cpu_ticks "$pid")
    rss=$(bed_pid_rss_kb "$pid")
    echo "$rss $(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$s" 'BEGIN { printf "%.2f", 100 * d / hz / s }')"
}

# Many-VIP beds (BED_EXTRA_VIPS): the I-th extra VIP, and how many of them BOX has bound.
bed_extra_vip() { echo "$BED_EXTRA_NET4.$1"; }
bed_extra_held() {
    ip -n "$(bed_ns "$1")" -o -4 addr show dev eth0 | grep -c " $BED_EXTRA_NET4\." || true
}

# Saturation ("both cores busy with other processes"): COUNT busy loops in the normal class,
# each ending by itself after SECONDS at the latest, so an aborted run leaves none behind.
BED_BUSY_PIDS=()
bed_saturate() { # bed_saturate SECONDS COUNT
    local i
    for ((i = 0; i < $2; i++)); do
        timeout "$1" bash -c 'while :; do :; done' &
        BED_BUSY_PIDS+=($!)
    done
}
bed_unsaturate() {
    local pid
    for pid in "${BED_BUSY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${BED_BUSY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    BED_BUSY_PIDS=()
}
