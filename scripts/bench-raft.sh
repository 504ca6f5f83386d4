#!/usr/bin/env bash
# Benchmarks raftvip's Raft timing with 3 release-build processes on loopback, and measures
# keepalived's idle footprint in the same run for comparison.
#
#   loopback (127.0.0.1)                      keepalived on the netns test bed (lib.sh)
#   node1 :P1   node2 :P2   node3 :P3         $BED_ID-box1 -box2      -box3
#     \___________|___________/                 eth0 .11    eth0 .12    eth0 .13
#        signed HTTP Raft RPCs                     \__________|__________/
#                                                  br0 in $BED_ID-br (192.0.2.0/24, VIP .100)
#
# Phases (all by default, or name some): failover, saturation, idle (idle also measures
# keepalived at its defaults, keepalived.sh, unless --no-keepalived). Every process and file
# this run creates is removed by the EXIT trap, by exact pid; the bed by lib.sh's cleanup.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source-path=SCRIPTDIR source=../integration/netns/keepalived.sh
source "$REPO/integration/netns/keepalived.sh"

usage() {
    cat <<EOF
usage: $0 [options] [failover] [saturation] [idle]

  -n RUNS       SIGKILL-the-leader runs (default 20)
  -d SECONDS    saturation duration (default 120)
  -w SECONDS    idle warm-up before measuring (default 60)
  -m SECONDS    idle measuring window (default 30)
  --no-keepalived   skip the keepalived comparison
  --no-build    use \$RAFTVIP (default target/release/raftvip) as is

environment:
  RAFTVIP_HEARTBEAT_MS=20 RAFTVIP_ELECTION_TIMEOUT_MS=60,90   [timing] of the run
  RAFTVIP_FENCE_MS                                            optional fence_ms
  RAFTVIP=PATH                                                binary to benchmark
The keepalived comparison needs root, keepalived, haproxy, nft and python3 (the netns bed).
EOF
}

RUNS=20
SAT_SECONDS=120
IDLE_WARMUP=60
IDLE_WINDOW=30
KEEPALIVED=1
BUILD=1
PHASES=()
while [[ $# -gt 0 ]]; do
    case $1 in
    -n) RUNS=$2; shift 2 ;;
    -d) SAT_SECONDS=$2; shift 2 ;;
    -w) IDLE_WARMUP=$2; shift 2 ;;
    -m) IDLE_WINDOW=$2; shift 2 ;;
    --no-keepalived) KEEPALIVED=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    failover | saturation | idle) PHASES+=("$1"); shift ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ ${#PHASES[@]} -gt 0 ]] || PHASES=(failover saturation idle)

HEARTBEAT_MS=${RAFTVIP_HEARTBEAT_MS:-20}
ELECTION_TIMEOUT_MS=${RAFTVIP_ELECTION_TIMEOUT_MS:-60,90}
FENCE_MS=${RAFTVIP_FENCE_MS:-}

# ---------------------------------------------------------------- preconditions
command -v python3 >/dev/null || die "python3 is needed for the status probe"
use_raftvip "$BUILD"
BIN=$RAFTVIP
if [[ $KEEPALIVED -eq 1 ]] && [[ " ${PHASES[*]} " == *" idle "* ]]; then
    command -v keepalived >/dev/null || die "keepalived is not installed"
    bed_require
fi

RUN_DIR=$(mktemp -d "/tmp/bench-raft.$$.XXXX")
NODE_PIDS=(0 0 0 0)
BUSY_PIDS=()

cleanup() {
    local pid
    # bash reports every killed job on stderr; nothing else is said from here on.
    exec 2>/dev/null
    for pid in "${NODE_PIDS[@]}" "${BUSY_PIDS[@]}"; do
        if [[ $pid -gt 0 ]]; then kill -9 "$pid" || true; fi
    done
    bed_cleanup || true
    wait || true
    rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# ---------------------------------------------------------------- the probe (bedtool.py)
# Everything that needs to be fast: kept-alive HTTP connections, a ~2 ms poll period, and its
# own overhead measured before each kill (the raft-* subcommands).
probe() { python3 "$BED_TOOL" "$@"; }

# ---------------------------------------------------------------- the raftvip cluster
read -r -a PORTS <<<"$(probe free-ports 3)"
(umask 077 && head -c 48 /dev/urandom | base64 >"$RUN_DIR/secret")
for i in 1 2 3; do
    {
        echo "cluster = \"bench\""
        echo "node_id = $i"
        echo "listen = \"127.0.0.1:${PORTS[i - 1]}\""
        echo "data_dir = \"$RUN_DIR/data$i\""
        echo "secret_file = \"$RUN_DIR/secret\""
        for j in 1 2 3; do
            printf '[[peer]]\nid = %d\naddress = "127.0.0.1:%d"\n' "$j" "${PORTS[j - 1]}"
        done
        echo "[timing]"
        echo "heartbeat_ms = $HEARTBEAT_MS"
        echo "election_timeout_ms = [$ELECTION_TIMEOUT_MS]"
        [[ -z $FENCE_MS ]] || echo "fence_ms = $FENCE_MS"
    } >"$RUN_DIR/node$i.toml"
done
"$BIN" check-config --config "$RUN_DIR/node1.toml" >/dev/null ||
    die "the timing is refused by check-config: $("$BIN" check-config --config "$RUN_DIR/node1.toml" 2>&1)"

start_node() {
    local i=$1
    "$BIN" run --config "$RUN_DIR/node$i.toml" 2>>"$RUN_DIR/node$i.log" &
    NODE_PIDS[i]=$!
}

# Prints "LEADER TERM" once all running nodes agree.
agreed_leader() {
    local ports=() i
    for i in 1 2 3; do
        [[ ${NODE_PIDS[i]} -gt 0 ]] && ports+=("${PORTS[i - 1]}")
    done
    probe raft-agreed 10 "${ports[@]}"
}


echo "raftvip $("$BIN" --version | awk '{print $2}'): heartbeat ${HEARTBEAT_MS} ms, election timeout [${ELECTION_TIMEOUT_MS}] ms${FENCE_MS:+, fence ${FENCE_MS} ms}; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

for i in 1 2 3; do start_node "$i"; done
agreed_leader >/dev/null

# ---------------------------------------------------------------- phase: failover
phase_failover() {
    local run leader term survivors i result elapsed overhead new l2 t2 rejoin_term=0
    : >"$RUN_DIR/failover.ms"
    : >"$RUN_DIR/probe.us"
    REJOIN_ELECTIONS=0
    for ((run = 1; run <= RUNS; run++)); do
        # Steady state: the same agreed leader and term one second apart.
        read -r leader term <<<"$(agreed_leader)"
        while sleep 1 && read -r l2 t2 <<<"$(agreed_leader)" && [[ "$l2 $t2" != "$leader $term" ]]; do
            leader=$l2 term=$t2
        done
        # Elections caused by the previous run's node rejoining (term after the failover vs now).
        if [[ $rejoin_term -gt 0 && $term -gt $rejoin_term ]]; then
            REJOIN_ELECTIONS=$((REJOIN_ELECTIONS + 1))
            echo "  (the rejoining node moved the term $rejoin_term -> $term)"
        fi
        survivors=()
        for i in 1 2 3; do
            [[ $i -ne $leader ]] && survivors+=("${PORTS[i - 1]}")
        done
        result=$(probe raft-failover "${NODE_PIDS[leader]}" "$leader" "$term" "${survivors[@]}")
        read -r elapsed overhead new <<<"$result"
        read -r l2 rejoin_term <<<"$(probe raft-agreed 10 "${survivors[@]}")"
        wait "${NODE_PIDS[leader]}" 2>/dev/null || true
        NODE_PIDS[leader]=0
        printf '  run %2d: leader %d (term %d) killed -> node %d leads after %6.1f ms (probe round %d us)\n' \
            "$run" "$leader" "$term" "$new" "$elapsed" "$overhead"
        echo "$elapsed" >>"$RUN_DIR/failover.ms"
        echo "$overhead" >>"$RUN_DIR/probe.us"
        start_node "$leader"
    done
    agreed_leader >/dev/null
    probe summarize "new leader after SIGKILL" <"$RUN_DIR/failover.ms"
    echo "runs where the restarted node's rejoin started another election: $REJOIN_ELECTIONS of $((RUNS - 1))"
    echo "probe: one poll round over both survivors takes median $(sort -n "$RUN_DIR/probe.us" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') us (kept-alive HTTP + JSON parse) plus a 2 ms period: a reported time is late by at most ~2.5 ms"
}

# ---------------------------------------------------------------- phase: saturation
phase_saturation() {
    local busy=$(($(nproc) * 2)) b before after
    before=$(probe raft-counters "${PORTS[@]}")
    echo "saturation: $busy busy loops on $(nproc) cores for ${SAT_SECONDS} s"
    for ((b = 0; b < busy; b++)); do
        timeout "$SAT_SECONDS" yes >/dev/null &
        BUSY_PIDS+=($!)
    done
    sleep "$SAT_SECONDS"
    for b in "${BUSY_PIDS[@]}"; do wait "$b" 2>/dev/null || true; done
    BUSY_PIDS=()
    after=$(probe raft-counters "${PORTS[@]}")
    paste <(echo "$before") <(echo "$after") | awk '
        { dt = $7 - $2; dc = $8 - $3; df = $10 - $5; if (dt > mt) mt = dt; if (dc > mc) mc = dc; fr += df
          printf "  node %d: term %d -> %d, leader_changes %d -> %d, role %s, fence releases %d\n", $1, $2, $7, $3, $8, $9, df }
        END { printf "leader changes under saturation: %d (max term increase %d); quorum-lease (fence) releases: %d\n", mc, mt, fr }'
    grep -h "leader changed\|role changed" "$RUN_DIR"/node?.log | tail -n 3 | sed 's/^/  last transition: /' || true
}

# ---------------------------------------------------------------- keepalived test bed
# keepalived at its defaults on 3 boxes of the bed, each checking its own HAProxy.
start_keepalived() {
    local i
    bed_create 3
    # bed_create installed lib.sh's cleanup as the EXIT trap; ours also stops the nodes.
    trap cleanup EXIT
    for i in 1 2 3; do bed_start_haproxy "$i"; done
    for i in 1 2 3; do ka_start_box "$i" defaults; done
}

footprint_line() { # LABEL PID TICKS_BEFORE
    local label=$1 pid=$2 t0=$3 t1
    t1=$(bed_pid_cpu_ticks "$pid")
    awk -v l="$label" -v d=$((t1 - t0)) -v w="$IDLE_WINDOW" -v hz="$(getconf CLK_TCK)" -v rss="$(bed_pid_rss_kb "$pid")" \
        'BEGIN { printf "  %-34s CPU %5.2f %% of a core   RSS %5.1f MB\n", l, d / hz / w * 100, rss / 1024 }'
}

# ---------------------------------------------------------------- phase: idle
phase_idle() {
    local leader term i pids=() labels=() t0=() k master dir
    if [[ $KEEPALIVED -eq 1 ]]; then start_keepalived; fi
    echo "idle: warming up ${IDLE_WARMUP} s, then measuring ${IDLE_WINDOW} s"
    sleep "$IDLE_WARMUP"
    read -r leader term <<<"$(agreed_leader)"
    for i in 1 2 3; do
        pids+=("${NODE_PIDS[i]}")
        if [[ $i -eq $leader ]]; then labels+=("raftvip node $i (leader)"); else labels+=("raftvip node $i (follower)"); fi
    done
    if [[ $KEEPALIVED -eq 1 ]]; then
        for i in 1 2 3; do
            dir=$(bed_boxdir "$i")
            [[ -s $dir/keepalived.vrrp.pid ]] || die "keepalived $i did not start: $(tail -n 5 "$dir/keepalived.log")"
            master=backup
            if [[ " $(bed_holders) " == *" $i "* ]]; then master=MASTER; fi
            pids+=("$(cat "$dir/keepalived.pid")" "$(cat "$dir/keepalived.vrrp.pid")")
            labels+=("keepalived $i parent" "keepalived $i VRRP child ($master)")
        done
    fi
    for k in "${!pids[@]}"; do t0+=("$(bed_pid_cpu_ticks "${pids[k]}")"); done
    sleep "$IDLE_WINDOW"
    for k in "${!pids[@]}"; do footprint_line "${labels[k]}" "${pids[k]}" "${t0[k]}"; done
    read -r i term <<<"$(agreed_leader)"
    [[ $i -eq $leader ]] || echo "  note: the leader changed during the idle window ($leader -> $i)"
}

for phase in "${PHASES[@]}"; do
    echo "== $phase"
    "phase_$phase"
done
