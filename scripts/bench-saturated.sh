#!/usr/bin/env bash
# raftvip's timing with both cores saturated by other processes (issues 12 and 13), with and
# without its real-time class and locked memory ([process], docs/reliability.md), and tuned
# keepalived under the same load in the same run. On the netns bed (integration/netns/lib.sh):
#
#                         namespace $BED_ID-br
#              +---------------------------------------------+
#              |                    br0                      |
#              |   box1        box2        box3      client  |
#              +----|-----------|-----------|----------|-----+
#                 eth0        eth0        eth0       eth0
#              192.0.2.11  192.0.2.12  192.0.2.13  192.0.2.50   VIP 192.0.2.100
#
#   busy loops (normal class, nice 0) outside the bed: BUSY of them, 2 per core by default
#
# Phases (all by default, or name some):
#   box-loss  scripts/bench-failover.sh's box-loss cases (rv-box-loss and kt-box-loss: the
#             holder's link goes down, the client probes every 10 ms) run while the busy loops
#             saturate every core, first with raftvip as configured (real-time), then with
#             raftvip denied CAP_SYS_NICE and CAP_IPC_LOCK (it warns and runs in the normal
#             class: the "before" of the same binary, in the same run).
#   soak      a 3-box raftvip cluster settles, then SOAK_S seconds under the busy loops:
#             VIP moves (address changes on any box), fence releases and leader changes
#             (status counters) and failed client probes in that window. Goal: 0, 0, 0, 0.
#
# Everything it creates belongs to the bed (lib.sh's cleanup trap) or is a busy loop bounded
# by `timeout` and killed on exit.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUNS=5
BUSY=$(($(nproc) * 2))
SOAK_S=600
BUILD=1
PHASES=()

usage() {
    cat <<EOF
Usage: $0 [options] [box-loss] [soak]

  -n RUNS       box-loss runs per case (default $RUNS)
  -b BUSY       busy loops while saturated (default $BUSY: two per core)
  -t SECONDS    soak length (default $SOAK_S)
  --no-build    do not run cargo build --release (uses \$RAFTVIP or target/release/raftvip)
  -h, --help    this help

Needs root, ip, nft, haproxy, keepalived, python3, setpriv.
Examples:
  sudo $0 -n 5 box-loss     # raftvip real-time / normal class vs tuned keepalived, 5 runs each
  sudo $0 -t 600 soak       # 10 minutes saturated: VIP moves, fence releases, leader changes
EOF
}

while (($#)); do
    case $1 in
        -n) RUNS=${2:?}; shift 2 ;;
        -b) BUSY=${2:?}; shift 2 ;;
        -t) SOAK_S=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        box-loss | soak) PHASES+=("$1"); shift ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $BUSY =~ ^[1-9][0-9]*$ && $SOAK_S =~ ^[1-9][0-9]*$ ]] ||
    die "-n, -b and -t want positive numbers"
((${#PHASES[@]})) || PHASES=(box-loss soak)
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, nftables, raw sockets)"
command -v setpriv >/dev/null || die "setpriv is missing (util-linux)"
use_raftvip "$BUILD"
REAL_RAFTVIP=$RAFTVIP

# ---------------------------------------------------------------- saturation
BUSY_PIDS=()
# saturate SECONDS: BUSY busy loops, each ending by itself after SECONDS at the latest.
saturate() {
    local i
    for ((i = 0; i < BUSY; i++)); do
        timeout "$1" bash -c 'while :; do :; done' &
        BUSY_PIDS+=($!)
    done
}
unsaturate() {
    local pid
    for pid in "${BUSY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${BUSY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    BUSY_PIDS=()
}
trap unsaturate EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# The same binary without the capabilities the real-time class and locked memory need (and
# RLIMIT_RTPRIO is 0, RLIMIT_MEMLOCK finite): it warns and runs in the normal class.
NORMAL_WRAPPER=""
normal_wrapper() {
    NORMAL_WRAPPER=$(mktemp /tmp/raftvip-normal-class.XXXXXX)
    cat >"$NORMAL_WRAPPER" <<EOF
#!/bin/sh
exec setpriv --inh-caps=-sys_nice,-ipc_lock --bounding-set=-sys_nice,-ipc_lock $REAL_RAFTVIP "\$@"
EOF
    chmod 755 "$NORMAL_WRAPPER"
}

# ---------------------------------------------------------------- phase: box loss
# bench_failover LABEL RAFTVIP CASES...: bench-failover.sh's cases while every core is busy.
bench_failover() {
    local label=$1 bin=$2; shift 2
    log "== box loss, $label: $BUSY busy loops, load before $(loadavg)"
    saturate 1800
    RAFTVIP=$bin "$REPO/scripts/bench-failover.sh" --no-build -n "$RUNS" "$@" || log "  bench-failover.sh failed (exit $?)"
    log "   load at the end $(loadavg)"
    unsaturate
}
phase_box_loss() {
    command -v keepalived >/dev/null || die "keepalived is not installed (apt-get install keepalived)"
    normal_wrapper
    bench_failover "raftvip real-time (as configured) and tuned keepalived" "$REAL_RAFTVIP" rv-box-loss kt-box-loss
    bench_failover "raftvip in the normal class (no CAP_SYS_NICE, no CAP_IPC_LOCK)" "$NORMAL_WRAPPER" rv-box-loss
    rm -f "$NORMAL_WRAPPER"
}

# ---------------------------------------------------------------- phase: soak
# counters_sum FIELD: FIELD of every box's status, summed.
counters_sum() {
    local b sum=0 v
    for b in 1 2 3; do v=$(bed_status "$b" "$1") && sum=$((sum + v)); done
    echo "$sum"
}
phase_soak() {
    (
        local b probe t0 t1 fr0 fr1 lc0 lc1 term0 term1 moves fails sched
        bed_create 3
        trap 'unsaturate; bed_cleanup' EXIT
        for b in 1 2 3; do bed_start_haproxy "$b"; done
        for b in 1 2 3; do bed_start_raftvip "$b"; done
        bed_wait_holder 10000 >/dev/null || bed_die "no single holder after start"
        probe=$(bed_probe_start "$(bed_vip4)")
        bed_probe_wait_ok "$probe" 5000 || bed_die "the client is not served"
        sleep 3
        sched=$(bed_status 1 scheduling.realtime_priority)
        fr0=$(counters_sum counters.fence_releases)
        lc0=$(counters_sum counters.leader_changes)
        term0=$(bed_status 1 term)
        log "== soak: ${SOAK_S} s, $BUSY busy loops, raftvip realtime_priority=$sched, load before $(loadavg)"
        saturate $((SOAK_S + 5))
        t0=$(bed_now_ms)
        sleep "$SOAK_S"
        t1=$(bed_now_ms)
        log "   load at the end $(loadavg)"
        unsaturate
        fr1=$(counters_sum counters.fence_releases)
        lc1=$(counters_sum counters.leader_changes)
        term1=$(bed_status 1 term)
        moves=$(bed_events "$(bed_vip4)" | awk -v f="$t0" -v t="$t1" '$1 >= f && $1 <= t' | wc -l)
        fails=$(probe_failures "$probe" "$t0" "$t1")
        echo "soak ${SOAK_S}s busy=$BUSY realtime_priority=$sched: vip_address_changes=$moves" \
            "fence_releases=$((fr1 - fr0)) leader_changes_seen=$((lc1 - lc0)) term=$term0->$term1" \
            "failed_probes=$fails of $(awk -v f="$t0" -v t="$t1" '$1 >= f && $1 <= t' "$probe" | wc -l)"
    )
}

log "# bench-saturated $(date -u +%FT%TZ) raftvip=$(git -C "$REPO" rev-parse --short HEAD) $(nproc) CPUs, load $(loadavg)"
for phase in "${PHASES[@]}"; do
    case $phase in
        box-loss) phase_box_loss ;;
        soak) phase_soak ;;
    esac
done
