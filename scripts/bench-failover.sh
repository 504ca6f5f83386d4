#!/usr/bin/env bash
# Measures the client-observed outage of raftvip's failovers and handovers, and of keepalived's
# (at its defaults and tuned) in the same run, on one netns test bed (integration/netns/lib.sh):
#
#                         namespace $BED_ID-br
#              +---------------------------------------------+
#              |                    br0                      |
#              |   box1        box2        box3      client  |
#              +----|-----------|-----------|----------|-----+
#                 eth0        eth0        eth0       eth0
#              192.0.2.11  192.0.2.12  192.0.2.13  192.0.2.50   VIP 192.0.2.100
#              HAProxy :80 on every box (VIP and own address) -> python backend
#              raftvip, then keepalived (VRRP unicast between the boxes), one at a time
#              (-b 5: five boxes, box4 and box5 at .14 and .15)
#
# The client probes http://VIP:80/ every 10 ms (50 ms timeout, a new TCP connection each). For
# every run the outage is the time from the fault to the first success after the last failure;
# a run also counts its failed probes and checks that the client's neighbour entry for the VIP
# names the new holder's MAC once the client is served again. The bed is created
# once; each run faults the current holder, measures, restores (link up, heal, restart what
# was stopped) and waits for a steady state (one holder that the system agrees on, no VIP
# change and no failed probe for a second) before the next. The cases of a system take turns,
# run by run, so a change in the machine's load touches them all alike.
#
# It ends with one table per scenario, the systems side by side, and the goals checked
# (bedtool.py failover-summary), and writes results.tsv (every run), summary.md and
# failover.png (gnuplot: outage per scenario per system, bedtool.py failover-plot) to its
# results directory. Everything it creates on the bed (namespaces, processes, files under
# /run/raftvip-bed/) is removed by lib.sh's bed_cleanup trap on every exit path.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source-path=SCRIPTDIR source=../integration/netns/keepalived.sh
source "$REPO/integration/netns/keepalived.sh"

# Every case, in run order: NAME|what the fault is.
CASES=(
    "rv-box-loss|raftvip: the holder's link goes down"
    "rv-partition|raftvip: the holder is cut from its peers (nft), the client still reaches it"
    "rv-haproxy-kill|raftvip: HAProxy SIGKILLed on the holder"
    "rv-sigterm|raftvip: SIGTERM to raftvip on the holder (planned handover)"
    "rv-maintenance|raftvip: 'raftvip maintenance on' on the holder (planned handover)"
    "rv-transfer|raftvip: 'raftvip transfer --to any' on the holder (planned handover)"
    "ka-box-loss|keepalived defaults (VRRPv2, advert_int 1, check fall 2 rise 2): link down"
    "ka-haproxy-kill|keepalived defaults: HAProxy SIGKILLed on the MASTER"
    "ka-graceful|keepalived defaults: SIGTERM to keepalived on the MASTER"
    "ka-partition|keepalived defaults: the MASTER cut from its peers (two MASTERs)"
    "kt-box-loss|keepalived tuned (VRRPv3, advert_int 0.1, check fall 1 rise 1): link down"
    "kt-haproxy-kill|keepalived tuned: HAProxy SIGKILLed on the MASTER"
    "kt-graceful|keepalived tuned: SIGTERM to keepalived on the MASTER"
    "kt-partition|keepalived tuned: the MASTER cut from its peers (two MASTERs)"
)

usage() {
    cat <<EOF
Usage: $0 [options] [CASE_PATTERN...]

Measures client-observed outages on a netns bed of 3 boxes (-b: up to 7; HAProxy on every
box, a client probing the VIP every 10 ms) for raftvip and keepalived 2.2.7, and prints per
scenario the systems side by side: runs, min / median / p90 / max outage, failed probes,
whether the client's neighbour entry names the successor; then the goals, met or missed.
Renders the outage per scenario per system as a PNG. CASE_PATTERN: case names or shell
patterns ('rv-*', '*-partition'); default: every case. Needs root, ip, nft, haproxy,
keepalived, python3, gnuplot (apt-get install gnuplot-nox).

  -n RUNS        runs per case (default $RUNS, as the goals ask)
  -b BOXES       boxes in the cluster, 3 to 7 (default $BOXES; issue 12's goals hold for 5 too)
  -x PATTERN     leave out the cases PATTERN matches (repeatable)
  -P MS          how long a partition lasts before it heals (default $PARTITION_MS)
  -L LOAD        first wait (up to 10 min) for the 1-minute load average to drop below LOAD
  -o DIR         results directory: results.tsv (every run), summary.md, failover.png
                 (default target/bench/failover-DATE)
  -p FILE        also copy the PNG to FILE (e.g. docs/img/failover.png)
  -k DIR         keep the bed's files (logs, configs, probe log) in DIR after the run
  -l             list the cases and exit
  --no-build     do not run cargo build --release (uses \$RAFTVIP or target/release/raftvip)
  -h, --help     this help

RAFTVIP_HEARTBEAT_MS, RAFTVIP_ELECTION_TIMEOUT_MS (MIN,MAX) and RAFTVIP_FENCE_MS run raftvip
with another [timing] than its defaults (the goals are stated for the defaults).

Cases:
$(for c in "${CASES[@]}"; do printf '  %-16s %s\n' "${c%%|*}" "${c#*|}"; done)

Examples:
  sudo $0                          # everything, 20 runs per case (~20 min)
  sudo $0 -n 3 'rv-*'              # raftvip only, 3 runs per case
  sudo $0 -L 1.0 -p docs/img/failover.png   # the documented run (docs/benchmarks.md)
EOF
}

ARGS=("$@")
RUNS=20
BOXES=3
PARTITION_MS=5000
LOAD_MAX=""
OUT_DIR=""
PNG_COPY=""
BUILD=1
LIST=0
PATTERNS=()
EXCLUDES=()
while (($#)); do
    case $1 in
        -n) RUNS=${2:?}; shift 2 ;;
        -b) BOXES=${2:?}; shift 2 ;;
        -x) EXCLUDES+=("${2:?}"); shift 2 ;;
        -P) PARTITION_MS=${2:?}; shift 2 ;;
        -L) LOAD_MAX=${2:?}; shift 2 ;;
        -o) OUT_DIR=${2:?}; shift 2 ;;
        -p) PNG_COPY=${2:?}; shift 2 ;;
        -k) export BED_KEEP=${2:?}; shift 2 ;;
        -l) LIST=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; exit 2 ;;
        *) PATTERNS+=("$1"); shift ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number, not '$RUNS'"
[[ $BOXES =~ ^[3-7]$ ]] || die "-b wants 3 to 7 boxes (keepalived's priorities are laid out for 7), not '$BOXES'"
[[ $PARTITION_MS =~ ^[1-9][0-9]*$ ]] || die "-P wants milliseconds, not '$PARTITION_MS'"
if ((LIST)); then
    for c in "${CASES[@]}"; do printf '%-16s %s\n' "${c%%|*}" "${c#*|}"; done
    exit 0
fi

# matches NAME PATTERN...: NAME matches one of the shell patterns.
matches() {
    local name=$1 pat
    shift
    for pat; do
        # shellcheck disable=SC2053 # a pattern on purpose
        [[ $name == $pat ]] && return 0
    done
    return 1
}
SELECTED=()
for c in "${CASES[@]}"; do
    name=${c%%|*}
    ((${#PATTERNS[@]} == 0)) || matches "$name" "${PATTERNS[@]}" || continue
    ((${#EXCLUDES[@]} == 0)) || ! matches "$name" "${EXCLUDES[@]}" || continue
    SELECTED+=("$name")
done
((${#SELECTED[@]})) || die "no case matches: ${PATTERNS[*]} (-l lists them)"

# ---------------------------------------------------------------- timing constants
# Before a fault: one holder, no VIP change and no failed probe for this long. A second covers
# a rejoining raftvip node's possible extra election and keepalived's transitions.
STEADY_QUIET_MS=1000
# Restoring after a run may take this long (keepalived after a healed split may be slower).
STEADY_TIMEOUT_MS=60000
# After a fault: the client counts as recovered after this long without a failed probe.
RECOVERED_QUIET_MS=500
# A failover must put the VIP on another box within this (keepalived defaults: ~3.6 s worst).
MOVE_TIMEOUT_MS=15000

# ---------------------------------------------------------------- preconditions
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, nftables, raw sockets)"
command -v keepalived >/dev/null || die "keepalived is not installed (apt-get install keepalived)"
command -v gnuplot >/dev/null || die "gnuplot renders the plot and is not installed (apt-get install gnuplot-nox)"
use_raftvip "$BUILD"
if [[ " ${SELECTED[*]} " == *" rv-transfer "* ]] && ! "$RAFTVIP" transfer --help >/dev/null 2>&1; then
    die "rv-transfer needs the 'raftvip transfer' command, which $RAFTVIP does not have; leave the case out with -x rv-transfer"
fi
OUT_DIR=${OUT_DIR:-$REPO/target/bench/failover-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR"

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
wait_load() {
    local max=$1 deadline=$((SECONDS + 600)) l
    while :; do
        read -r l _ </proc/loadavg
        awk -v l="$l" -v m="$max" 'BEGIN { exit !(l < m) }' && { log "load average $(loadavg): go"; return; }
        ((SECONDS < deadline)) || { log "load average still $(loadavg) after 10 min: running anyway"; return; }
        log "load average $(loadavg), waiting for < $max"
        sleep 15
    done
}

# ---------------------------------------------------------------- results
RESULTS=""   # results.tsv: case metric run value
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# ---------------------------------------------------------------- probe helpers
PROBE=""
# window_outage FROM TO: the outage after FROM, counting only attempts up to TO.
window_outage() {
    awk -v e="$2" '$1 <= e' "$PROBE" >"$BED_DIR/window.log"
    probe_outage "$BED_DIR/window.log" "$1"
}
# probe_quiet MS [SINCE_MS]: no failed attempt in the last MS and a success in the last 100 ms
# (and at or after SINCE_MS). A line carries its attempt's start time but is written when the
# attempt ends (up to 50 ms later), so a success after SINCE proves the lines before it are in.
probe_quiet() {
    local now; now=$(bed_now_ms)
    tail -n 400 "$PROBE" | awk -v q=$((now - $1)) -v r=$((now - 100)) -v s="${2:-0}" '
        $2 == "fail" && $1 >= q { bad = 1 }  $2 == "ok" && $1 >= r && $1 >= s { ok = 1 }
        END { exit !(ok && !bad) }'
}
# longest_gap FROM TO: the longest time the client went unserved in [FROM, TO]: from the first
# failed attempt of a run of failures to the next success (0 if nothing failed).
longest_gap() {
    awk -v f="$1" -v t="$2" '$1 < f || $1 > t { next }
        $2 == "fail" && !s { s = $1 }  $2 == "ok" && s { if ($1 - s > m) m = $1 - s; s = 0 }
        END { if (s && t - s > m) m = t - s; print m + 0 }' "$PROBE"
}
# vip_quiet MS: no VIP address change on any box in the last MS.
vip_quiet() {
    local last; last=$(bed_events "$(bed_vip4)" | tail -n 1 | cut -d' ' -f1)
    [[ -z $last ]] || (($(bed_now_ms) - last >= $1))
}
# holder_other BOX: some box other than BOX holds the VIP (prints it).
holder_other() {
    local h
    for h in $(bed_holders); do [[ $h != "$1" ]] && { echo "$h"; return 0; }; done
    return 1
}
one_holder() { local h; h=$(bed_holders); [[ -n $h && $h != *" "* ]]; }

# ---------------------------------------------------------------- raftvip
rv_all_follow() { # every node names the same leader, and that is the holder
    local b l first=""
    for b in $(bed_boxes); do
        l=$(bed_status "$b" leader_id) || return 1
        [[ $l != null && ( -z $first || $l == "$first" ) ]] || return 1
        first=$l
    done
    [[ $(bed_holders) == "$(bed_box_of_node a "$first")" ]]
}
rv_start() {
    local b
    for b in $(bed_boxes); do bed_start_raftvip "$b" "$(timing_toml)"; done
}
rv_stop() {
    local b l
    l=$(bed_holders)
    # Followers first, the holder last: nothing hands over to a node about to stop.
    for b in $(bed_boxes); do [[ $b == "$l" ]] || bed_kill_raftvip "$b" TERM; done
    [[ -z $l ]] || bed_kill_raftvip "$l" TERM
    drop_vips
}
rv_steady_now() { one_holder && rv_all_follow && vip_quiet "$STEADY_QUIET_MS" && probe_quiet "$STEADY_QUIET_MS"; }
rv_maintenance_on() { bed_raftvip_cli "$1" maintenance on >/dev/null; }
rv_maintenance_off() { bed_raftvip_cli "$1" maintenance off >/dev/null; }
# The planned stops only signal (the handover is measured, not the process's exit); the
# restore waits for the exit before starting again.
rv_sigterm() { kill -TERM "$(bed_raftvip_pid "$1")"; }
rv_restart() { bed_kill_raftvip "$1" TERM; bed_start_raftvip "$1" "$(timing_toml)"; }
# A transfer leaves every node running: nothing to restore; the next run transfers again.
rv_transfer() { bed_raftvip_cli "$1" transfer --to any >/dev/null; }
rv_nothing() { :; }

# ---------------------------------------------------------------- keepalived
KA_MODE=""   # defaults | tuned
ka_start() {
    local b
    for b in $(bed_boxes); do ka_start_box "$b" "$KA_MODE"; done
}
ka_stop() {
    local b
    for b in $(bed_boxes); do ka_stop_box "$b"; done
    drop_vips
}
ka_steady_now() { one_holder && ka_agree && vip_quiet "$STEADY_QUIET_MS" && probe_quiet "$STEADY_QUIET_MS"; }
ka_graceful() { kill -TERM "$(cat "$(bed_boxdir "$1")/keepalived.pid")"; }
ka_restart() { ka_stop_box "$1"; ka_start_box "$1" "$KA_MODE"; }

# haproxy_start BOX: in a subshell, so HAProxy is not a job of this shell (no "Killed" notice
# when a case SIGKILLs it).
haproxy_start() { (bed_start_haproxy "$1") || die "cannot start HAProxy on box$1"; }

# Removes the VIPs wherever a stopped system left them (so the next one starts clean).
drop_vips() {
    local h
    for h in $(bed_holders); do bed_vip_del "$h"; done
    for h in $(bed_holders "$(bed_vip6)"); do bed_vip_del "$h" "$(bed_vip6)"; done
}

# ---------------------------------------------------------------- runs
SYS=""   # rv | ka
steady() {
    bed_wait "$STEADY_TIMEOUT_MS" "${SYS}_steady_now" && return 0
    log "  no steady state within $((STEADY_TIMEOUT_MS / 1000)) s: holders '$(bed_holders)'$(
        [[ $SYS == ka ]] && for b in $(bed_boxes); do printf ' box%s=%s' "$b" "$(ka_state "$b")"; done)"
    return 1
}

# move CASE RUN FAULT RESTORE: faults the holder, waits until another box holds the VIP and the
# client has been served for a while, records the outage, the failed probes and whether the
# client's neighbour entry for the VIP names the new holder's MAC, restores. A planned
# handover also records how long both boxes held the VIP (make-before-break's overlap; after
# an unplanned fault the old box may keep it unreachable, so that would say nothing).
move() {
    local case=$1 run=$2 fault_fn=$3 restore_fn=$4 h n fault moved end out fails mac neigh both=""
    h=$(bed_holders)
    fault=$(bed_now_ms)
    "$fault_fn" "$h"
    n=$(bed_wait_holder "$MOVE_TIMEOUT_MS" "" "$h") || n=""
    moved=$(bed_now_ms)
    if [[ -z $n ]]; then
        log "  $case run $run: the VIP did not move from box$h (holders '$(bed_holders)')"
        record "$case" failed "$run" 1
    elif ! bed_wait 10000 probe_quiet "$RECOVERED_QUIET_MS" $((fault + RECOVERED_QUIET_MS)); then
        log "  $case run $run: the client is not served again after box$h->box$n"
        record "$case" failed "$run" 1
    else
        # Attempts that started up to 100 ms ago have all been written (50 ms timeout).
        end=$(($(bed_now_ms) - 100))
        out=$(window_outage "$fault" "$end") || out=""
        fails=$(probe_failures "$PROBE" "$fault" "$end")
        # The holder now, not the first box seen with the VIP: a planned handover overlaps.
        n=$(bed_holders)
        mac=$(bed_client_neigh "$(bed_vip4)")
        neigh=0
        [[ -n $mac && $mac == "$(bed_box_mac "$n" 2>/dev/null)" ]] && neigh=1
        case $case in
            *-sigterm | *-maintenance | *-transfer | *-graceful)
                read -r _ both <<<"$(bed_overlap "$(bed_vip4)" "$fault" "$end")" ;;
        esac
        if [[ -n $out ]]; then
            record "$case" outage "$run" "$out"
            record "$case" failed_probes "$run" "$fails"
            record "$case" neigh_successor "$run" "$neigh"
            [[ -z $both ]] || record "$case" two_holders "$run" "$both"
            log "  $case run $run: box$h->box$n outage ${out} ms, $fails failed probes${both:+, two holders for $both ms} (VIP on box$n at +$((moved - fault)) ms)$(
                ((neigh)) || echo "; the client's neighbour entry names '${mac:-nothing}' (box$(bed_box_of_mac "$mac")), not box$n")"
        else
            record "$case" failed "$run" 1
        fi
    fi
    "$restore_fn" "$h"
}

# partition CASE RUN: cuts the holder from its peers for PARTITION_MS, then heals.
partition() {
    local case=$1 run=$2 h n cut heal end out gap drop both max heal_out heal_fails
    h=$(bed_holders)
    cut=$(bed_now_ms)
    bed_cut "$h" 2>/dev/null
    n=$(bed_wait "$MOVE_TIMEOUT_MS" holder_other "$h" >/dev/null && holder_other "$h") || n=""
    while (($(bed_now_ms) < cut + PARTITION_MS)); do sleep 0.05; done
    heal=$(bed_now_ms)
    bed_heal "$h"
    if [[ -z $n ]]; then
        log "  $case run $run: no other box took the VIP from cut box$h"
        record "$case" failed "$run" 1
        steady || die "cannot restore the bed after $case"
        return
    fi
    sleep 0.1  # every attempt started before the heal is written by now
    out=$(window_outage "$cut" "$heal") || out=""
    [[ -n $out ]] && record "$case" outage "$run" "$out"
    gap=$(longest_gap "$cut" "$heal")
    record "$case" longest_gap "$run" "$gap"
    drop=$(bed_events "$(bed_vip4)" | awk -v b="$h" -v c="$cut" '$1 >= c && $2 == b && $3 == "-" { print $1; exit }')
    if [[ -n $drop && $drop -le $heal ]]; then
        record "$case" old_holder_drop "$run" $((drop - cut)); drop="$((drop - cut)) ms"
    else
        drop="kept it until the heal"
    fi
    read -r max both <<<"$(bed_overlap "$(bed_vip4)" "$cut" "$heal")"
    record "$case" two_holders "$run" "$both"
    steady || die "no steady state after healing $case (run $run)"
    end=$(bed_now_ms)
    heal_out=$(window_outage "$heal" "$end") || heal_out=""
    heal_fails=$(probe_failures "$PROBE" "$heal" "$end")
    [[ -n $heal_out ]] && record "$case" after_heal "$run" "$heal_out"
    log "  $case run $run: box$h cut, box$n took over; outage ${out:-?} ms, longest gap ${gap} ms; old holder: $drop;" \
        "max holders $max, two holders for ${both} ms; after heal: outage ${heal_out:-?} ms ($heal_fails failed probes), holder box$(bed_holders)"
}

run_case() { # run_case CASE RUN
    local case=$1 run=$2
    steady || die "no steady state before $case run $run"
    case $case in
        rv-box-loss) move "$case" "$run" bed_link_down bed_link_up ;;
        rv-partition | ka-partition | kt-partition) partition "$case" "$run" ;;
        rv-haproxy-kill) move "$case" "$run" bed_kill_haproxy haproxy_start ;;
        rv-sigterm) move "$case" "$run" rv_sigterm rv_restart ;;
        rv-maintenance) move "$case" "$run" rv_maintenance_on rv_maintenance_off ;;
        rv-transfer) move "$case" "$run" rv_transfer rv_nothing ;;
        k?-box-loss) move "$case" "$run" bed_link_down bed_link_up ;;
        k?-haproxy-kill) move "$case" "$run" bed_kill_haproxy haproxy_start ;;
        k?-graceful) move "$case" "$run" ka_graceful ka_restart ;;
        *) die "unknown case $case" ;;
    esac
}

# run_system PREFIX: every selected case of one system, RUNS rounds.
run_system() {
    local prefix=$1 cases=() c run
    for c in "${SELECTED[@]}"; do [[ $c == "$prefix"-* ]] && cases+=("$c"); done
    ((${#cases[@]})) || return 0
    case $prefix in
        rv) SYS=rv; log "== raftvip ($RAFTVIP)"; rv_start ;;
        ka) SYS=ka; KA_MODE=defaults; log "== keepalived, defaults"; ka_start ;;
        kt) SYS=ka; KA_MODE=tuned; log "== keepalived, tuned"; ka_start ;;
    esac
    LOADS+=("$prefix start $(loadavg)")
    for run in $(seq 1 "$RUNS"); do
        for c in "${cases[@]}"; do run_case "$c" "$run"; done
    done
    LOADS+=("$prefix end $(loadavg)")
    steady || log "  (not steady at the end of $prefix)"
    case $prefix in
        rv) rv_stop ;;
        ka | kt) ka_stop ;;
    esac
}

# ---------------------------------------------------------------- main
main() {
    [[ -z $LOAD_MAX ]] || wait_load "$LOAD_MAX"
    LOADS=("before $(loadavg)")
    local t0=$SECONDS
    bed_create "$BOXES"
    RESULTS=$OUT_DIR/results.tsv
    : >"$RESULTS"
    local b
    for b in $(bed_boxes); do haproxy_start "$b"; done
    PROBE=$(bed_probe_start "$(bed_vip4)")
    local prefix
    for prefix in rv ka kt; do run_system "$prefix"; done
    LOADS+=("after $(loadavg)")

    local out machine
    machine="$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    out=$(
        echo "$("$RAFTVIP" --version 2>/dev/null || echo 'raftvip ?'), $(keepalived --version 2>&1 | head -n 1), $(haproxy -v | head -n 1 | cut -d' ' -f1-3)"
        echo "$RUNS runs per case, $BOXES boxes, partitions last $PARTITION_MS ms; $(date -u +%FT%TZ), $((SECONDS - t0)) s; $machine"
        local loads; loads=$(IFS=';'; echo "${LOADS[*]}")
        echo "load average (1/5/15 min): ${loads//;/; }"
        echo "command: $SCRIPT_NAME.sh ${ARGS[*]}"
        echo "raftvip timing: $(timing_line)$(timing_is_default && echo ' (the defaults)' || echo ' (not the defaults the goals are stated for)')"
        echo
        python3 "$BED_TOOL" failover-summary "$RESULTS"
    )
    printf '\n%s\n' "$out"
    printf '%s\n' "$out" >"$OUT_DIR/summary.md"
    python3 "$BED_TOOL" failover-plot "$RESULTS" "$OUT_DIR/failover.png" \
        "$RUNS runs per case, $BOXES boxes; $(date -u '+%F %H:%M') UTC; $machine; load ${LOADS[0]#before }" ||
        die "gnuplot could not render $OUT_DIR/failover.png"
    [[ -z $PNG_COPY ]] || cp "$OUT_DIR/failover.png" "$PNG_COPY"
    log "every run, the summary and the plot: $OUT_DIR/{results.tsv,summary.md,failover.png}${PNG_COPY:+; plot copied to $PNG_COPY}"
}

main
