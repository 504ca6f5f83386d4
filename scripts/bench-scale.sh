#!/usr/bin/env bash
# Scale (issue 12): many clusters on one segment, and bigger clusters. On the netns bed
# (integration/netns/lib.sh), every box a namespace on one bridge, with real HAProxy:
#
#   clusters  C independent 3-box raftvip clusters (own name, secret, port and VIP) on one
#             segment, the client probing every cluster's VIP every 10 ms. Each run takes one
#             cluster's holder off the segment (link down) and reports that cluster's
#             client-observed outage and the failed probes of every other cluster from the
#             fault until the bed is whole again (goal: 0), and VIP changes there (kernel
#             truth from the address monitors). The faulted cluster rotates. A control window
#             without faults comes first: failures there are the machine's, not a neighbour's.
#
#               namespace $BED_ID-br: br0
#               box1 box2 box3 | box4 box5 box6 | ... | box28 box29 box30 | client
#               cluster c1      cluster c2              cluster c10
#               192.0.2.101     192.0.2.102             192.0.2.110 (+ 2001:db8::a:K)
#
#   boxes     one cluster of N boxes (3 and 5 by default): box loss (link down) and HAProxy
#             SIGKILL on the holder, RUNS runs each, client-observed outage.
#
# To keep 30 boxes feasible on a small machine HAProxy serves the "application" itself (a
# second frontend on 127.0.0.1:8080 that answers with the box's name, checked every 100 ms
# like the bed's python backend), so the bed runs no python backends; the client runs one probe
# process per cluster. raftvip runs with its defaults. Every figure is printed with the load
# average, the machine's CPU count and the raftvip processes' own CPU use.
#
# Everything it creates belongs to the bed and is removed by lib.sh's cleanup trap.

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: $0 [options] clusters|boxes

  -c COUNT       clusters in 'clusters' mode (default $CLUSTERS; 3 boxes each, 1..13)
  -b "3 5"       box counts in 'boxes' mode (default "$BOX_COUNTS")
  -n RUNS        runs (clusters: faults; boxes: per case and box count; default $RUNS)
  -q SECONDS     clusters: a control window without faults first (default $CONTROL_S)
  -o FILE        also append the result lines to FILE
  -k DIR         keep the bed's files (logs, configs, probe logs) in DIR
  --no-build     do not run cargo build --release (uses \$RAFTVIP or target/release/raftvip)
Needs root, ip, nft, haproxy, python3, curl, jq.

Examples:
  sudo $0 -n 10 clusters        # 10 clusters x 3 boxes, 10 faults
  sudo $0 -n 10 -b "3 5" boxes  # box loss and HAProxy kill, 3 and 5 boxes, 10 runs each
EOF
}

CLUSTERS=10
BOX_COUNTS="3 5"
RUNS=5
CONTROL_S=30
OUT=""
BUILD=1
MODE=""
while (($#)); do
    case $1 in
        -c) CLUSTERS=${2:?}; shift 2 ;;
        -b) BOX_COUNTS=${2:?}; shift 2 ;;
        -n) RUNS=${2:?}; shift 2 ;;
        -q) CONTROL_S=${2:?}; shift 2 ;;
        -o) OUT=${2:?}; shift 2 ;;
        -k) export BED_KEEP=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        clusters | boxes) MODE=$1; shift ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ -n $MODE ]] || { usage >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number, not '$RUNS'"
[[ $CONTROL_S =~ ^[0-9]+$ ]] || die "-q wants seconds, not '$CONTROL_S'"
if ! [[ $CLUSTERS =~ ^[0-9]+$ ]] || ((CLUSTERS < 2 || CLUSTERS > 13)); then
    die "-c wants 2..13 clusters (3 boxes each, 39 at most on the bed), not '$CLUSTERS'"
fi
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, nftables, raw sockets)"
use_raftvip "$BUILD"

# A cluster counts as whole again once its client saw no failure for this long.
QUIET_MS=1000
# How long a failover or a restore may take before the run counts as failed.
SETTLE_TIMEOUT_MS=20000

say() {
    printf '%s\n' "$*"
    [[ -z $OUT ]] || printf '%s\n' "$*" >>"$OUT"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------- the lighter HAProxy
# lib.sh starts HAProxy from bed_haproxy_template and a python backend first; here the template
# has HAProxy answer on the backend's address itself, so no backend process is needed.
SCALE_TEMPLATE=""
bed_haproxy_template() { echo "$SCALE_TEMPLATE"; }
bed_start_backend() { :; }
write_template() {
    SCALE_TEMPLATE=$BED_DIR/haproxy-scale.cfg.in
    cat >"$SCALE_TEMPLATE" <<'EOF'
global
    stats socket @STATS_SOCKET@ mode 600 level admin
    pidfile @PIDFILE@

defaults
    mode http
    timeout connect 500ms
    timeout client 5s
    timeout server 5s

frontend fe_test
    bind @BIND@
    default_backend be_test

# The application: HAProxy itself, answering with the box's name (SCALE_BOX in its environment).
frontend fe_app
    bind @SERVER@
    http-request return status 200 content-type text/plain string "${SCALE_BOX}"

backend be_test
    option httpchk GET /
    default-server inter 100ms fall 2 rise 2
    server s1 @SERVER@ check
EOF
}
# start_haproxy BOX: in a subshell, so HAProxy is no job of this shell (no "Killed" notice).
start_haproxy() { (export SCALE_BOX="box$1"; bed_start_haproxy "$1") || die "cannot start HAProxy on box$1"; }

# ---------------------------------------------------------------- helpers
# cluster_holder CLUSTER: the one box of CLUSTER holding its VIP (fails unless exactly one).
cluster_holder() {
    local h; h=$(bed_holders "$(bed_vip4 "$1")")
    [[ -n $h && $h != *" "* ]] && echo "$h"
}
# probe_quiet FILE MS [SINCE_MS]: no failed attempt in the last MS and a success in the last
# 100 ms (and at or after SINCE_MS). A line carries its attempt's start time but is written
# when the attempt ends (up to 50 ms later), so a success after SINCE proves the lines before
# it are in: a fault that cost no probe at all still gets a window that covers it.
probe_quiet() {
    local now; now=$(bed_now_ms)
    tail -n 300 "$1" | awk -v q=$((now - $2)) -v r=$((now - 100)) -v s="${3:-0}" '
        $2 == "fail" && $1 >= q { bad = 1 }  $2 == "ok" && $1 >= r && $1 >= s { ok = 1 }
        END { exit !(ok && !bad) }'
}
# cluster_served CLUSTER: one holder and the client is served (cheap: ip and awk).
cluster_served() {
    cluster_holder "$1" >/dev/null && probe_quiet "$BED_DIR/probe-$1.log" "$QUIET_MS"
}
# leader_of BOX: the leader BOX names (curl and jq: bed_status's python would cost ~50 ms of CPU
# per request, 30 per check, on the machine under test).
leader_of() {
    bed_exec "$1" curl -sf -m 1 "$(bed_status_url "$1")/v1/status" | jq -r .leader_id
}
# cluster_agrees CLUSTER: every member names the same leader.
cluster_agrees() {
    local b l first=""
    for b in $(bed_boxes "$1"); do
        l=$(leader_of "$b") || return 1
        [[ $l != null && ( -z $first || $l == "$first" ) ]] || return 1
        first=$l
    done
}
all_whole() {
    local cl
    for cl in "$@"; do cluster_served "$cl" || return 1; done
    for cl in "$@"; do cluster_agrees "$cl" || return 1; done
}
# wait_whole TIMEOUT_MS CLUSTER...: polls all_whole every 200 ms (not bed_wait's 10 ms: 30
# status requests every 10 ms would load the machine under test).
wait_whole() {
    local deadline=$(($(bed_now_ms) + $1)); shift
    until all_whole "$@"; do
        (($(bed_now_ms) < deadline)) || return 1
        sleep 0.2
    done
}
# stats VALUES...: "min / median / p90 / max (n runs)" (nearest-rank p90).
stats() {
    (($#)) || { echo "-"; return; }
    printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END {
        med = (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2 + 0.5)
        p90 = int(0.9 * NR + 0.9999)
        printf "%d / %d / %d / %d ms (%d runs)", a[1], med, a[p90], a[NR], NR }'
}
# fail_reasons FILE FROM_MS TO_MS: why the client's attempts failed in the window ("timeout x2").
fail_reasons() {
    awk -v f="$2" -v t="$3" '$1 >= f && $1 <= t && $2 == "fail" { n[$3]++ }
        END { for (r in n) printf "%s%s x%d", (s++ ? " " : ""), r, n[r] }' "$1"
}
# vip_changes VIP FROM_MS TO_MS: adds and removals of VIP on any box in the window (kernel truth).
vip_changes() {
    bed_events "$1" | awk -v f="$2" -v t="$3" '$1 >= f && $1 <= t { n++ } END { print n + 0 }'
}
# raftvip_cpu_ticks: CPU used so far by every raftvip of the bed (clock ticks).
raftvip_cpu_ticks() {
    local b total=0 pid
    for b in $(seq 1 "$BED_N"); do
        pid=$(bed_raftvip_pid "$b" 2>/dev/null) || continue
        total=$((total + $(bed_pid_cpu_ticks "$pid" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
# cpu_share TICKS SECONDS: TICKS as a share of one core over SECONDS.
cpu_share() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v s="$2" 'BEGIN { printf "%.1f%%", 100 * t / hz / s }'; }

# slow_wait TIMEOUT_MS COMMAND...: bed_wait polling every 50 ms instead of 10: the outage comes
# from the probe log, not from this poll, and each poll spawns processes on the machine under
# test (ip for every member), which at 10 ms cost a good part of a core during every failover.
slow_wait() {
    local deadline=$(($(bed_now_ms) + $1)); shift
    until "$@" 2>/dev/null; do
        (($(bed_now_ms) < deadline)) || return 1
        sleep 0.05
    done
}
# holder_other_than CLUSTER BOX: the one holder of CLUSTER's VIP, if it is not BOX (prints it).
holder_other_than() {
    local h; h=$(cluster_holder "$1") && [[ $h != "$2" ]] && echo "$h"
}
# fault_and_restore CLUSTER FAULT RESTORE: faults CLUSTER's holder, waits for another member to
# hold the VIP and the client to be served; prints "OUTAGE_MS HOLDER NEW FAULT_MS" (OUTAGE "?" if
# it did not recover); then restores the faulted box and waits until the cluster is whole.
fault_and_restore() {
    local cl=$1 fault_fn=$2 restore_fn=$3 h n fault end out="?"
    h=$(cluster_holder "$cl")
    fault=$(bed_now_ms)
    "$fault_fn" "$h"
    if n=$(slow_wait "$SETTLE_TIMEOUT_MS" holder_other_than "$cl" "$h") &&
        slow_wait "$SETTLE_TIMEOUT_MS" probe_quiet "$BED_DIR/probe-$cl.log" "$QUIET_MS" $((fault + QUIET_MS)); then
        # Attempts that started up to 100 ms ago have all been written (50 ms timeout).
        end=$(($(bed_now_ms) - 100))
        awk -v e="$end" '$1 <= e' "$BED_DIR/probe-$cl.log" >"$BED_DIR/window.log"
        out=$(probe_outage "$BED_DIR/window.log" "$fault") || out="?"
    fi
    "$restore_fn" "$h"
    echo "$out $h ${n:-none} $fault"
}

# ---------------------------------------------------------------- clusters
run_clusters() {
    local k b names=() cl run outages=() others=() vip_moves=() line out h n fault restored f sum worst moves
    local t0 c0 c1 started
    started=$SECONDS
    bed_create $((3 * CLUSTERS)) 2>/dev/null
    write_template
    for ((k = 1; k <= CLUSTERS; k++)); do
        cl=c$k
        names+=("$cl")
        bed_cluster "$cl" "192.0.2.$((100 + k))" "2001:db8::a:$k" $((7480 + k)) $((3 * k - 2)) $((3 * k - 1)) $((3 * k))
    done
    for b in $(seq 1 "$BED_N"); do start_haproxy "$b"; done
    for b in $(seq 1 "$BED_N"); do bed_start_raftvip "$b"; done
    for cl in "${names[@]}"; do bed_probe_start "$(bed_vip4 "$cl")" "probe-$cl" >/dev/null; done
    wait_whole 60000 "${names[@]}" || die "the $CLUSTERS clusters are not whole within 60 s"
    log "$CLUSTERS clusters whole after $((SECONDS - started)) s; load $(loadavg)"
    t0=$(bed_now_ms); c0=$(raftvip_cpu_ticks)
    # The control: as long without any fault, the same counts for every cluster. Failures here
    # come from the machine (load), not from another cluster's failover.
    sleep "$CONTROL_S"
    sum=0; worst=""; moves=0
    for f in "${names[@]}"; do
        k=$(probe_failures "$BED_DIR/probe-$f.log" "$t0" $((t0 + CONTROL_S * 1000)))
        sum=$((sum + k))
        ((k == 0)) || worst+=" $f:$k($(fail_reasons "$BED_DIR/probe-$f.log" "$t0" $((t0 + CONTROL_S * 1000))))"
        moves=$((moves + $(vip_changes "$(bed_vip4 "$f")" "$t0" $((t0 + CONTROL_S * 1000)))))
    done
    say "clusters=$CLUSTERS control (no fault, ${CONTROL_S} s): failed_probes=$sum${worst:+ (${worst# })}" \
        "vip_changes=$moves raftvip_cpu=$(cpu_share $(($(raftvip_cpu_ticks) - c0)) "$CONTROL_S") load=$(loadavg)"
    for run in $(seq 1 "$RUNS"); do
        cl=${names[$(((run - 1) % CLUSTERS))]}
        read -r out h n fault <<<"$(fault_and_restore "$cl" bed_link_down bed_link_up)"
        wait_whole "$SETTLE_TIMEOUT_MS" "${names[@]}" || log "  run $run: not whole again within $((SETTLE_TIMEOUT_MS / 1000)) s"
        restored=$(($(bed_now_ms) - 100))
        sum=0; worst=""; moves=0
        for f in "${names[@]}"; do
            [[ $f == "$cl" ]] && continue
            k=$(probe_failures "$BED_DIR/probe-$f.log" "$fault" "$restored")
            sum=$((sum + k))
            ((k == 0)) || worst+=" $f:$k($(fail_reasons "$BED_DIR/probe-$f.log" "$fault" "$restored"))"
            moves=$((moves + $(vip_changes "$(bed_vip4 "$f")" "$fault" "$restored")))
        done
        vip_moves+=("$moves")
        [[ $out == "?" ]] || outages+=("$out")
        others+=("$sum")
        say "clusters=$CLUSTERS run=$run faulted=$cl box$h->box$n outage_ms=$out" \
            "other_clusters_failed_probes=$sum${worst:+ (${worst# })} other_clusters_vip_changes=$moves" \
            "window_ms=$((restored - fault)) load=$(loadavg)"
    done
    c1=$(raftvip_cpu_ticks)
    line="clusters=$CLUSTERS boxes=$BED_N runs=$RUNS failed-over outage $(stats "${outages[@]}")"
    line+="; failed probes of the other $((CLUSTERS - 1)) clusters per run: $(printf '%s ' "${others[@]}")"
    line+="(total $(IFS=+; echo $((${others[*]}))))"
    line+="; VIP changes in the other clusters: $(IFS=+; echo $((${vip_moves[*]})))"
    line+="; all $BED_N raftvip together used $(cpu_share $((c1 - c0)) $((($(bed_now_ms) - t0) / 1000))) of one core"
    line+="; $(nproc) CPUs, load $(loadavg), $((SECONDS - started)) s"
    say "$line"
}

# ---------------------------------------------------------------- boxes
kill_haproxy() { bed_kill_haproxy "$1" KILL; }
run_boxes() {
    local nboxes=$1 b run case out h n fault started loss=() kill=() c0 c1 t0
    started=$SECONDS
    bed_create "$nboxes" 2>/dev/null
    write_template
    for b in $(seq 1 "$nboxes"); do start_haproxy "$b"; done
    for b in $(seq 1 "$nboxes"); do bed_start_raftvip "$b"; done
    bed_probe_start "$(bed_vip4 a)" probe-a >/dev/null
    wait_whole 60000 a || die "the $nboxes-box cluster is not whole within 60 s"
    t0=$(bed_now_ms); c0=$(raftvip_cpu_ticks)
    for run in $(seq 1 "$RUNS"); do
        for case in box-loss haproxy-kill; do
            case $case in
                box-loss) read -r out h n fault <<<"$(fault_and_restore a bed_link_down bed_link_up)" ;;
                haproxy-kill) read -r out h n fault <<<"$(fault_and_restore a kill_haproxy start_haproxy)" ;;
            esac
            wait_whole "$SETTLE_TIMEOUT_MS" a || log "  $case run $run: not whole again within $((SETTLE_TIMEOUT_MS / 1000)) s"
            log "  boxes=$nboxes $case run $run: box$h->box$n outage ${out} ms, load $(loadavg)"
            [[ $out == "?" ]] && continue
            case $case in
                box-loss) loss+=("$out") ;;
                haproxy-kill) kill+=("$out") ;;
            esac
        done
    done
    c1=$(raftvip_cpu_ticks)
    say "boxes=$nboxes box_loss outage $(stats "${loss[@]}"); haproxy_kill outage $(stats "${kill[@]}");" \
        "the $nboxes raftvip together used $(cpu_share $((c1 - c0)) $((($(bed_now_ms) - t0) / 1000))) of one core;" \
        "$(nproc) CPUs, load $(loadavg), $((SECONDS - started)) s"
}

say "# bench-scale $MODE $(date -u +%FT%TZ) raftvip=$(git -C "$REPO" rev-parse --short HEAD) ($RAFTVIP) runs=$RUNS load=$(loadavg)"
case $MODE in
    clusters) run_clusters ;;
    boxes)
        for nboxes in $BOX_COUNTS; do
            # One bed per box count: each in its own subshell, cleaned up by its own trap.
            (run_boxes "$nboxes") || say "boxes=$nboxes: the bed failed (exit $?)"
        done
        ;;
esac
