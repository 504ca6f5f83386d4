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
#   box-loss  the holder's link goes down while the busy loops saturate every core (from 1 s
#             before the fault until the client is served again; the client probes every
#             10 ms), RUNS times for each system in turn: raftvip as configured (rv-rt),
#             the same binary denied CAP_SYS_NICE and CAP_IPC_LOCK (rv-normal: it warns and
#             runs in the normal class, the "before" in the same run), tuned keepalived (kt)
#             and tuned keepalived with its processes SCHED_RR 10 (kt-rt, as vrrp_rt_priority).
#   soak      a raftvip cluster (3 boxes, or -B; -V more VIPs) settles, then SOAK_S seconds
#             under the busy loops: VIP moves (address changes on any box), fence releases and
#             leader changes (status counters) and failed client probes in that window.
#             Goal: 0, 0, 0, 0. HAProxy, the backends and the client are sheltered as above.
#
# Everything it creates belongs to the bed (lib.sh's cleanup trap) or is a busy loop bounded
# by `timeout` and killed on exit.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RUNS=5
BUSY=$(($(nproc) * 2))
SOAK_S=600
SOAK_BOXES=3
BOX_LOSS_SYSTEMS=(rv-rt rv-normal kt kt-rt)
BUILD=1
PHASES=()

usage() {
    cat <<EOF
Usage: $0 [options] [box-loss] [soak]

  -n RUNS       box-loss runs per case (default $RUNS)
  -b BUSY       busy loops while saturated (default $BUSY: two per core)
  -t SECONDS    soak length (default $SOAK_S)
  -B BOXES      soak cluster size (default $SOAK_BOXES)
  -V VIPS       soak: this many more IPv4 VIPs (default 0; issue 13 uses 198 for 200 in all)
  -s "SYSTEMS"  box-loss systems, a subset of "${BOX_LOSS_SYSTEMS[*]}" (default: all)
  --no-build    do not run cargo build --release (uses \$RAFTVIP or target/release/raftvip)
  -h, --help    this help

Needs root, ip, nft, haproxy, keepalived, python3, setpriv, chrt.
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
        -B) SOAK_BOXES=${2:?}; shift 2 ;;
        -V) export BED_EXTRA_VIPS=${2:?}; shift 2 ;;
        -s) read -ra BOX_LOSS_SYSTEMS <<<"${2:?}"; shift 2 ;;
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
trap bed_unsaturate EXIT

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
# The client, HAProxy and the backends stand for other machines and for a service that would
# have its own cores: they run SCHED_RR 1 (below raftvip's 10), so the probe measures the
# failover rather than how long the busy loops delay a python probe on the same 2 cores.
# raftvip and keepalived compete with the busy loops as configured.
PROBE=""
shelter() { # shelter PID...: SCHED_RR 1 for every thread of each
    local pid
    for pid in "$@"; do chrt -a -r -p 1 "$pid" >/dev/null; done
}
bl_start() { # bl_start SYSTEM
    local b
    for b in 1 2 3; do
        case $1 in
            rv-rt) RAFTVIP=$REAL_RAFTVIP bed_start_raftvip "$b" ;;
            rv-normal) RAFTVIP=$NORMAL_WRAPPER bed_start_raftvip "$b" ;;
            kt | kt-rt) ka_start_box "$b" tuned ;;
        esac
        [[ $1 != kt-rt ]] || ka_realtime "$b"
    done
}
# ka_realtime BOX: keepalived's processes in the box SCHED_RR 10, their children normal: what
# vrrp_rt_priority 10 does for its VRRP process (the bed's keepalived.cfg.in sets no priority,
# so keepalived 2.2.7 runs in the normal class there).
ka_realtime() {
    local pid
    for pid in $(ip netns pids "$(bed_ns "$1")"); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == keepalived ]] && chrt -a -r -R -p 10 "$pid" >/dev/null
    done
    return 0
}
bl_stop() { # bl_stop SYSTEM; then no box holds the VIP
    local b h
    for b in 1 2 3; do
        case $1 in
            rv-*) bed_kill_raftvip "$b" TERM ;;
            kt | kt-rt) ka_stop_box "$b" ;;
        esac
    done
    for h in $(bed_holders); do bed_vip_del "$h"; done
}
# bl_steady: one holder, and the client served for the last second.
bl_steady() {
    bed_wait_holder 20000 >/dev/null || return 1
    bed_probe_wait_ok "$PROBE" 5000 || return 1
    sleep 1
    [[ $(probe_failures "$PROBE" $(($(bed_now_ms) - 1000)) "$(bed_now_ms)") == 0 ]]
}
# bl_run SYSTEM RUN: saturate, take the holder's link down, measure, restore.
bl_run() {
    local system=$1 run=$2 h n fault moved out
    bed_wait 30000 bl_steady || { log "  $system run $run: no steady state"; return 1; }
    h=$(bed_holders)
    bed_saturate 30 "$BUSY"
    sleep 1
    fault=$(bed_now_ms)
    bed_link_down "$h"
    n=$(bed_wait_holder 15000 "" "$h") || n="?"
    moved=$(($(bed_now_ms) - fault))
    bed_probe_wait_ok "$PROBE" 10000 || true
    sleep 0.5   # later failures would count; every attempt up to now is written
    awk -v e="$(bed_now_ms)" '$1 <= e' "$PROBE" >"$BED_DIR/window.log"
    out=$(probe_outage "$BED_DIR/window.log" "$fault") || out="?"
    bed_unsaturate
    bed_link_up "$h"
    printf '%s\t%s\t%s\n' "$system" "$run" "$out" >>"$BED_DIR/box-loss.tsv"
    log "  $system run $run: box$h->box$n outage $out ms (VIP on box$n at +$moved ms), load $(loadavg)"
}
# bl_summary: min / median / p90 / max per system.
bl_summary() {
    local system
    for system in "${BOX_LOSS_SYSTEMS[@]}"; do
        awk -F'\t' -v s="$system" '$1 == s && $3 ~ /^[0-9]+$/ { a[++n] = $3 }
            END {
                if (!n) { printf "%-10s no runs\n", s; exit }
                for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
                med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                printf "%-10s runs %d  outage min %d / median %d / p90 %d / max %d ms\n", s, n, a[1], med, a[int(0.9 * n + 0.9999)], a[n]
            }' "$BED_DIR/box-loss.tsv"
    done
}
phase_box_loss() {
    command -v keepalived >/dev/null || die "keepalived is not installed (apt-get install keepalived)"
    (
        local b system run
        # shellcheck source-path=SCRIPTDIR source=../integration/netns/keepalived.sh
        source "$REPO/integration/netns/keepalived.sh"
        normal_wrapper
        bed_create 3
        trap 'bed_unsaturate; rm -f "$NORMAL_WRAPPER"; bed_cleanup' EXIT
        for b in 1 2 3; do bed_start_haproxy "$b"; done
        PROBE=$(bed_probe_start "$(bed_vip4)")
        # shellcheck disable=SC2046 # one pid per word
        for b in 1 2 3; do shelter "$(cat "$(bed_boxdir "$b")/backend.pid")" $(bed_haproxy_pids "$b"); done
        shelter "$(cat "$BED_DIR/probe.pid")"
        : >"$BED_DIR/box-loss.tsv"
        log "== box loss: $RUNS runs per system, $BUSY busy loops from 1 s before each fault, load $(loadavg)"
        for system in "${BOX_LOSS_SYSTEMS[@]}"; do
            bl_start "$system"
            for run in $(seq 1 "$RUNS"); do bl_run "$system" "$run" || break; done
            bl_stop "$system"
        done
        echo "box loss, $BUSY busy loops, $(date -u +%FT%TZ), raftvip $(git -C "$REPO" rev-parse --short HEAD), load $(loadavg):"
        bl_summary
    )
}

# ---------------------------------------------------------------- phase: soak
# counters_sum FIELD: FIELD of every box's status, summed.
counters_sum() {
    local b sum=0 v
    for b in $(bed_boxes); do v=$(bed_status "$b" "$1") && sum=$((sum + v)); done
    echo "$sum"
}
phase_soak() {
    (
        local b probe t0 t1 fr0 fr1 lc0 lc1 term0 term1 moves fails sched
        bed_create "$SOAK_BOXES"
        trap 'bed_unsaturate; bed_cleanup' EXIT
        for b in $(bed_boxes); do
            bed_start_haproxy "$b"
            # shellcheck disable=SC2046 # one pid per word
            shelter "$(cat "$(bed_boxdir "$b")/backend.pid")" $(bed_haproxy_pids "$b")
        done
        for b in $(bed_boxes); do bed_start_raftvip "$b"; done
        bed_wait_holder 10000 >/dev/null || bed_die "no single holder after start"
        probe=$(bed_probe_start "$(bed_vip4)")
        shelter "$(cat "$BED_DIR/probe.pid")"
        bed_probe_wait_ok "$probe" 5000 || bed_die "the client is not served"
        sleep 5
        sched=$(bed_status 1 scheduling.realtime_priority)
        fr0=$(counters_sum counters.fence_releases)
        lc0=$(counters_sum counters.leader_changes)
        term0=$(bed_status 1 term)
        log "== soak: ${SOAK_S} s, $SOAK_BOXES boxes, $((${BED_EXTRA_VIPS:-0} + 2)) VIPs, $BUSY busy loops, raftvip realtime_priority=$sched, load before $(loadavg)"
        bed_saturate $((SOAK_S + 5)) "$BUSY"
        t0=$(bed_now_ms)
        sleep "$SOAK_S"
        t1=$(bed_now_ms)
        log "   load at the end $(loadavg)"
        bed_unsaturate
        fr1=$(counters_sum counters.fence_releases)
        lc1=$(counters_sum counters.leader_changes)
        term1=$(bed_status 1 term)
        moves=$(bed_events "$(bed_vip4)" | awk -v f="$t0" -v t="$t1" '$1 >= f && $1 <= t' | wc -l)
        fails=$(probe_failures "$probe" "$t0" "$t1")
        echo "soak ${SOAK_S}s boxes=$SOAK_BOXES vips=$((${BED_EXTRA_VIPS:-0} + 2)) busy=$BUSY realtime_priority=$sched load=$(loadavg): vip_address_changes=$moves" \
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
