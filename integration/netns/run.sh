#!/usr/bin/env bash
# Runs raftvip's netns scenarios, each in a fresh bed (lib.sh), and reports one line each.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
# shellcheck source-path=SCRIPTDIR source=ops.sh
source "$HERE/ops.sh"

# A scenario that runs longer than this is killed (its bed is still cleaned up).
SCENARIO_TIMEOUT_S=${SCENARIO_TIMEOUT_S:-90}
# Crash failover must complete (client served again) within this; typical is ~100-300 ms.
MAX_FAILOVER_OUTAGE_MS=${MAX_FAILOVER_OUTAGE_MS:-2000}
# start_all_at_once: how many new clusters start. Before the fix, 1 in ~7 CI runs of the one
# scenario that started three boxes together failed.
START_ALL_RUNS=${START_ALL_RUNS:-8}
# A planned handover (maintenance, SIGTERM) must be quicker than a crash failover.
MAX_HANDOVER_OUTAGE_MS=${MAX_HANDOVER_OUTAGE_MS:-1000}
# The old holder must have dropped the VIP this long after being cut off (fence 80 ms + margin).
FENCE_ASSERT_MS=500
# many_vips: how long the settled cluster must keep its leader (issue 13 asks 30 s).
MANY_VIPS_STABLE_S=${MANY_VIPS_STABLE_S:-30}
# How many transfers transfer_any_five makes. With 5 voters the target's first election was
# refused by the other followers' leases (until they ended their lease for a handover), and when
# they ran out another follower could stand and win first. Before the transfer accepted that
# winner for `any`, the command failed then ("node N did not take over"): in both 5-box
# bench-failover runs of 2026-11-29, within three transfers.
TRANSFER_FIVE_RUNS=${TRANSFER_FIVE_RUNS:-8}
# maintenance_back_to_back: how many rounds.
MAINTENANCE_RUNS=${MAINTENANCE_RUNS:-3}
# A hand-deleted VIP must be back within this.
READD_MS=100

usage() {
    cat <<EOF
Usage: $0 [-l] [-k DIR] [SCENARIO...]

Runs each scenario (all by default; a name or a shell pattern such as 'failover_*') in its
own network-namespace bed and prints "ok NAME [numbers]" or "FAIL NAME: why", then
"N passed, N failed". Exits 1 if any failed. Needs root, ip, haproxy, nft and python3 —
without them it fails, it never skips.

  -l        list the scenarios and exit
  -k DIR    keep logs and bed files of failed scenarios in DIR (default: a temp dir,
            printed when something failed)
  -h        this help

Environment: RAFTVIP (binary; default: newest of target/release, target/debug),
SCENARIO_TIMEOUT_S (${SCENARIO_TIMEOUT_S}), BED_RAFTVIP_LOG (raftvip's RAFTVIP_LOG; default:
the binary's own), BED_VERBOSE=1.
EOF
}

# name|what it checks (the order is the run order)
SCENARIOS=(
    "bed_selftest|the bed: HAProxy answers the client on box addresses, nft cut, probe + outage maths"
    "bed_raft_only|Raft-only raftvip clusters on the bed: one leader, re-election on kill and on cut"
    "start_one_holder|after start exactly one box holds the VIP; the client's neighbour entry has its MAC"
    "start_all_at_once|a new cluster's three boxes start at the same moment -> one box binds the VIP, once (no leader deposed at birth; START_ALL_RUNS runs)"
    "failover_link_down|holder's link goes down -> another box holds it, client served again"
    "failover_crash|holder's raftvip SIGKILLed + VIP removed -> another box holds it"
    "fence_cut|holder cut from peers (not client) -> drops the VIP within the fence; never two holders"
    "heartbeats_udp_filtered|UDP to the followers' peer port dropped (TCP open) -> heartbeats fall back to HTTP: the leader and the VIP stay put, the fallbacks are counted and logged"
    "readd_deleted_vip|VIP deleted by hand on the holder -> back within ${READD_MS} ms"
    "ipv6_vip|IPv6 VIP: holder, client neighbour entry via unsolicited NA, failover"
    "two_clusters|two clusters on one segment (same node ids) do not disturb each other"
    "stale_vip_restart|raftvip restarted on a follower with a stale VIP removes it"
    "witness_pair|two boxes + witness: losing either box leaves the VIP on the other"
    "rejoin_no_preempt|a follower cut off for 2 s rejoins -> the VIP stays, the term does not move (pre-vote)"
    "haproxy_kill|HAProxy SIGKILLed on the holder -> the VIP moves"
    "haproxy_kill_five|5 boxes: HAProxy SIGKILLed on the holder -> the VIP moves to the box it asked, elected in the next term (no wait for the other voters' leases)"
    "backend_down|required backend DOWN on the holder -> the VIP moves"
    "haproxy_reload|10 master-worker reloads on the holder -> VIP never moves, probe never fails"
    "haproxy_restart_old_holder|HAProxy restarted on the old holder -> the VIP stays"
    "unhealthy_follower|an unhealthy follower never leads, even as the only voter left"
    "all_unhealthy|all boxes unhealthy -> no holder; one recovers -> it holds"
    "maintenance_handoff|raftvip maintenance on (holder) -> handoff"
    "sigterm_handoff|SIGTERM on the holder's raftvip -> handoff"
    "maintenance_back_to_back|maintenance on for the holder and its successor, then off for both, back to back -> every command exits 0 and one box holds within 5 s (it once stayed leaderless for good; MAINTENANCE_RUNS runs)"
    "stale_vip_bad_store|a stale VIP is removed even when the store cannot be opened (run exits non-zero)"
    "release_command|raftvip release removes a bound VIP and exits 0, again 0 when nothing is bound"
    "store_error_fatal|the holder's store disk fails -> its raftvip releases the VIP and exits non-zero at once"
    "ops_cluster_status|scripts/cluster-status.sh: table names the holder; exit 0 healthy, 1 a node down, 2 no holder"
    "ops_drain|scripts/drain.sh on moves the VIP and waits for HAProxy; refuses to drain the last candidate; off"
    "ops_failover_drill|scripts/failover-drill.sh: handover measured by a client probe; names old and new holder"
    "ops_rolling_upgrade|scripts/rolling-upgrade.sh: stops at a failing restart; then upgrades all, holder last"
    "ops_import_keepalived|keepalived.conf of each box -> import-keepalived -> check-config -> one holder, cluster healthy"
    "witness_routed|two boxes + a witness on another subnet behind a router: failover both ways, no two holders when cut"
    "holder_killed_lease|holder's raftvip SIGKILLed, VIP left in place -> the kernel drops it; no second holder 1.5 s after"
    "holder_frozen_lease|holder's raftvip SIGSTOPped -> the kernel drops the VIP; no second holder 1.5 s after, none on resume"
    "many_vips|200 more VIPs: one box holds all, no leader change for ${MANY_VIPS_STABLE_S} s, box loss moves all"
    "vip_interface_down|VIP interface (a second one, vip0) down on the holder -> it hands over, stands again when up; a box without vip0 never leads"
    "keepalived_notify|a stock keepalived notify script on every box: BACKUP at start, MASTER on the new holder and FAULT on the old when HAProxy dies, STOP on SIGTERM; term-guard refuses a stale MASTER"
    "reload|on the holder, same pid: raftvip reload removes a VIP (released), SIGHUP adds it back (bound <= 1 s, served by HAProxy); a broken file and a restart-only change are rejected naming the problem, nothing changes; role = witness hands over"
    "mbb_sigterm|make-before-break: SIGTERM on the holder -> 0 failed client probes, the client's neighbour entry names the successor (MBB_RUNS runs)"
    "mbb_maintenance|make-before-break: maintenance on (holder) -> 0 failed client probes, neighbour entry = successor, overlap counted (MBB_RUNS runs)"
    "mbb_transfer|make-before-break: raftvip transfer --to ID, run on a follower -> that node holds, 0 failed client probes, neighbour entry = it (MBB_RUNS runs)"
    "transfer_any_five|5 boxes: raftvip transfer --to any, ${TRANSFER_FIVE_RUNS} times in a row, each exits 0 naming the node that now holds the VIP, the one asked, elected in the next term; then as often --to the highest-numbered follower, which must win the same way though node 1 is first in the stagger"
    "transfer_refused|raftvip transfer refuses, naming why, a witness, a node in maintenance, an unhealthy one, an unreachable one, and 'any' when none can lead; the VIP never moves"
    "realtime_threads|[process]: runtime and VIP threads SCHED_RR at the configured priority, the blocking pool one below, other threads normal, memory locked; off with 0 / false"
    "membership_change|a 4th box joins (learner -> voter) and the holder is removed while the client probes: no failed probe on the add, one planned handover on the removal, each reported by raftvip reload; the removed box says so, also after a restart; a change that cannot be made fails the reload; status shows the file's differences"
)

# ---- helpers for scenarios (run inside the scenario's own process) ----

fail() { printf '%s\n' "$*" >"$RESULT_FILE"; exit 1; }
note() { printf '%s ' "$*" >>"$NOTES_FILE"; }

# start_cluster_boxes [CLUSTER] [EXTRA_TOML]: HAProxy on every non-witness box of the cluster,
# raftvip on all, and waits until every node follows the same leader.
start_cluster_boxes() {
    local cl=${1:-a} b extra=${2:-}
    for b in $(bed_boxes "$cl"); do
        [[ -n ${BED_WITNESS[$b]:-} ]] || bed_start_haproxy "$b"
    done
    for b in $(bed_boxes "$cl"); do bed_start_raftvip "$b" "$extra"; done
    bed_wait 10000 all_follow "$cl" || fail "cluster $cl did not agree on a leader within 10 s"
}
all_follow() { # every node of the cluster names the same leader
    local b l first=""
    for b in $(bed_boxes "${1:-a}"); do
        l=$(bed_status "$b" leader_id) || return 1
        [[ $l != null && ( -z $first || $l == "$first" ) ]] || return 1
        first=$l
    done
}
setup() { # setup N [EXTRA_TOML]: a bed of N boxes running cluster a (start_cluster_boxes)
    bed_create "$1"
    start_cluster_boxes a "${2:-}"
}
holder() { # holder [VIP] [NOT_BOX] [TIMEOUT_MS]: exactly one holder, or fail
    local h
    h=$(bed_wait_holder "${3:-5000}" "${1:-$(bed_vip4 a)}" "${2:-}") ||
        fail "no single holder of ${1:-$(bed_vip4 a)} (holders now: '$(bed_holders "${1:-$(bed_vip4 a)}")')"
    echo "$h"
}
# wait_new_holder OLD [VIP]: prints the new holder once exactly one box other than OLD holds it.
wait_new_holder() {
    local old=$1 vip=${2:-$(bed_vip4 a)} h
    h=$(bed_wait_holder 5000 "$vip" "$old") ||
        fail "the VIP did not move from box$old (holders: '$(bed_holders "$vip")')"
    echo "$h"
}
# served_again PROBE FAULT_MS MAX_MS: the client is served again; notes and checks the outage.
served_again() {
    local probe=$1 fault=$2 max=$3 out
    bed_probe_wait_ok "$probe" 5000 || fail "the client is not served after the fault"
    sleep 0.2  # a few more attempts, so "the last failure" is really the last
    out=$(probe_outage "$probe" "$fault") || fail "outage: $out"
    note "outage=${out}ms"
    ((out <= max)) || fail "client-observed outage ${out} ms > ${max} ms"
}
# stays_for MS VIP BOX: BOX keeps VIP (and nobody else gets it) for MS.
stays_for() {
    local ms=$1 vip=$2 box=$3 deadline
    deadline=$(($(bed_now_ms) + ms))
    while (($(bed_now_ms) < deadline)); do
        [[ $(bed_holders "$vip") == "$box" ]] || fail "$vip left box$box (holders: '$(bed_holders "$vip")')"
        sleep 0.05
    done
}
neigh_is() { # neigh_is IP BOX: the client's neighbour entry for IP carries BOX's MAC
    local mac want; want=$(bed_box_mac "$2")
    bed_wait_eq 1000 "$want" bed_client_neigh "$1" && return 0
    mac=$(bed_client_neigh "$1")
    fail "client's neighbour entry for $1 is '${mac}' (box$(bed_box_of_mac "$mac")), not box$2's $want"
}
http_get() { # http_get FROM URL_HOST: the body of GET / from inside FROM
    bed_exec "$1" python3 "$BED_TOOL" page "http://$2/"
}

# ---- scenarios: infrastructure ----

scn_bed_selftest() {
    bed_create 3
    local i got probe fault out
    for i in 1 2 3; do bed_start_haproxy "$i"; done
    for i in 1 2 3; do
        got=$(http_get client "$(bed_addr4 "$i")") || fail "client cannot GET box$i over IPv4"
        [[ $got == "box$i" ]] || fail "box$i answered '$got'"
        got=$(http_get client "[$(bed_addr6 "$i")]") || fail "client cannot GET box$i over IPv6"
        [[ $got == "box$i" ]] || fail "box$i answered '$got' over IPv6"
    done
    [[ -z $(bed_holders) ]] || fail "somebody holds the VIP before raftvip runs"
    # The cut: box1 loses boxes 2 and 3 in both directions and both families, not the client.
    bed_cut 1
    ! bed_reach 1 "$(bed_addr4 2)" 80 || fail "cut box1 still reaches box2"
    ! bed_reach 1 "$(bed_addr6 3)" 80 || fail "cut box1 still reaches box3 over IPv6"
    ! bed_reach 2 "$(bed_addr4 1)" 80 || fail "box2 still reaches cut box1"
    bed_reach client "$(bed_addr4 1)" 80 || fail "the client lost cut box1"
    bed_reach client "$(bed_addr6 1)" 80 || fail "the client lost cut box1 over IPv6"
    bed_reach 2 "$(bed_addr4 3)" 80 || fail "box2 lost box3"
    bed_heal 1
    bed_reach 1 "$(bed_addr4 2)" 80 || fail "healed box1 does not reach box2"
    # The probe and the outage maths: a hand-made move of the VIP from box1 to box2 where the
    # client's neighbour entry is corrected 300 ms later (as a late GARP would).
    bed_vip_add 1
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the probe never reached the VIP on box1"
    [[ $(probe_last_box "$probe") == box1 ]] || fail "the probe saw '$(probe_last_box "$probe")', not box1"
    neigh_is "$(bed_vip4)" 1
    fault=$(bed_now_ms)
    bed_vip_del 1
    bed_vip_add 2
    sleep 0.3
    ip -n "$(bed_ns client)" neigh replace "$(bed_vip4)" lladdr "$(bed_box_mac 2)" dev eth0 nud reachable
    bed_probe_wait_ok "$probe" 2000 || fail "the probe never reached the VIP on box2"
    sleep 0.1
    [[ $(probe_last_box "$probe") == box2 ]] || fail "the probe saw '$(probe_last_box "$probe")', not box2"
    out=$(probe_outage "$probe" "$fault") || fail "outage: $out"
    note "outage=${out}ms(gap=300)"
    # A busy machine adds stray 50 ms timeouts after the gap, so only a lower bound here;
    # the arithmetic itself is checked on a fixed log below.
    ((out >= 300 && out <= 2000)) || fail "outage computed as $out ms for a 300 ms gap"
    printf '%s\n' "1000 ok box1" "1010 fail timeout" "1020 fail timeout" "1030 ok box2" \
        "1040 fail refused" "1050 ok box2" "1060 ok box2" >"$BED_DIR/fixed.log"
    [[ $(probe_outage "$BED_DIR/fixed.log" 1005) == 45 ]] || fail "outage of the fixed log is not 45"
    [[ $(probe_outage "$BED_DIR/fixed.log" 1055) == 0 ]] || fail "outage after recovery is not 0"
    ! probe_outage <(echo "1000 fail timeout") 990 2>/dev/null || fail "a probe that never recovered has an outage"
    # The address timeline saw exactly: box1 +, box1 -, box2 +.
    got=$(bed_events | awk '{ printf "%s%s ", $2, $3 }')
    [[ $got == "1+ 1- 2+ " ]] || fail "address timeline is '$got'"
    out=$(bed_overlap "$(bed_vip4)" "$fault" "$(bed_now_ms)")
    [[ $out == "1 0" ]] || fail "overlap is '$out', expected '1 0'"
}

scn_bed_raft_only() {
    BED_RAFT_ONLY=1
    bed_create 3
    local b l l2 t1 t2 t0
    for b in 1 2 3; do bed_start_raftvip "$b"; done
    bed_wait 5000 bed_one_leader || fail "no single leader: '$(bed_leader)'"
    l=$(bed_leader); t1=$(bed_status "$l" term)
    note "leader=box$l"
    t0=$(bed_now_ms)
    bed_kill_raftvip "$l" KILL
    bed_wait 5000 bed_one_leader || fail "no new leader after SIGKILL of box$l"
    l2=$(bed_leader); t2=$(bed_status "$l2" term)
    note "reelect_after_kill=$(($(bed_now_ms) - t0))ms"
    [[ $l2 != "$l" && $t2 -gt $t1 ]] || fail "leader $l2 term $t2 after killing $l (term $t1)"
    bed_start_raftvip "$l"
    bed_wait_eq 5000 "$(bed_node_id "$l2")" bed_status "$l" leader_id ||
        fail "restarted box$l does not follow box$l2"
    # Cut the leader off: the other two elect one of themselves.
    t0=$(bed_now_ms)
    bed_cut "$l2"
    bed_wait 5000 bed_other_leader "$l2" || fail "no new leader besides the cut box$l2"
    note "reelect_after_cut=$(($(bed_now_ms) - t0))ms"
    bed_heal "$l2"
    bed_wait 5000 bed_one_leader || fail "no single leader after healing"
}
bed_other_leader() { # a box other than $1 says it leads
    local b
    for b in $(bed_leader); do [[ $b != "$1" ]] && return 0; done
    return 1
}

# ---- scenarios: VIP and health ----

scn_start_one_holder() {
    setup 3
    local h h6 probe
    h=$(holder)
    note "holder=box$h"
    stays_for 1000 "$(bed_vip4)" "$h"
    h6=$(holder "$(bed_vip6)")
    [[ $h6 == "$h" ]] || fail "IPv4 VIP on box$h but IPv6 VIP on box$h6"
    [[ $(bed_leader) == "$h" ]] || fail "box$h holds the VIP but the leader is '$(bed_leader)'"
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    [[ $(probe_last_box "$probe") == "box$h" ]] || fail "the client reached '$(probe_last_box "$probe")', not box$h"
    neigh_is "$(bed_vip4)" "$h"
}

# A new cluster whose boxes boot at the same moment (a site's power back): one leader, and one
# box binds the VIP, once. openraft's initialize used to elect each founding node at once,
# without a pre-vote; a founding node of a higher id starting a few ms after a peer had won
# term 1 outranked it in that term and deposed it, then could not win itself: the VIP was held
# for 1 ms, then by nobody for 170 ms (CI, 2026-11-29).
scn_start_all_at_once() {
    local run b h start evs starting
    bed_create 3
    for b in 1 2 3; do bed_start_haproxy "$b"; done
    for run in $(seq "$START_ALL_RUNS"); do
        start=$(bed_now_ms)
        starting=()
        for b in 1 2 3; do bed_start_raftvip "$b" & starting+=($!); done
        wait "${starting[@]}"
        h=$(holder "" "" 10000)
        stays_for 1000 "$(bed_vip4)" "$h"
        evs=$(bed_events | awk -v c="$start" '$1 >= c')
        [[ $evs =~ ^[0-9]+\ $h\ \+$ ]] || fail "run $run: the VIP was not bound once, by box$h alone: $(tr '\n' ';' <<<"$evs")"
        note "run$run=box$h,term$(bed_status "$h" term)"
        for b in 1 2 3; do
            bed_kill_raftvip "$b"
            rm -rf "$(bed_boxdir "$b")/data-a"
        done
        bed_vip_del "$h"
        bed_vip_del "$h" "$(bed_vip6)"
    done
}

scn_failover_link_down() {
    local h n probe fault term
    vip_moves_after bed_link_down "$MAX_FAILOVER_OUTAGE_MS"
    [[ $(probe_last_box "$probe") == "box$n" ]] || fail "the client reached '$(probe_last_box "$probe")', not box$n"
    neigh_is "$(bed_vip4)" "$n"
    # The isolated old holder fences itself too.
    bed_wait 2000 bed_not_held_by "$h" || fail "box$h (link down) still has the VIP"
}
bed_not_held_by() { [[ " $(bed_holders "${2:-$(bed_vip4 a)}") " != *" $1 "* ]]; }

crash_box() { # a crashed box: raftvip SIGKILLed, and its VIPs gone with it
    bed_kill_raftvip "$1" KILL
    bed_vip_del "$1"
    bed_vip_del "$1" "$(bed_vip6)"
}
scn_failover_crash() {
    local h n probe fault term
    vip_moves_after crash_box "$MAX_FAILOVER_OUTAGE_MS"
    neigh_is "$(bed_vip4)" "$n"
}

scn_fence_cut() {
    setup 3
    local h n probe cut dropped max_multi early end
    h=$(holder)
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    cut=$(bed_now_ms)
    bed_cut "$h"
    bed_reach client "$(bed_addr4 "$h")" 80 || fail "the client lost the cut box$h"
    # Sample the kernel state every ~5 ms for 2 s (the monitors give the exact times as well).
    end=$((cut + 2000))
    while (($(bed_now_ms) < end)); do
        if (($(bed_now_ms) > cut + FENCE_ASSERT_MS)) && [[ $(bed_holders) == *" "* ]]; then
            fail "two holders ($(bed_holders)) $(($(bed_now_ms) - cut)) ms after the cut"
        fi
        sleep 0.005
    done
    dropped=$(bed_events | awk -v b="$h" -v c="$cut" '$1 >= c && $2 == b && $3 == "-" { print $1; exit }')
    [[ -n $dropped ]] || fail "cut box$h never dropped the VIP"
    note "fence_drop=$((dropped - cut))ms"
    ((dropped - cut <= FENCE_ASSERT_MS)) || fail "cut box$h dropped the VIP after $((dropped - cut)) ms (> $FENCE_ASSERT_MS)"
    read -r max_multi early <<<"$(bed_overlap "$(bed_vip4)" "$cut" "$((cut + FENCE_ASSERT_MS))")"
    note "overlap_before_bound=${early}ms"
    read -r max_multi _ <<<"$(bed_overlap "$(bed_vip4)" "$((cut + FENCE_ASSERT_MS))" "$end")"
    ((max_multi <= 1)) || fail "two boxes held the VIP after the bound (monitor timeline)"
    n=$(holder "" "$h" 1000)
    note "new=box$n"
    bed_heal "$h"
    stays_for 1000 "$(bed_vip4)" "$n"
}

# udp_filter BOX on|off: drop (or stop dropping) UDP to the box's peer port; TCP passes.
udp_filter() {
    local ns; ns=$(bed_ns "$1")
    if [[ $2 == on ]]; then
        ip netns exec "$ns" nft -f - <<EOF
table inet bedudp {
    chain input {
        type filter hook input priority -300; policy accept;
        udp dport $(bed_port a) drop
    }
}
EOF
    else
        bed_cmd ip netns exec "$ns" nft delete table inet bedudp
    fi
}
fallbacks() { bed_status "$1" counters.heartbeat_fallbacks; }
scn_heartbeats_udp_filtered() {
    setup 3
    local h b term before
    h=$(holder)
    term=$(bed_status "$h" term)
    before=$(fallbacks "$h")
    ((before == 0)) || fail "box$h fell back to HTTP $before time(s) with UDP open"
    for b in $(others_of "$h"); do udp_filter "$b" on; done
    stays_for 5000 "$(bed_vip4)" "$h"
    for b in $(others_of "$h"); do udp_filter "$b" off; done
    [[ $(bed_status "$h" role) == leader && $(bed_status "$h" term) == "$term" ]] ||
        fail "box$h is no longer the leader of term $term: $(bed_status "$h" role) of term $(bed_status "$h" term)"
    (($(fallbacks "$h") >= 2)) || fail "box$h counted $(fallbacks "$h") fallbacks, not one per follower"
    grep -q "heartbeats to this peer go over HTTP" "$(bed_boxdir "$h")/raftvip.log" ||
        fail "box$h did not log the fallback"
    note "fallbacks=$(fallbacks "$h")"
}

scn_readd_deleted_vip() {
    setup 3
    local h t0 t1 gone back
    h=$(holder)
    stays_for 500 "$(bed_vip4)" "$h"
    t0=$(bed_now_ms)
    bed_vip_del "$h"
    until [[ $(ip -n "$(bed_ns "$h")" -o addr show dev eth0) == *" $(bed_vip4)/"* ]]; do
        (($(bed_now_ms) - t0 < 3000)) || fail "the deleted VIP did not come back on box$h within 3 s"
    done
    t1=$(bed_now_ms)
    gone=$(bed_events | awk -v b="$h" -v c="$t0" '$1 >= c && $2 == b && $3 == "-" { print $1; exit }')
    back=$(bed_events | awk -v b="$h" -v c="$t0" '$1 >= c && $2 == b && $3 == "+" { print $1; exit }')
    note "back_polled=$((t1 - t0))ms back_monitor=$((back - gone))ms"
    ((t1 - t0 <= READD_MS)) || fail "the VIP came back after $((t1 - t0)) ms (> $READD_MS)"
    [[ $(bed_holders) == "$h" ]] || fail "holders after re-add: '$(bed_holders)'"
}

scn_ipv6_vip() {
    setup 3
    local h n probe fault vip6; vip6=$(bed_vip6)
    h=$(holder "$vip6")
    probe=$(bed_probe_start "$vip6" probe6)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach [$vip6]"
    [[ $(probe_last_box "$probe") == "box$h" ]] || fail "the client reached '$(probe_last_box "$probe")', not box$h"
    neigh_is "$vip6" "$h"
    fault=$(bed_now_ms)
    bed_link_down "$h"
    n=$(wait_new_holder "$h" "$vip6")
    note "box$h->box$n"
    served_again "$probe" "$fault" "$MAX_FAILOVER_OUTAGE_MS"
    neigh_is "$vip6" "$n"
}

scn_two_clusters() {
    bed_create 6
    bed_cluster a 192.0.2.100 2001:db8::100 7480 1 2 3
    bed_cluster b 192.0.2.200 2001:db8::200 7481 4 5 6
    start_cluster_boxes a
    start_cluster_boxes b
    local ha hb ta tb t0 ev
    ha=$(holder "$(bed_vip4 a)")
    hb=$(holder "$(bed_vip4 b)")
    ((ha <= 3 && hb >= 4)) || fail "cluster a's VIP on box$ha, b's on box$hb"
    ta=$(bed_status "$ha" term); tb=$(bed_status "$hb" term)
    note "a=box$ha b=box$hb"
    t0=$(bed_now_ms)
    stays_for 3000 "$(bed_vip4 a)" "$ha"
    [[ $(bed_holders "$(bed_vip4 b)") == "$hb" ]] || fail "cluster b's VIP moved"
    [[ $(bed_status "$ha" term) == "$ta" && $(bed_status "$hb" term) == "$tb" ]] ||
        fail "terms moved: a $ta -> $(bed_status "$ha" term), b $tb -> $(bed_status "$hb" term)"
    [[ $(bed_status "$ha" role) == leader && $(bed_status "$hb" role) == leader ]] || fail "a leader lost its role"
    for ev in $(bed_vip4 a) $(bed_vip4 b); do
        [[ -z $(bed_events "$ev" | awk -v c="$t0" '$1 >= c') ]] || fail "$ev changed hands while stable"
    done
}

scn_stale_vip_restart() {
    setup 3
    local h f b
    h=$(holder)
    for b in 1 2 3; do [[ $b == "$h" ]] || { f=$b; break; }; done
    bed_kill_raftvip "$f" TERM
    bed_vip_add "$f"
    bed_start_raftvip "$f"
    bed_wait 3000 bed_not_held_by "$f" || fail "restarted box$f keeps the stale VIP"
    [[ $(bed_holders) == "$h" ]] || fail "holders: '$(bed_holders)', expected box$h"
    note "follower=box$f"
}

# pair_loses_holder H: box H (of boxes 1 and 2) loses its link; the other box must take the VIP.
pair_loses_holder() {
    local h=$1 n
    bed_link_down "$h"
    n=$(wait_new_holder "$h")
    [[ $n == $((3 - h)) ]] || fail "box$n took the VIP, not box$((3 - h))"
}

scn_witness_pair() {
    bed_create 3
    bed_witness 3
    start_cluster_boxes a
    local h o t0
    h=$(holder)
    [[ $h != 3 ]] || fail "the witness holds the VIP"
    o=$((3 - h))
    bed_link_down "$o"
    stays_for 1500 "$(bed_vip4)" "$h"
    t0=$(bed_now_ms)
    bed_link_up "$o"
    bed_wait 5000 all_follow a || fail "box$o did not rejoin"
    sleep 0.5
    bed_wait 5000 all_follow a || fail "box$o did not rejoin"
    # Pre-vote: the rejoining box burnt no terms while alone, so it cannot take over.
    # (Only box$o's own adds count: under load the holder may release and re-add within ms.)
    [[ -z $(bed_events | awk -v c="$t0" -v b="$o" '$1 >= c && $2 == b && $3 == "+"') ]] ||
        fail "box$o took the VIP when it rejoined"
    h=$(holder)
    o=$((3 - h))
    t0=$(bed_now_ms)
    pair_loses_holder "$h"
    note "lose_follower=stays lose_holder=box$h->box$o in $(($(bed_now_ms) - t0))ms"
    [[ -z $(bed_events | awk '$2 == 3') ]] || fail "the witness held the VIP at some point"
}

scn_rejoin_no_preempt() {
    setup 3
    local h f term cut
    h=$(holder)
    f=$((h % 3 + 1))
    term=$(bed_status "$h" term)
    cut=$(bed_now_ms)
    bed_cut "$f"
    stays_for 2000 "$(bed_vip4)" "$h"
    bed_heal "$f"
    bed_wait 5000 all_follow a || fail "box$f did not rejoin"
    stays_for 1000 "$(bed_vip4)" "$h"
    [[ -z $(bed_events | awk -v c="$cut" '$1 >= c') ]] || fail "the VIP moved while box$f was away or rejoined"
    [[ $(bed_status "$h" term) == "$term" ]] || fail "term moved from $term to $(bed_status "$h" term)"
    note "holder=box$h rejoined=box$f term=$term"
}

# first_asked HOLDER BOXES: the box a holder handing over asks first, the next in id order.
first_asked() { echo $(($1 % $2 + 1)); }
# won_next_term RUN OLD NEW TERM: NEW leads in the term after OLD's TERM. With 5 voters the other
# followers end their lease on the old leader for the election it asked for; before, they
# refused it until their lease ran out, and the target won its second election, if any.
won_next_term() {
    local won
    won=$(bed_status "$3" term)
    ((won == $4 + 1)) || fail "run $1: box$3 leads in term $won, not $(($4 + 1)), the term after box$2's"
}
# vip_moves_after ACTION MAX_OUTAGE_MS [BOXES]: on a bed of BOXES (default 3), ACTION BOX, done
# to the holder, moves the VIP to another box and the client is served again within
# MAX_OUTAGE_MS. Sets h (old holder), n (new holder), probe, fault and term (the old holder's)
# for the caller's further checks (declare them local there).
vip_moves_after() {
    setup "${3:-3}"
    h=$(holder)
    term=$(bed_status "$h" term)
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    fault=$(bed_now_ms)
    "$1" "$h"
    n=$(wait_new_holder "$h")
    note "box$h->box$n takeover=$(($(bed_now_ms) - fault))ms"
    served_again "$probe" "$fault" "$2"
}
haproxy_move() { # ACTION [BOXES] breaks the holder's health
    local h n probe fault term size=${2:-3}
    vip_moves_after "$1" "$MAX_FAILOVER_OUTAGE_MS" "$size"
    # Every box is healthy: the first one the holder asks.
    local asked
    asked=$(first_asked "$h" "$size")
    [[ $n == "$asked" ]] || fail "box$n took over, not box$asked, the one box$h asked"
    won_next_term 1 "$h" "$n" "$term"
    # The unhealthy holder released at once: its successor has no overlap to guard or wait for.
    local overlap
    overlap=$(grep -m 2 "planned overlap" "$(bed_boxdir "$n")/raftvip.log") || return 0
    fail "box$n guarded an overlap with an old holder that had released: $overlap"
}
scn_haproxy_kill() { haproxy_move bed_kill_haproxy; }
scn_haproxy_kill_five() { haproxy_move bed_kill_haproxy 5; }
scn_backend_down() { haproxy_move bed_stop_backend; }

scn_haproxy_reload() {
    setup 3
    local h probe t0 t1 i fails
    h=$(holder)
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    t0=$(bed_now_ms)
    for i in $(seq 1 10); do
        bed_reload_haproxy "$h"
        sleep 0.2
    done
    sleep 0.5
    t1=$(bed_now_ms)
    [[ -z $(bed_events | awk -v c="$t0" '$1 >= c') ]] || fail "the VIP changed during reloads: $(bed_events | awk -v c="$t0" '$1 >= c' | tr '\n' ' ')"
    [[ $(bed_holders) == "$h" ]] || fail "holders after reloads: '$(bed_holders)'"
    fails=$(probe_failures "$probe" "$t0" "$t1")
    note "reloads=10 probe_failures=$fails"
    ((fails == 0)) || fail "$fails probe failures during reloads"
}

scn_haproxy_restart_old_holder() {
    setup 3
    local h n t0
    h=$(holder)
    bed_kill_haproxy "$h"
    n=$(wait_new_holder "$h")
    bed_start_haproxy "$h"
    t0=$(bed_now_ms)
    stays_for 2000 "$(bed_vip4)" "$n"
    [[ -z $(bed_events | awk -v c="$t0" '$1 >= c') ]] || fail "the VIP moved after HAProxy came back on box$h"
    note "old=box$h holder=box$n"
}

scn_unhealthy_follower() {
    bed_create 3
    bed_witness 3
    start_cluster_boxes a
    local h o deadline
    h=$(holder)
    o=$((3 - h))
    bed_stop_backend "$o"
    bed_wait_eq 3000 false bed_status "$o" healthy || fail "box$o does not see its backend DOWN"
    bed_kill_raftvip "$h" KILL
    bed_vip_del "$h"
    bed_vip_del "$h" "$(bed_vip6)"
    deadline=$(($(bed_now_ms) + 2000))
    while (($(bed_now_ms) < deadline)); do
        [[ $(bed_status "$o" role) != leader ]] || fail "unhealthy box$o became leader"
        [[ -z $(bed_holders) ]] || fail "box$(bed_holders) holds the VIP while unhealthy"
        sleep 0.05
    done
    note "unhealthy=box$o never led"
}

scn_all_unhealthy() {
    setup 3
    local b
    holder >/dev/null
    for b in 1 2 3; do bed_stop_backend "$b"; done
    # Boxes notice their backend DOWN one by one; a box still healthy may take the VIP
    # meanwhile. Judge once every box reports unhealthy.
    for b in 1 2 3; do
        bed_wait_eq 3000 false bed_status "$b" healthy || fail "box$b never reported unhealthy"
    done
    bed_wait_no_holder 1000 || fail "box$(bed_holders) keeps the VIP with every box unhealthy"
    stays_none 1000
    bed_start_backend 2
    bed_wait_eq 5000 2 bed_holders || fail "recovered box2 does not hold the VIP (holders: '$(bed_holders)')"
}
stays_none() {
    local deadline=$(($(bed_now_ms) + $1))
    while (($(bed_now_ms) < deadline)); do
        [[ -z $(bed_holders) ]] || fail "box$(bed_holders) took the VIP while every box is unhealthy"
        sleep 0.05
    done
}

handoff() { # ACTION is a planned stop of the holder
    local h n probe fault term
    vip_moves_after "$1" "$MAX_HANDOVER_OUTAGE_MS"
}
maintenance_on() { bed_raftvip_cli "$1" maintenance on >/dev/null; }
sigterm_raftvip() { bed_kill_raftvip "$1" TERM; }
scn_maintenance_handoff() { handoff maintenance_on; }
scn_sigterm_handoff() { handoff sigterm_raftvip; }

# on / on / off / off, back to back: the successor writes a flag (its own, or the first box's
# off) after it asked the third box to take over, before that box has the entry. Without the
# last-resort election no box that may lead could win again: no holder, for good.
scn_maintenance_back_to_back() {
    setup 3
    local run h f b t0 took=()
    for ((run = 1; run <= MAINTENANCE_RUNS; run++)); do
        h=$(holder)
        f=$(first_asked "$h" 3)
        t0=$(bed_now_ms)
        for b in "$h" "$f"; do
            bed_raftvip_cli "$b" maintenance on >/dev/null || fail "run $run: maintenance on box$b failed"
        done
        for b in "$h" "$f"; do
            bed_raftvip_cli "$b" maintenance off >/dev/null || fail "run $run: maintenance off box$b failed"
        done
        bed_wait_holder 5000 >/dev/null ||
            fail "run $run: no single holder 5 s after maintenance on and off on box$h and box$f (holders: '$(bed_holders)')"
        took+=($(($(bed_now_ms) - t0)))
        bed_wait 5000 all_follow a || fail "run $run: no agreed leader after maintenance off"
    done
    note "held_again_ms=[${took[*]}]"
}

# ---- scenarios: fail-safe start and exit (issue 8) ----

box_has_vip() { [[ $(ip -n "$(bed_ns "$1")" -o addr show dev eth0) == *" $2/"* ]]; }

scn_stale_vip_bad_store() {
    bed_create 1
    local config dir rc=0
    config=$(bed_write_config 1)
    dir=$(bed_boxdir 1)
    bed_vip_add 1
    bed_vip_add 1 "$(bed_vip6)"
    # A store raftvip cannot open: not a redb file at all.
    head -c 65536 /dev/urandom >"$dir/data-a/raft.redb"
    bed_exec 1 timeout 10 "$(bed_raftvip_bin)" run --config "$config" >"$dir/run.log" 2>&1 || rc=$?
    ((rc != 0 && rc != 124)) || fail "run on a broken store exited with $rc: $(tail -n 2 "$dir/run.log")"
    ! box_has_vip 1 "$(bed_vip4)" || fail "the stale IPv4 VIP is still bound after the failed start"
    ! box_has_vip 1 "$(bed_vip6)" || fail "the stale IPv6 VIP is still bound after the failed start"
    grep -q "removed a VIP" "$dir/run.log" || fail "run did not log the removal: $(head -n 3 "$dir/run.log")"
    grep -q "raft.redb" "$dir/run.log" || fail "run failed, but not on the store: $(tail -n 2 "$dir/run.log")"
    note "exit=$rc error='$(tail -n 1 "$dir/run.log" | cut -c1-80)'"
}

scn_release_command() {
    bed_create 1
    local out rc=0
    bed_write_config 1 >/dev/null
    bed_vip_add 1
    out=$(bed_raftvip_cli 1 release) || rc=$?
    ((rc == 0)) || fail "release exited $rc: $out"
    [[ $out == *"removed $(bed_vip4)/32 on eth0"* ]] || fail "release printed '$out'"
    ! box_has_vip 1 "$(bed_vip4)" || fail "the VIP is still bound after release"
    out=$(bed_raftvip_cli 1 release) || rc=$?
    ((rc == 0)) || fail "a second release exited $rc: $out"
    [[ $out == *"not bound"* && $out != *removed* ]] || fail "a second release printed '$out'"
}

# Every box's store on its own small disk; the holder's disk fails (ext4 error, read-only
# from then on), then a replicated write (maintenance on a follower) makes its log append
# fail: Raft stops with a fatal error, and the process must not linger.
scn_store_error_fatal() {
    bed_create 3
    local b h f pid rc=0 t0 t1 dir
    for b in 1 2 3; do bed_mount_disk "$(bed_boxdir "$b")/data-a" 16M; done
    start_cluster_boxes a
    h=$(holder)
    f=$((h % 3 + 1))
    dir=$(bed_boxdir "$h")
    pid=$(cat "$dir/raftvip.pid")
    bed_disk_fail "$dir/data-a"
    t0=$(bed_now_ms)
    bed_raftvip_cli "$h" maintenance on --node "$(bed_node_id "$f")" >/dev/null 2>&1 || true
    bed_wait 3000 bed_pid_gone "$pid" || fail "box$h's raftvip still runs 3 s after its store failed"
    t1=$(bed_now_ms)
    wait "$pid" || rc=$?
    ((rc != 0)) || fail "box$h's raftvip exited 0 on a fatal store error"
    ! box_has_vip "$h" "$(bed_vip4)" || fail "box$h keeps the VIP after its raftvip died"
    grep -q "fatal" "$dir/raftvip.log" || fail "no fatal error logged: $(tail -n 3 "$dir/raftvip.log")"
    note "exit=$rc gone_after=$((t1 - t0))ms"
    ((t1 - t0 <= 1500)) || fail "exited $((t1 - t0)) ms after the failing write"
    rm -f "$dir/raftvip.pid"
    wait_new_holder "$h" >/dev/null
}

# ---- scenarios: many VIPs (issue 13) ----

# all_extra_on BOX: BOX holds every extra VIP and no other box holds any.
all_extra_on() {
    local b
    for b in $(bed_boxes); do
        if [[ $b == "$1" ]]; then
            (($(bed_extra_held "$b") == BED_EXTRA_VIPS)) || return 1
        else
            (($(bed_extra_held "$b") == 0)) || return 1
        fi
    done
}
extra_count_is() { (($(bed_extra_held "$1") == $2)); }
extra_spread() { # "box:count ..." for a failure message
    local b out=()
    for b in $(bed_boxes); do out+=("box$b:$(bed_extra_held "$b")"); done
    echo "${out[*]}"
}
scn_many_vips() {
    BED_EXTRA_VIPS=200
    setup 3
    local h n term end fault moved
    h=$(holder "" "" 10000)
    bed_wait 5000 all_extra_on "$h" || fail "not all 200 extra VIPs on box$h alone: $(extra_spread)"
    term=$(bed_status "$h" term)
    end=$(($(bed_now_ms) + MANY_VIPS_STABLE_S * 1000))
    while (($(bed_now_ms) < end)); do
        all_extra_on "$h" || fail "the 200 VIPs left box$h alone: $(extra_spread)"
        [[ $(bed_status "$h" term) == "$term" ]] || fail "term moved from $term to $(bed_status "$h" term) while settled"
        sleep 1
    done
    note "holder=box$h term=$term stable=${MANY_VIPS_STABLE_S}s"
    # Box loss: the holder drops off the segment; another box takes all of them.
    fault=$(bed_now_ms)
    bed_link_down "$h"
    n=$(wait_new_holder "$h")
    bed_wait 5000 extra_count_is "$n" "$BED_EXTRA_VIPS" ||
        fail "box$n holds $(bed_extra_held "$n") of 200 extra VIPs after box$h was lost"
    moved=$(($(bed_now_ms) - fault))
    # The lost box fenced itself: its raftvip released every VIP.
    bed_wait 2000 extra_count_is "$h" 0 ||
        fail "lost box$h still has $(bed_extra_held "$h") extra VIPs"
    note "box$h->box$n all_200_moved=${moved}ms"
}

# ---- scenarios: the kernel-enforced lease (issue 8.1) ----

# lease_outlives FAULT_MS OLD: the old holder's VIP (v4 and v6) disappears by itself, a new box
# holds it, and from FAULT_MS + 1500 on there is never a second holder (monitor timeline).
# Sets n (new holder).
lease_outlives() {
    local fault=$1 old=$2 vip gone max_multi
    n=$(wait_new_holder "$old")
    for vip in "$(bed_vip4)" "$(bed_vip6)"; do
        bed_wait 3000 bed_not_held_by "$old" "$vip" || fail "box$old still holds $vip 3 s after the fault"
    done
    while (($(bed_now_ms) < fault + 2500)); do sleep 0.05; done
    for vip in "$(bed_vip4)" "$(bed_vip6)"; do
        read -r max_multi _ <<<"$(bed_overlap "$vip" "$((fault + 1500))" "$(bed_now_ms)")"
        ((max_multi <= 1)) || fail "two holders of $vip later than 1.5 s after the fault"
    done
    gone=$(bed_events | awk -v b="$old" -v f="$fault" '$1 >= f && $2 == b && $3 == "-" { print $1; exit }')
    [[ -n $gone ]] || fail "no removal of the VIP on box$old in the timeline"
    note "box$old->box$n old_vip_gone=$((gone - fault))ms"
}
scn_holder_killed_lease() {
    setup 3
    local h n fault
    h=$(holder)
    fault=$(bed_now_ms)
    bed_kill_raftvip "$h" KILL
    lease_outlives "$fault" "$h"
    [[ $(bed_holders) == "$n" ]] || fail "holders at the end: '$(bed_holders)'"
}
scn_holder_frozen_lease() {
    setup 3
    local h n fault pid resumed max_multi
    h=$(holder)
    pid=$(bed_raftvip_pid "$h")
    fault=$(bed_now_ms)
    kill -STOP "$pid"
    lease_outlives "$fault" "$h"
    # Resumed: its timers must not renew or announce the VIP its fence gave up.
    resumed=$(bed_now_ms)
    kill -CONT "$pid"
    sleep 1
    read -r max_multi _ <<<"$(bed_overlap "$(bed_vip4)" "$resumed" "$(bed_now_ms)")"
    ((max_multi <= 1)) || fail "two holders after box$h resumed"
    [[ $(bed_holders) == "$n" ]] || fail "holders 1 s after the resume: '$(bed_holders)'"
}

# ---- scenarios: only a box that can serve may lead (issue 8.5) ----

# The VIPs live on a second interface vip0 in every box (one end of a veth pair whose other
# end stays in the box: this kernel may lack the dummy driver), so it can go down while eth0
# keeps carrying Raft: the box stays reachable but could not serve. (The client cannot reach
# a VIP on vip0; the assertions are about who holds it.)
vip_if() { ip -n "$(bed_ns "$1")" link "${@:2}"; }
not_candidate() { # not_candidate BOX: votes but does not stand, and says why
    [[ $(bed_status "$1" candidate_for_leader) == false && $(bed_status "$1" decision) == *"cannot be bound"* ]]
}
scn_vip_interface_down() {
    bed_create 3
    BED_VIP_IF=vip0
    local b h n t fault moved deadline
    for b in 1 2 3; do
        bed_cmd vip_if "$b" add vip0 type veth peer name vip0p
        bed_cmd vip_if "$b" set vip0p up
        bed_cmd vip_if "$b" set vip0 up
    done
    start_cluster_boxes a
    h=$(holder)
    fault=$(bed_now_ms)
    bed_cmd vip_if "$h" set vip0 down
    n=$(bed_wait_holder 3000 "$(bed_vip4)" "$h") ||
        fail "the VIP did not leave box$h whose vip0 is down (holders: '$(bed_holders)')"
    moved=$(($(bed_now_ms) - fault))
    bed_wait 2000 bed_not_held_by "$h" "$(bed_vip6)" || fail "box$h still holds the IPv6 VIP"
    bed_wait 1000 not_candidate "$h" ||
        fail "box$h with vip0 down still stands: $(bed_status "$h" decision)"
    note "vip0_down=box$h->box$n ${moved}ms"
    ((moved <= 1500)) || fail "the VIP took ${moved} ms to move (goal ~1 s)"
    bed_cmd vip_if "$h" set vip0 up
    bed_wait_eq 2000 true bed_status "$h" candidate_for_leader ||
        fail "box$h does not stand again with vip0 up: $(bed_status "$h" decision)"
    [[ $(bed_holders) == "$n" ]] || fail "the VIP moved when box$h came back: '$(bed_holders)'"
    # A box whose VIP interface is gone never leads, even when the leader is lost.
    bed_cmd vip_if "$h" del vip0
    bed_wait 1000 not_candidate "$h" || fail "box$h without vip0 still stands"
    t=$((6 - h - n))
    bed_kill_raftvip "$n" KILL
    deadline=$(($(bed_now_ms) + 5000))
    while (($(bed_now_ms) < deadline)); do
        [[ $(bed_status "$h" role) != leader ]] || fail "box$h without vip0 became leader"
        [[ $(bed_holders) != "$t" ]] || break
        sleep 0.05
    done
    [[ $(bed_holders) == "$t" ]] || fail "box$t did not take over from killed box$n (holders: '$(bed_holders)')"
    sleep 1
    [[ $(bed_status "$h" role) != leader ]] || fail "box$h without vip0 became leader"
    note "no_vip0=box$h never led; box$n killed->box$t"
}

# ---- the runner ----

run_one() { # in its own process: one scenario, one bed
    local name=$1
    declare -F "scn_$name" >/dev/null || bed_die "no scenario '$name'"
    "scn_$name"
}

main() {
    local keep="" list=0 opt
    while getopts "lk:h" opt; do
        case $opt in
            l) list=1 ;;
            k) keep=$OPTARG ;;
            h) usage; exit 0 ;;
            *) usage >&2; exit 1 ;;
        esac
    done
    shift $((OPTIND - 1))
    local entry name selected=() pat
    for entry in "${SCENARIOS[@]}"; do
        name=${entry%%|*}
        if (($# == 0)); then selected+=("$name"); continue; fi
        for pat in "$@"; do
            # shellcheck disable=SC2053 # a pattern on purpose
            [[ $name == $pat ]] && { selected+=("$name"); break; }
        done
    done
    if ((list)); then
        for entry in "${SCENARIOS[@]}"; do printf '%-28s %s\n' "${entry%%|*}" "${entry#*|}"; done
        exit 0
    fi
    ((${#selected[@]})) || { echo "run.sh: no scenario matches: $*" >&2; exit 1; }
    bed_require
    bed_raftvip_bin >/dev/null

    local logs passed=0 failed=0 rc why notes
    logs=${keep:-$(mktemp -d /tmp/raftvip-netns.XXXXXX)}
    mkdir -p "$logs"
    for name in "${selected[@]}"; do
        : >"$logs/$name.result"; : >"$logs/$name.notes"
        rc=0
        RESULT_FILE="$logs/$name.result" NOTES_FILE="$logs/$name.notes" BED_KEEP="$logs/$name.files" \
            timeout -k 10 "$SCENARIO_TIMEOUT_S" bash "$0" --one "$name" >"$logs/$name.log" 2>&1 || rc=$?
        notes=$(cat "$logs/$name.notes")
        if ((rc == 0)); then
            passed=$((passed + 1))
            printf 'ok   %-28s %s\n' "$name" "$notes"
            rm -rf "$logs/$name".*
        else
            failed=$((failed + 1))
            why=$(cat "$logs/$name.result")
            if [[ -z $why ]]; then
                why=$(grep -v '^  \[bed\]' "$logs/$name.log" | tail -n 1 || true)
                ((rc == 124)) && why="timed out after ${SCENARIO_TIMEOUT_S}s; last: $why"
                [[ -n $why ]] || why="exit status $rc"
            fi
            printf 'FAIL %s: %s %s\n' "$name" "$why" "${notes:+($notes)}"
        fi
    done
    if ((failed)); then
        echo "logs and bed files of failed scenarios: $logs"
    elif [[ -z $keep ]]; then
        rm -rf "$logs"
    fi
    echo "$passed passed, $failed failed"
    ((failed == 0))
}

# Two boxes on the segment, the witness (box3) on 198.51.100.0/24 behind a router: it reaches
# the boxes' listen addresses only through routed IP. Footprint of the witness, failover both
# ways through its vote, and no two holders when the holder is cut from its peers.
scn_witness_routed() {
    bed_create 3
    bed_witness 3
    bed_route_box 3
    start_cluster_boxes a
    local h n probe fault out rss cpu cut max_multi multi_ms back
    [[ $(bed_exec 3 ip -4 route get "$(bed_addr4 1)") == *" via $BED_ROUTED_NET4.1 "* ]] ||
        fail "the witness does not reach box1 through the router"
    [[ $(bed_status 1 voters_may_fail) == 1 && $(bed_status 3 voters_may_fail) == 1 ]] ||
        fail "voters_may_fail is not 1 with a witness"
    [[ $(bed_status 3 role) == witness ]] || fail "box3 is not a witness: $(bed_status 3 role)"
    read -r rss cpu <<<"$(bed_proc_footprint "$(bed_raftvip_pid 3)" 5)"
    note "witness_rss=${rss}kB witness_cpu=${cpu}%"
    h=$(holder)
    [[ $h != 3 ]] || fail "the witness holds the VIP"
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    for out in there back; do
        fault=$(bed_now_ms)
        pair_loses_holder "$h"
        note "$out=box$h->box$((3 - h))"
        served_again "$probe" "$fault" "$MAX_FAILOVER_OUTAGE_MS"
        back=$(bed_now_ms)
        bed_link_up "$h"
        bed_wait 5000 all_follow a || fail "box$h did not rejoin"
        sleep 0.5
        # The old holder rejoins as a follower: it does not take the VIP back.
        [[ -z $(bed_events | awk -v c="$back" -v b="$h" '$1 >= c && $2 == b && $3 == "+"') ]] ||
            fail "box$h took the VIP back when it rejoined"
        h=$(holder)
    done
    cut=$(bed_now_ms)
    bed_cut "$h"
    n=$(holder "" "$h" 3000)
    sleep 1
    read -r max_multi multi_ms <<<"$(bed_overlap "$(bed_vip4)" "$cut" "$(bed_now_ms)")"
    note "cut=box$h->box$n two_holders=${multi_ms}ms"
    ((max_multi <= 1)) || fail "two boxes held the VIP for ${multi_ms} ms after the cut"
    bed_heal "$h"
    [[ -z $(bed_events | awk '$2 == 3') ]] || fail "the witness held the VIP at some point"
}

# ---- scenario: keepalived-compatible notify hooks (issue 10 item 5) ----

HOOKS_DIR=$(cd "$HERE/../../examples/hooks" && pwd)
# The [notify] table of a box: the stock keepalived script (its log moved into the box's dir,
# the only edit), and a MASTER hook that "moves the cloud IP" (copies the box's name to a file
# all boxes share) through term-guard.sh, its term record shared too.
notify_toml() {
    local dir; dir=$(bed_boxdir "$1")
    sed "s|/var/log/keepalived-notify.log|$dir/notify.log|" "$HOOKS_DIR/keepalived-notify.sh" >"$dir/notify.sh"
    chmod 755 "$dir/notify.sh"
    bed_boxname "$1" >"$dir/name"
    printf '[notify]\nscript = "%s"\nmaster = "%s %s /bin/cp %s %s"\n' "$dir/notify.sh" \
        "$HOOKS_DIR/term-guard.sh" "$BED_DIR/cloud-ip.term" "$dir/name" "$BED_DIR/cloud-ip.owner"
}
# notified BOX: "TYPE NAME STATE PRIORITY" of each line the box's notify script logged.
notified() { awk '{ sub(/:$/, "", $6); print $3, $4, $5, $6 }' "$(bed_boxdir "$1")/notify.log" 2>/dev/null; }
notified_last() { notified "$1" | tail -n 1; }

scn_keepalived_notify() {
    bed_create 3
    local b h n t0 took old_term new_term instance="INSTANCE bed-a-$BED_ID" rc=0
    for b in 1 2 3; do bed_start_haproxy "$b"; done
    for b in 1 2 3; do bed_start_raftvip "$b" "$(notify_toml "$b")"; done
    bed_wait 10000 all_follow a || fail "cluster a did not agree on a leader within 10 s"
    h=$(holder)
    bed_wait_eq 3000 "$instance MASTER 100" notified_last "$h" ||
        fail "holder box$h logged no MASTER: $(notified "$h" | tr '\n' ';')"
    for b in 1 2 3; do
        [[ $(notified "$b" | head -n 1) == "$instance BACKUP 100" ]] ||
            fail "box$b did not report BACKUP first at start: $(notified "$b" | tr '\n' ';')"
    done
    bed_wait_eq 3000 "box$h" cat "$BED_DIR/cloud-ip.owner" || fail "the holder's MASTER hook did not move the cloud IP"
    old_term=$(<"$BED_DIR/cloud-ip.term")

    t0=$(bed_now_ms)
    bed_kill_haproxy "$h"
    n=$(wait_new_holder "$h")
    bed_wait_eq 3000 "$instance MASTER 100" notified_last "$n" ||
        fail "new holder box$n logged no MASTER: $(notified "$n" | tr '\n' ';')"
    took=$(($(bed_now_ms) - t0))
    bed_wait_eq 3000 "$instance FAULT 100" notified_last "$h" ||
        fail "old holder box$h logged no FAULT: $(notified "$h" | tr '\n' ';')"
    bed_wait_eq 3000 "box$n" cat "$BED_DIR/cloud-ip.owner" || fail "the cloud IP did not follow to box$n"
    new_term=$(<"$BED_DIR/cloud-ip.term")
    [[ $new_term == "$(bed_status "$n" term)" && $new_term -gt $old_term ]] ||
        fail "term record $new_term: not box$n's term $(bed_status "$n" term) above $old_term"
    grep -q 'notify hook ran.*stdout=took over bed-a' "$(bed_boxdir "$n")/raftvip.log" ||
        fail "the script's output is not in box$n's raftvip log"
    note "box$h->box$n kill_to_master_hook=${took}ms terms=$old_term->$new_term"

    # The old holder's MASTER hook replayed late, with its old term: refused, the IP stays.
    RAFTVIP_TERM=$old_term "$HOOKS_DIR/term-guard.sh" "$BED_DIR/cloud-ip.term" \
        /bin/cp "$(bed_boxdir "$h")/name" "$BED_DIR/cloud-ip.owner" 2>/dev/null || rc=$?
    ((rc == 3)) || fail "term-guard did not refuse the stale term $old_term (exit $rc)"
    [[ $(<"$BED_DIR/cloud-ip.owner") == "box$n" ]] || fail "a stale MASTER hook moved the cloud IP back"

    for b in 1 2 3; do bed_kill_raftvip "$b" TERM; done
    for b in 1 2 3; do
        [[ $(notified_last "$b") == "$instance STOP 100" ]] ||
            fail "box$b did not report STOP last on SIGTERM: $(notified "$b" | tr '\n' ';')"
    done
}

# ---- scenario: reload (issue 10 item 3) ----

# Reloads must take effect within this on the holder (the issue's goal: 1 s).
RELOAD_MAX_MS=1000

# drop_vip6 FILE: the config without the [[vip]] table of cluster a's IPv6 VIP.
drop_vip6() {
    awk -v vip="$(bed_vip6)/128" '
        /^\[\[vip\]\]$/ { held = $0; next }
        held != "" { if (index($0, vip)) { skip = 1 } else { print held }; held = "" }
        skip && /^interface/ { skip = 0; next }
        !skip { print }' "$1"
}
# same_raftvip BOX PID: the box still runs the raftvip process PID.
same_raftvip() { [[ $(bed_raftvip_pid "$1") == "$2" ]] && bed_pid_alive "$2"; }
holds_both() { [[ $(bed_holders) == "$1" && $(bed_holders "$(bed_vip6)") == "$1" ]]; }
reload_cli() { # reload_cli BOX: `raftvip reload`'s output (stdout and stderr) and exit code
    local rc=0 out
    out=$(bed_raftvip_cli "$1" reload 2>&1) || rc=$?
    printf '%s\nexit=%s\n' "$out" "$rc"
}

scn_reload() {
    setup 3
    local h n pid cfg orig out t0 bound took probe start fails fault
    h=$(holder)
    bed_wait 2000 holds_both "$h" || fail "box$h does not hold both VIPs"
    # The IPv4 VIP stays in every file below: no reload may disturb its clients.
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    start=$(bed_now_ms)
    pid=$(bed_raftvip_pid "$h")
    cfg=$(bed_boxdir "$h")/raftvip-a.toml
    orig=$(bed_boxdir "$h")/orig.toml
    cp "$cfg" "$orig"

    # A VIP removed from the file is released at once; the other stays.
    drop_vip6 "$orig" >"$cfg"
    out=$(reload_cli "$h")
    [[ $out == *"removed (released if held)"* && $out == *exit=0 ]] || fail "reload (vip removed): $out"
    bed_wait_no_holder "$RELOAD_MAX_MS" "$(bed_vip6)" || fail "the removed IPv6 VIP is still bound"
    [[ $(bed_holders) == "$h" ]] || fail "the IPv4 VIP left box$h (holders: '$(bed_holders)')"

    # SIGHUP with the VIP back in the file: bound within a second, and HAProxy serves it.
    cp "$orig" "$cfg"
    t0=$(bed_now_ms)
    kill -HUP "$pid"
    bed_wait_holder "$RELOAD_MAX_MS" "$(bed_vip6)" >/dev/null ||
        fail "SIGHUP did not bind the IPv6 VIP within ${RELOAD_MAX_MS} ms"
    bound=$(bed_events "$(bed_vip6)" | awk -v t="$t0" -v b="$h" '$1 >= t && $2 == b && $3 == "+" { print $1; exit }')
    [[ -n $bound ]] || fail "no bind of the IPv6 VIP on box$h in the address timeline"
    took=$((bound - t0))
    ((took <= RELOAD_MAX_MS)) || fail "SIGHUP to bound took ${took} ms"
    bed_wait_eq 3000 "box$h" http_get client "[$(bed_vip6)]" || fail "HAProxy on box$h does not serve the re-added VIP"
    same_raftvip "$h" "$pid" || fail "raftvip on box$h restarted"
    note "sighup_to_bound=${took}ms"

    # A file check-config refuses: nothing changes, every problem is named.
    { cat "$orig"; printf '[[vip]]\naddress = "%s/32"\ninterface = "eth0"\n' "$(bed_vip4)"; } >"$cfg"
    out=$(reload_cli "$h")
    [[ $out == *"reload rejected"* && $out == *"is listed twice"* && $out == *exit=1 ]] ||
        fail "a broken file was not rejected by name: $out"
    kill -HUP "$pid"
    bed_wait 2000 grep -q "reload rejected.*SIGHUP" "$(bed_boxdir "$h")/raftvip.log" ||
        fail "SIGHUP with a broken file logged no rejection"
    # A restart-only key: rejected naming it, nothing applied (the VIP removal beside it neither).
    { drop_vip6 "$orig"; printf '[timing]\nheartbeat_ms = 15\n'; } >"$cfg"
    out=$(reload_cli "$h")
    [[ $out == *"timing.heartbeat_ms: needs a restart"* && $out == *exit=1 ]] ||
        fail "a restart-only change was not rejected by name: $out"
    sleep 0.3
    holds_both "$h" || fail "a rejected reload changed the VIPs (v4: '$(bed_holders)', v6: '$(bed_holders "$(bed_vip6)")')"

    fails=$(probe_failures "$probe" "$start" "$(bed_now_ms)")
    note "probe_failures_during_reloads=$fails"
    ((fails == 0)) || fail "$fails failed probes of the untouched IPv4 VIP during the reloads"

    # role = witness: the holder no longer may lead and hands the VIPs over, like a drain.
    sed 's/^node_id = .*/&\nrole = "witness"/' "$orig" >"$cfg"
    fault=$(bed_now_ms)
    out=$(reload_cli "$h")
    [[ $out == *"role: voter -> witness"* && $out == *exit=0 ]] || fail "reload (witness): $out"
    n=$(wait_new_holder "$h")
    served_again "$probe" "$fault" "$MAX_HANDOVER_OUTAGE_MS"
    bed_wait 2000 holds_both "$n" || fail "box$n does not hold both VIPs after the handover"
    [[ $(bed_status "$h" candidate_for_leader) == false ]] || fail "box$h still stands after becoming a witness"
    bed_wait_eq 2000 witness bed_status "$h" role || fail "box$h's status says role $(bed_status "$h" role), not witness"
    same_raftvip "$h" "$pid" || fail "raftvip on box$h restarted"
    note "witness_reload=box$h->box$n"
}

# ---- scenarios: make-before-break planned handover and transfer (issue 10 items 1-2) ----

# How many planned handovers one mbb_* scenario runs in its bed (the distribution in the note).
MBB_RUNS=${MBB_RUNS:-3}

others_of() { local b; for b in 1 2 3; do [[ $b == "$1" ]] || printf '%s ' "$b"; done; }
mbb_sigterm_do() { bed_kill_raftvip "$1" TERM; }
mbb_sigterm_undo() { bed_start_raftvip "$1"; }
mbb_maintenance_do() { bed_raftvip_cli "$1" maintenance on >/dev/null; }
mbb_maintenance_undo() { bed_raftvip_cli "$1" maintenance off >/dev/null; }
mbb_transfer_do() { # asked on one follower, to the other: forwarded to the leader
    local f t
    read -r f t <<<"$(others_of "$1")"
    MBB_WANT=$t
    bed_raftvip_cli "$f" transfer --to "$(bed_node_id "$t")" >/dev/null || fail "transfer to box$t failed"
}
mbb_transfer_undo() { :; }
# mbb KIND: MBB_RUNS planned handovers of the holder (mbb_KIND_do, then mbb_KIND_undo), each
# with 0 failed client probes from the action to 0.5 s after the successor alone holds the
# VIP, the client's neighbour entry naming the successor, the old holder released because the
# successor said it holds the VIPs (not at the bound), two holders for at most the bound.
# Every run is recorded (the note is the distribution); any bad run fails the scenario.
mbb() {
    local kind=$1 run h n probe fault failed out max_multi multi_ms mac
    local outages="" fails="" overlaps="" bad=""
    setup 3
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    for run in $(seq 1 "$MBB_RUNS"); do
        h=$(holder)
        MBB_WANT=""
        echo "=== mbb run $run" >>"$(bed_boxdir "$h")/raftvip.log"
        sleep 0.3
        fault=$(bed_now_ms)
        "mbb_${kind}_do" "$h"
        n=$(wait_new_holder "$h")
        [[ -z $MBB_WANT || $n == "$MBB_WANT" ]] || bad+="run $run: box$n took the VIP, not box$MBB_WANT; "
        sleep 0.5
        failed=$(probe_failures "$probe" "$fault" "$(bed_now_ms)")
        out=$(probe_outage "$probe" "$fault") || out="never"
        read -r max_multi multi_ms <<<"$(bed_overlap "$(bed_vip4)" "$fault" "$(bed_now_ms)")"
        outages+="$out "; fails+="$failed "; overlaps+="$multi_ms "
        ((failed == 0)) || bad+="run $run box$h->box$n: $failed failed probes; "
        ((multi_ms <= 250)) || bad+="run $run: two holders for ${multi_ms} ms; "
        bed_wait_eq 1000 "$(bed_box_mac "$n")" bed_client_neigh "$(bed_vip4)" || {
            mac=$(bed_client_neigh "$(bed_vip4)")
            bad+="run $run: client neighbour entry $mac (box$(bed_box_of_mac "$mac")), not box$n; "
        }
        sed -n "/^=== mbb run $run\$/,\$p" "$(bed_boxdir "$h")/raftvip.log" |
            grep -q "the successor holds the VIPs: releasing" ||
            bad+="run $run: box$h did not release on its successor's word; "
        "mbb_${kind}_undo" "$h"
        bed_wait 10000 all_follow a || fail "run $run: the cluster did not settle after the undo"
    done
    note "runs=$MBB_RUNS outage_ms=[${outages% }] failed=[${fails% }] two_holders_ms=[${overlaps% }]"
    [[ -z $bad ]] || fail "${bad%; }"
}
scn_mbb_sigterm() { mbb sigterm; }
scn_mbb_maintenance() { mbb maintenance; }
scn_mbb_transfer() { mbb transfer; }

scn_transfer_any_five() {
    local voters=5 run h n out asked term
    setup "$voters"
    for run in $(seq 1 "$TRANSFER_FIVE_RUNS"); do
        h=$(holder)
        term=$(bed_status "$h" term)
        out=$(bed_raftvip_cli "$h" transfer --to any 2>&1) || fail "run $run: transfer --to any on box$h failed: $out"
        n=$(wait_new_holder "$h")
        [[ $out == "node $(bed_node_id "$n") leads and holds the VIPs now" ]] ||
            fail "run $run: box$n holds the VIP, but the transfer said: $out"
        # The first voter after the holder (in id order) is the one asked, and it wins: the
        # other voters hold their pre-votes for its election (before: another follower won
        # 8 times in 20, and the old holder released without the planned overlap).
        asked=$(first_asked "$h" "$voters")
        [[ $n == "$asked" ]] || fail "run $run: box$n won the election, not box$asked, the one box$h asked"
        won_next_term "$run" "$h" "$n" "$term"
        bed_wait 10000 all_follow a || fail "run $run: the cluster did not settle"
    done
    # A named target wins although node 1 is first in the stagger.
    for run in $(seq 1 "$TRANSFER_FIVE_RUNS"); do
        h=$(holder)
        term=$(bed_status "$h" term)
        asked=$voters
        [[ $h == "$asked" ]] && asked=$((voters - 1))
        out=$(bed_raftvip_cli "$h" transfer --to "$(bed_node_id "$asked")" 2>&1) ||
            fail "run $run: transfer --to $(bed_node_id "$asked") on box$h failed: $out"
        n=$(wait_new_holder "$h")
        [[ $n == "$asked" ]] || fail "run $run: box$n holds the VIP, not box$asked"
        won_next_term "$run" "$h" "$n" "$term"
        bed_wait 10000 all_follow a || fail "run $run: the cluster did not settle"
    done
    note "runs=$TRANSFER_FIVE_RUNS to_any=$TRANSFER_FIVE_RUNS to_named=$TRANSFER_FIVE_RUNS"
}

# refused BOX TARGET WORDS: `raftvip transfer --to TARGET` run on BOX exits non-zero naming WORDS.
refused() {
    local out rc=0
    out=$(bed_raftvip_cli "$1" transfer --to "$2" 2>&1) || rc=$?
    ((rc != 0)) || fail "transfer to $2 was not refused: $out"
    [[ $out == *"$3"* ]] || fail "transfer to $2 refused without naming '$3': $out"
}
scn_transfer_refused() {
    bed_create 4
    bed_witness 4
    start_cluster_boxes a
    local h a b probe t0 failed
    h=$(holder)
    read -r a b <<<"$(others_of "$h")"
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"
    t0=$(bed_now_ms)
    refused "$h" "$(bed_node_id "$h")" "already leads"
    refused "$h" "$(bed_node_id 4)" "witness"
    bed_raftvip_cli "$a" maintenance on >/dev/null
    bed_wait_eq 3000 true bed_status "$a" maintenance || fail "box$a is not in maintenance"
    refused "$b" "$(bed_node_id "$a")" "in maintenance"  # asked on a follower: forwarded
    bed_kill_haproxy "$b"
    bed_wait_eq 3000 false bed_status "$b" healthy || fail "box$b is still healthy"
    refused "$h" "$(bed_node_id "$b")" "HAProxy unhealthy"
    refused "$h" any "no node can take over"
    bed_start_haproxy "$b"
    bed_wait_eq 5000 true bed_status "$b" candidate_for_leader || fail "box$b does not stand again"
    bed_link_down "$b"
    refused "$h" "$(bed_node_id "$b")" "unreachable"
    bed_link_up "$b"
    [[ $(bed_holders) == "$h" ]] || fail "the VIP moved (holders: '$(bed_holders)')"
    failed=$(probe_failures "$probe" "$t0" "$(bed_now_ms)")
    ((failed == 0)) || fail "$failed client probes failed while transfers were refused"
    # 'any' with one node able to lead: that one.
    bed_wait 5000 all_follow a || fail "box$b did not rejoin"
    bed_raftvip_cli "$h" transfer --to any >/dev/null || fail "transfer --to any failed"
    [[ $(wait_new_holder "$h") == "$b" ]] || fail "transfer --to any did not pick box$b"
    note "refused: witness, self, maintenance, unhealthy, any, unreachable; any->box$b"
}

# ---- scenarios: real-time scheduling and locked memory (issue 12/13, src/realtime.rs) ----

# thread_sched PID: "NAME POLICY RT_PRIORITY" for each of the process's threads, from
# /proc/PID/task/*/stat (fields 41 and 40; SCHED_OTHER is 0, SCHED_RR 2).
thread_sched() {
    local t stat comm f
    for t in /proc/"$1"/task/*; do
        stat=$(<"$t/stat") || continue
        comm=${stat#*(}; comm=${comm%)*}
        read -ra f <<<"${stat##*) }"
        echo "${comm// /_} ${f[38]} ${f[37]}"
    done
}
# expect_sched BOX PRIORITY LOCKED: the runtime (main), VIP and netlink threads run SCHED_RR at
# PRIORITY, the blocking pool (store) one below, every other thread normal (all normal when 0);
# status says the same, and the memory is locked (VmLck > 0) exactly when LOCKED is true.
expect_sched() {
    local box=$1 prio=$2 locked=$3 pid name policy rt want lck seen=""
    pid=$(bed_raftvip_pid "$box")
    while read -r name policy rt; do
        case $name in
            raftvip | raftvip-vips) want=$prio; seen+="$name " ;;
            tokio-*) want=$((prio > 1 ? prio - 1 : prio)) ;;
            *) want=0 ;;
        esac
        [[ $policy == $((want > 0 ? 2 : 0)) && $rt == "$want" ]] ||
            fail "box$box thread $name: policy $policy priority $rt, expected priority $want (SCHED_RR if > 0)"
    done < <(thread_sched "$pid")
    [[ $seen == *"raftvip "* && $seen == *raftvip-vips* ]] || fail "box$box: runtime or VIP thread missing: $seen"
    [[ $(bed_status "$box" scheduling.realtime_priority) == "$prio" ]] ||
        fail "box$box status shows realtime_priority $(bed_status "$box" scheduling.realtime_priority), expected $prio"
    [[ $(bed_status "$box" scheduling.memory_locked) == "$locked" ]] ||
        fail "box$box status shows memory_locked $(bed_status "$box" scheduling.memory_locked), expected $locked"
    lck=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")
    if [[ $locked == true ]]; then ((lck > 0)) || fail "box$box: memory_locked but VmLck is $lck kB"
    else ((lck == 0)) || fail "box$box: VmLck is $lck kB with lock_memory = false"; fi
    note "box$box:prio=$prio,rss=$(bed_pid_rss_kb "$pid")kB,locked=${lck}kB"
}
scn_realtime_threads() {
    local b
    bed_create 3
    for b in 1 2 3; do bed_start_haproxy "$b"; done
    bed_start_raftvip 1
    bed_start_raftvip 2 $'[process]\nrealtime_priority = 0\nlock_memory = false'
    bed_start_raftvip 3 $'[process]\nrealtime_priority = 7'
    bed_wait 10000 all_follow a || fail "the cluster did not agree on a leader within 10 s"
    holder >/dev/null
    expect_sched 1 10 true
    expect_sched 2 0 false
    expect_sched 3 7 true
    grep -q 'scheduling: real-time SCHED_RR priority 10' "$(bed_boxdir 1)/raftvip.log" ||
        fail "box1's log does not state its scheduling"
}

# ---- scenarios: membership at run time (issue 10 item 4) ----

# drop_peer BOX ID: the [[peer]] entry of node ID removed from BOX's config file.
drop_peer() {
    local file
    file="$(bed_boxdir "$1")/raftvip-a.toml"
    awk -v id="$2" '
        /^\[\[peer\]\]$/ { held = $0; skip = 0; next }
        held != "" { if ($0 == "id = " id) { skip = 1 } else { print held; print }; held = ""; next }
        skip && /^(address|role) = / { next }
        { skip = 0; print }' "$file" >"$file.new" && mv "$file.new" "$file"
}
# vip_bound_since MS: how often the VIP was bound (on any box) since MS.
vip_bound_since() { bed_events | awk -v s="$1" '$1 >= s && $3 == "+"' | wc -l; }
# vip_moves_since MS BOX: how often the VIP was bound on another box than the one before since
# MS, starting from BOX (a fence release re-bound on the same box is no move).
vip_moves_since() {
    bed_events | awk -v s="$1" -v last="$2" '$1 >= s && $3 == "+" { if ($2 != last) n++; last = $2 } END { print n + 0 }'
}

# Three boxes and a client probing. A 4th box starts with the 4-box list and waits; the
# members' files are edited (status shows the difference) and reloaded: the 4th becomes a
# voter with no failed probe. A maintenance handover gives the failed probes of one planned
# handover in this cluster, for comparison. Then every other file drops the holder and one
# follower reloads: the holder hands over (one planned handover: the VIP is bound once), its
# successor removes it, and it reports removed and never stands again, also after a restart.
scn_membership_change() {
    bed_create 4
    local b h n probe t0 t1 fails out want others=()
    local waiting="waiting to be added (reload the [[peer]] lists)"
    local removed="removed from the cluster: stop it and clear its data_dir"
    bed_cluster a "$(bed_vip4 a)" "$(bed_vip6 a)" "$(bed_port a)" 1 2 3
    start_cluster_boxes a
    bed_start_haproxy 4
    h=$(holder)
    probe=$(bed_probe_start)
    bed_probe_wait_ok "$probe" 2000 || fail "the client cannot reach the VIP"

    t0=$(bed_now_ms)
    bed_cluster a "$(bed_vip4 a)" "$(bed_vip6 a)" "$(bed_port a)" 1 2 3 4
    bed_start_raftvip 4
    bed_wait_eq 3000 "$waiting" bed_status 4 membership.standing ||
        fail "box4 does not wait to be added: $(bed_status 4 membership.standing)"
    for b in 1 2 3; do bed_write_config "$b" >/dev/null; done
    out=$(bed_raftvip_cli 1 status)
    [[ $out == *"file differs: node 4 ($(bed_addr4 4):$(bed_port a)) is in the file but not a member"* ]] ||
        fail "status does not show the edited file's difference: $out"
    # Each reload answers once the list is the membership (the first one makes the change).
    for b in 1 2 3; do
        out=$(bed_raftvip_cli "$b" reload 2>&1) || fail "raftvip reload on box$b: $out"
        [[ $out == *"membership: the [[peer]] list is the membership, voters [[1, 2, 3, 4]]"* ]] ||
            fail "raftvip reload on box$b does not report the new membership: $out"
    done
    for b in 1 2 3 4; do
        bed_wait_eq 3000 "[[1, 2, 3, 4]]" bed_status "$b" membership.voters ||
            fail "box$b sees voters $(bed_status "$b" membership.voters), not [[1, 2, 3, 4]]"
    done
    [[ $(bed_status 4 membership.standing) == voter ]] || fail "box4 is $(bed_status 4 membership.standing)"
    out=$(bed_raftvip_cli 1 status)
    [[ $out == *"membership [1, 2, 3, 4]  this node: voter"* && $out != *"file differs"* ]] ||
        fail "status still differs after the change: $out"
    t1=$(bed_now_ms)
    fails=$(probe_failures "$probe" "$t0" "$t1")
    ((fails == 0)) || fail "$fails probes failed while box4 joined"
    [[ $(bed_holders) == "$h" ]] || fail "the VIP left box$h while box4 joined (holders: '$(bed_holders)')"
    note "add_box4=$((t1 - t0))ms failed_probes=0"

    # For comparison: one planned handover (maintenance) in this 4-box cluster.
    t0=$(bed_now_ms)
    maintenance_on "$h"
    n=$(wait_new_holder "$h")
    bed_probe_wait_ok "$probe" 5000 || fail "the client is not served after the maintenance handover"
    sleep 0.3
    note "maintenance_handover=box$h->box$n failed_probes=$(probe_failures "$probe" "$t0" "$(bed_now_ms)")"
    bed_raftvip_cli "$h" maintenance off >/dev/null
    bed_wait_eq 3000 true bed_status "$h" candidate_for_leader || fail "box$h does not stand again after maintenance off"

    h=$(holder)
    [[ $(bed_status "$h" role) == leader ]] || fail "holder box$h is not the leader"
    for b in 1 2 3 4; do
        [[ $b == "$h" ]] && continue
        drop_peer "$b" "$h"
        others+=("$b")
    done
    want=$(printf '%s, ' "${others[@]}")
    want="[[${want%, }]]"
    t0=$(bed_now_ms)
    out=$(bed_raftvip_cli "${others[0]}" reload 2>&1) || fail "raftvip reload on box${others[0]}: $out"
    [[ $out == *"membership: the [[peer]] list is the membership, voters $want"* ]] ||
        fail "raftvip reload on box${others[0]} does not report the membership without box$h: $out"
    n=$(wait_new_holder "$h")
    for b in "${others[@]}"; do
        bed_wait_eq 3000 "$want" bed_status "$b" membership.voters ||
            fail "box$b sees voters $(bed_status "$b" membership.voters), not $want"
    done
    bed_wait_eq 3000 "$removed" bed_status "$h" membership.standing ||
        fail "box$h does not report its removal: $(bed_status "$h" membership.standing)"
    grep -q "removed from the cluster" "$(bed_boxdir "$h")/raftvip.log" || fail "box$h did not log its removal"
    served_again "$probe" "$t0" "$MAX_HANDOVER_OUTAGE_MS"
    # The removed box never stands again: the VIP stays on the successor.
    stays_for 1000 "$(bed_vip4 a)" "$n"
    [[ $(bed_status "$h" candidate_for_leader) == false ]] || fail "removed box$h still stands"
    out=$(vip_moves_since "$t0" "$h")
    ((out == 1)) || fail "the VIP moved $out times during the removal; one planned handover moves it once"
    fails=$(probe_failures "$probe" "$t0" "$(bed_now_ms)")
    note "remove_holder=box$h->box$n failed_probes=$fails binds=$(vip_bound_since "$t0")"

    # The removal outlives a restart (its own log may still list the box as a voter).
    bed_kill_raftvip "$h" TERM
    bed_start_raftvip "$h"
    [[ $(bed_status "$h" membership.standing) == "$removed" ]] ||
        fail "box$h forgot its removal when it restarted: $(bed_status "$h" membership.standing)"
    grep -q "removed from the cluster before this start" "$(bed_boxdir "$h")/raftvip.log" ||
        fail "box$h did not log its earlier removal at start"
    stays_for 1000 "$(bed_vip4 a)" "$n"
    [[ $(bed_status "$h" candidate_for_leader) == false ]] || fail "restarted removed box$h stands"

    # A change the leader cannot make fails the reload, naming why: a 5th box that never runs.
    printf '\n[[peer]]\nid = 5\naddress = "%s:%s"\n' "$(bed_addr4 5)" "$(bed_port a)" \
        >>"$(bed_boxdir "${others[0]}")/raftvip-a.toml"
    out=$(reload_cli "${others[0]}")
    [[ $out == *"was not made the membership"*"node 5"*"has not caught up"* && $out == *exit=1 ]] ||
        fail "a reload adding a box that never runs: $out"
    [[ $(bed_status "${others[0]}" membership.voters) == "$want" ]] ||
        fail "the failed change moved the voters: $(bed_status "${others[0]}" membership.voters)"
}

if [[ ${1:-} == --one ]]; then
    bed_require
    run_one "$2"
else
    main "$@"
fi
