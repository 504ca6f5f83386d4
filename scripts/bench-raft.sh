#!/usr/bin/env bash
# Benchmarks raftvip's Raft timing with 3 release-build processes on loopback, and measures
# keepalived in the same run for comparison (new MASTER after the MASTER's keepalived is
# SIGKILLed, at its defaults and tuned; idle footprint at its defaults).
#
#   loopback (127.0.0.1)                      keepalived on the netns test bed (lib.sh)
#   node1 :P1   node2 :P2   node3 :P3         $BED_ID-box1 -box2      -box3
#     \___________|___________/                 eth0 .11    eth0 .12    eth0 .13
#        signed HTTP Raft RPCs                     \__________|__________/
#                                                  br0 in $BED_ID-br (192.0.2.0/24, VIP .100)
#
# Phases (all by default, or name some): failover, saturation, idle (failover and idle also
# measure keepalived, keepalived.sh, unless --no-keepalived). It ends with the figures side by
# side (bedtool.py raft-summary) and writes every number to results.tsv in its results
# directory. Every process and file this run creates is removed by the EXIT trap, by exact
# pid; the bed by lib.sh's cleanup.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source-path=SCRIPTDIR source=../integration/netns/keepalived.sh
source "$REPO/integration/netns/keepalived.sh"

usage() {
    cat <<EOF
usage: $0 [options] [failover] [saturation] [idle]

  -n RUNS       SIGKILL-the-leader runs, per system (default 20)
  -d SECONDS    saturation duration (default 120)
  -w SECONDS    idle warm-up before measuring (default 60)
  -m SECONDS    idle measuring window (default 30)
  -o DIR        results directory: results.tsv (every number), summary.md
                (default target/bench/raft-DATE)
  --no-keepalived   skip the keepalived comparison
  --no-build    use \$RAFTVIP (default target/release/raftvip) as is

environment:
  RAFTVIP_HEARTBEAT_MS=25 RAFTVIP_ELECTION_TIMEOUT_MS=75,90   [timing] of the run
  RAFTVIP_FENCE_MS                                            optional fence_ms
  RAFTVIP=PATH                                                binary to benchmark
The keepalived comparison needs root, keepalived, haproxy, nft and python3 (the netns bed).
EOF
}

ARGS=("$@")
RUNS=20
SAT_SECONDS=120
IDLE_WARMUP=60
IDLE_WINDOW=30
KEEPALIVED=1
OUT_DIR=""
BUILD=1
PHASES=()
while [[ $# -gt 0 ]]; do
    case $1 in
    -n) RUNS=$2; shift 2 ;;
    -d) SAT_SECONDS=$2; shift 2 ;;
    -w) IDLE_WARMUP=$2; shift 2 ;;
    -m) IDLE_WINDOW=$2; shift 2 ;;
    -o) OUT_DIR=$2; shift 2 ;;
    --no-keepalived) KEEPALIVED=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    failover | saturation | idle) PHASES+=("$1"); shift ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ ${#PHASES[@]} -gt 0 ]] || PHASES=(failover saturation idle)

# ---------------------------------------------------------------- preconditions
command -v python3 >/dev/null || die "python3 is needed for the status probe"
use_raftvip "$BUILD"
BIN=$RAFTVIP
if [[ $KEEPALIVED -eq 1 ]] && [[ " ${PHASES[*]} " == *" idle "* || " ${PHASES[*]} " == *" failover "* ]]; then
    command -v keepalived >/dev/null || die "keepalived is not installed"
    bed_require
fi
OUT_DIR=${OUT_DIR:-$REPO/target/bench/raft-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR"
RESULTS=$OUT_DIR/results.tsv
: >"$RESULTS"
# record FIGURE WHO RUN VALUE: one number of the run (WHO: rv, rv-leader, ka-master, ...).
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

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
        timing_toml
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


echo "raftvip $("$BIN" --version | awk '{print $2}'): $(timing_line); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

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
        record new_leader_ms rv "$run" "$elapsed"
        start_node "$leader"
    done
    agreed_leader >/dev/null
    probe summarize "new leader after SIGKILL" <"$RUN_DIR/failover.ms"
    echo "runs where the restarted node's rejoin started another election: $REJOIN_ELECTIONS of $((RUNS - 1))"
    record rejoin_elections rv "$((RUNS - 1))" "$REJOIN_ELECTIONS"
    echo "probe: one poll round over both survivors takes median $(sort -n "$RUN_DIR/probe.us" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') us (kept-alive HTTP + JSON parse) plus a 2 ms period: a reported time is late by at most ~2.5 ms"
    if [[ $KEEPALIVED -eq 1 ]]; then
        keepalived_failover defaults ka
        keepalived_failover tuned kt
    fi
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
    paste <(echo "$before") <(echo "$after") | awk -v s="$SAT_SECONDS" -v out="$RESULTS" '
        { dt = $7 - $2; dc = $8 - $3; df = $10 - $5; if (dt > mt) mt = dt; if (dc > mc) mc = dc; fr += df
          printf "  node %d: term %d -> %d, leader_changes %d -> %d, role %s, fence releases %d\n", $1, $2, $7, $3, $8, $9, df }
        END { printf "leader changes under saturation: %d (max term increase %d); quorum-lease (fence) releases: %d\n", mc, mt, fr
              printf "saturated_leader_changes\trv\t%d\t%d\nsaturated_fence_releases\trv\t%d\t%d\n", s, mc, s, fr >>out }'
    grep -h "leader changed\|role changed" "$RUN_DIR"/node?.log | tail -n 3 | sed 's/^/  last transition: /' || true
}

# ---------------------------------------------------------------- keepalived test bed
# keepalived in MODE (defaults or tuned) on 3 boxes of the bed, each checking its own HAProxy;
# the bed is created on first use, keepalived restarted if it runs in another mode.
KA_RUNNING=""
start_keepalived() {
    local mode=$1 i
    if [[ -z $BED_ID ]]; then
        bed_create 3
        # bed_create installed lib.sh's cleanup as the EXIT trap; ours also stops the nodes.
        trap cleanup EXIT
        for i in 1 2 3; do bed_start_haproxy "$i"; done
    fi
    [[ $KA_RUNNING != "$mode" ]] || return 0
    if [[ -n $KA_RUNNING ]]; then
        for i in 1 2 3; do ka_stop_box "$i"; done
        for i in $(bed_holders); do bed_vip_del "$i"; done
    fi
    for i in 1 2 3; do ka_start "$i" "$mode"; done
    KA_RUNNING=$mode
}
# ka_start BOX MODE: in a subshell, so keepalived is not a job of this shell (no "Killed" notice
# when a run SIGKILLs it).
ka_start() { (ka_start_box "$1" "$2") || die "cannot start keepalived on box$1"; }

# keepalived_failover MODE WHO: RUNS times, SIGKILLs the MASTER's keepalived (its VRRP child and
# the parent: a crash, no priority-0 advert) and measures until another box adds the VIP (the
# kernel's time, from the bed's address monitors): keepalived's "new leader after SIGKILL".
# The killed keepalived leaves the VIP bound, as a crashed one does: it is removed before the
# restart.
keepalived_failover() {
    local mode=$1 who=$2 run h dir fault took
    start_keepalived "$mode"
    : >"$RUN_DIR/$who-failover.ms"
    for ((run = 1; run <= RUNS; run++)); do
        bed_wait 30000 ka_agree || die "keepalived $mode: no single MASTER holding the VIP"
        sleep 1
        h=$(bed_holders)
        dir=$(bed_boxdir "$h")
        fault=$(bed_now_ms)
        kill -KILL "$(cat "$dir/keepalived.vrrp.pid")" "$(cat "$dir/keepalived.pid")"
        bed_wait 15000 ka_taken_over "$fault" "$h" >/dev/null || die "keepalived $mode: no other box took the VIP from box$h"
        took=$(ka_taken_over "$fault" "$h")
        printf '  keepalived %-8s run %2d: MASTER box%d SIGKILLed -> another box holds the VIP after %5d ms\n' \
            "$mode" "$run" "$h" "$took"
        echo "$took" >>"$RUN_DIR/$who-failover.ms"
        record new_leader_ms "$who" "$run" "$took"
        ka_stop_box "$h"
        bed_vip_del "$h"
        ka_start "$h" "$mode"
    done
    probe summarize "keepalived $mode: VIP on another box after SIGKILL of the MASTER" <"$RUN_DIR/$who-failover.ms"
}
# ka_taken_over FAULT_MS BOX: ms from FAULT_MS until a box other than BOX added the VIP.
ka_taken_over() {
    local t
    t=$(bed_events "$(bed_vip4)" | awk -v f="$1" -v b="$2" '$1 >= f && $2 != b && $3 == "+" { print $1 - f; exit }')
    [[ -n $t ]] && echo "$t"
}

# footprint_line LABEL WHO "PID..." "TICKS_BEFORE...": the CPU (% of a core over the window)
# and RSS of a node, summed over its processes; printed and recorded.
footprint_line() {
    local label=$1 who=$2 pids t0 k ticks=0 rss=0 cpu mb
    read -r -a pids <<<"$3"
    read -r -a t0 <<<"$4"
    for k in "${!pids[@]}"; do
        ticks=$((ticks + $(bed_pid_cpu_ticks "${pids[k]}") - t0[k]))
        rss=$((rss + $(bed_pid_rss_kb "${pids[k]}")))
    done
    cpu=$(awk -v d="$ticks" -v w="$IDLE_WINDOW" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", d / hz / w * 100 }')
    mb=$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }')
    printf '  %-44s CPU %5.2f %% of a core   RSS %5.1f MB\n' "$label" "$cpu" "$mb"
    record idle_cpu_pct "$who" "$FOOTPRINT_N" "$cpu"
    record idle_rss_mb "$who" "$FOOTPRINT_N" "$mb"
    FOOTPRINT_N=$((FOOTPRINT_N + 1))
}
FOOTPRINT_N=1

# ---------------------------------------------------------------- phase: idle
phase_idle() {
    local leader term i pids=() labels=() whos=() t0=() k p ticks dir
    if [[ $KEEPALIVED -eq 1 ]]; then start_keepalived defaults; fi
    echo "idle: warming up ${IDLE_WARMUP} s, then measuring ${IDLE_WINDOW} s"
    sleep "$IDLE_WARMUP"
    read -r leader term <<<"$(agreed_leader)"
    for i in 1 2 3; do
        pids+=("${NODE_PIDS[i]}")
        if [[ $i -eq $leader ]]; then
            labels+=("raftvip node $i (leader)"); whos+=(rv-leader)
        else
            labels+=("raftvip node $i (follower)"); whos+=(rv-follower)
        fi
    done
    if [[ $KEEPALIVED -eq 1 ]]; then
        for i in 1 2 3; do
            dir=$(bed_boxdir "$i")
            [[ -s $dir/keepalived.vrrp.pid ]] || die "keepalived $i did not start: $(tail -n 5 "$dir/keepalived.log")"
            # A keepalived node is its parent and its VRRP child.
            pids+=("$(cat "$dir/keepalived.pid") $(cat "$dir/keepalived.vrrp.pid")")
            if [[ " $(bed_holders) " == *" $i "* ]]; then
                labels+=("keepalived $i, parent + VRRP child (MASTER)"); whos+=(ka-master)
            else
                labels+=("keepalived $i, parent + VRRP child (BACKUP)"); whos+=(ka-backup)
            fi
        done
    fi
    for k in "${!pids[@]}"; do
        ticks=""
        for p in ${pids[k]}; do ticks+="$(bed_pid_cpu_ticks "$p") "; done
        t0+=("$ticks")
    done
    sleep "$IDLE_WINDOW"
    for k in "${!pids[@]}"; do footprint_line "${labels[k]}" "${whos[k]}" "${pids[k]}" "${t0[k]}"; done
    read -r i term <<<"$(agreed_leader)"
    [[ $i -eq $leader ]] || echo "  note: the leader changed during the idle window ($leader -> $i)"
}

for phase in "${PHASES[@]}"; do
    echo "== $phase"
    "phase_$phase"
done

summary=$(
    echo "$("$BIN" --version), $(timing_line)$(
        [[ $KEEPALIVED -eq 0 ]] || echo "; $(keepalived --version 2>&1 | head -n 1)")"
    echo "$(date -u +%FT%TZ); $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: $SCRIPT_NAME.sh ${ARGS[*]}"
    echo
    python3 "$BED_TOOL" raft-summary "$RESULTS"
)
printf '\n%s\n' "$summary"
printf '%s\n' "$summary" >"$OUT_DIR/summary.md"
echo "every number and the summary: $OUT_DIR/{results.tsv,summary.md}"
