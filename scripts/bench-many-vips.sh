#!/usr/bin/env bash
# Many VIPs (issue 13): does a cluster with hundreds of VIPs settle and stay settled, how fast
# does box loss move all of them, and what do they cost the holder at idle? On the netns bed
# (integration/netns/lib.sh) with real HAProxy and default timing:
#
#                         namespace $BED_ID-br
#              +---------------------------------------------------+
#              |                       br0                         |
#              |   box1      box2    ...   boxN           client   |
#              +----|---------|-------------|---------------|------+
#                 eth0      eth0          eth0            eth0
#              192.0.2.11   .12           .1N          192.0.2.50 (+ route 198.51.100.0/24)
#              VIPs: 192.0.2.100, 2001:db8::100 and BED_EXTRA_VIPS more, 198.51.100.1 upward
#
# For each box count and VIP count (the issue's table method): start every box, read `term`
# from box1's status at 3, 6, 10, 15 and 20 s, then count leader changes (term moves) for the
# stable period, and how often the leader let go of its VIPs meanwhile because no quorum
# acknowledged it within the fence (its fence releases: each one a client outage). With -s
# both cores are kept busy by two bounded busy loops meanwhile. For
# VIP counts of 4 and more it then takes the holder off the segment (link down) and reports
# when the client first reaches the first and the last extra VIP again (a TCP connect to port
# 81: a RST from the new holder means "reachable"), with the new holder's own account of its
# takeover (time to the first and to the last VIP announced, from its "VIPs held" log line;
# goal: the last of 50 within 10 ms of the first), and it reports the holder's idle CPU (utime
# + stime over 10 s from /proc, as CPU-seconds and as a share of one core) for every VIP count.
#
# Everything it creates belongs to the bed and is removed by lib.sh's cleanup trap.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

BOXES="3 5"
# Total VIPs per box; the bed always has 2 (192.0.2.100 and 2001:db8::100), so 1 means "the
# bed's two" and N > 2 adds N - 2 IPv4 VIPs.
VIP_COUNTS="1 10 50 200"
STABLE_S=120
SATURATE=0
IDLE_S=10
OUT=""
KEEP=""

usage() {
    cat <<EOF
Usage: $0 [options]

  -b "3 5"            box counts (default "$BOXES")
  -v "1 10 50 200"    VIP counts (default "$VIP_COUNTS")
  -t SECONDS          stable period after settling, leader changes counted (default $STABLE_S)
  -s                  saturate both cores with two busy loops while measuring (bounded)
  -i SECONDS          window of the holder's idle CPU measurement (default $IDLE_S)
  -o FILE             also append the result lines to FILE
  -k DIR              keep each bed's files (raftvip and HAProxy logs) in DIR/boxesN-vipsM
Needs root, ip, nft, haproxy, python3 and target/release/raftvip (or RAFTVIP=...).
EOF
}

while getopts "b:v:t:si:o:k:h" opt; do
    case $opt in
        b) BOXES=$OPTARG ;;
        v) VIP_COUNTS=$OPTARG ;;
        t) STABLE_S=$OPTARG ;;
        s) SATURATE=1 ;;
        i) IDLE_S=$OPTARG ;;
        o) OUT=$OPTARG ;;
        k) KEEP=$OPTARG ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 1 ;;
    esac
done

say() {
    printf '%s\n' "$*"
    [[ -z $OUT ]] || printf '%s\n' "$*" >>"$OUT"
}

# cpu_ticks PID: "utime stime" in clock ticks.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# First time (epoch ms) after FROM_MS at which the client reaches each target; one line each.
reach_times() {
    local from=$1; shift
    bed_exec client python3 "$BED_TOOL" reach-times "$from" 81 "$@"
}

# takeover_times BOX: from BOX's last "VIPs held" log line, how long its VIP thread took from
# the start of the takeover to the first and to the last VIP announced, and the spread between
# them (goal: the last of 50 within 10 ms of the first).
takeover_times() {
    [[ -f $(bed_boxdir "$1")/raftvip.log ]] || { echo "takeover=?"; return; }
    grep 'VIPs held' "$(bed_boxdir "$1")/raftvip.log" | tail -n 1 | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        if (v["first_us"] == "" || v["last_us"] == "") { print "takeover=?"; exit }
        printf "takeover_first_announced_us=%d takeover_last_announced_us=%d takeover_spread_us=%d",
            v["first_us"], v["last_us"], v["last_us"] - v["first_us"] }'
}

one_config() {
    local nboxes=$1 vips=$2 extra b t0 terms=() at term0 term1 leader fr0 fr1 h n pid c0 c1 cpu fault
    extra=$((vips > 2 ? vips - 2 : 0))
    (
        export BED_EXTRA_VIPS=$extra
        [[ -z $KEEP ]] || export BED_KEEP="$KEEP/boxes$nboxes-vips$vips"
        # shellcheck source-path=SCRIPTDIR source=../integration/netns/lib.sh
        source "$REPO/integration/netns/lib.sh"
        bed_create "$nboxes" 2>/dev/null
        ((SATURATE)) && bed_saturate $((STABLE_S + 60)) 2  # each loop bounded by the whole measurement
        for b in $(seq 1 "$nboxes"); do bed_start_haproxy "$b"; done
        for b in $(seq 1 "$nboxes"); do bed_start_raftvip "$b"; done
        t0=$(bed_now_ms)
        for at in 3 6 10 15 20; do
            while (($(bed_now_ms) < t0 + at * 1000)); do sleep 0.05; done
            terms+=("$(bed_status 1 term 2>/dev/null || echo '?')")
        done
        term0=$(bed_status 1 term)
        leader=$(bed_status 1 leader_id)
        fr0=$(bed_status "$leader" counters.fence_releases 2>/dev/null || echo '?')
        sleep "$STABLE_S"
        term1=$(bed_status 1 term)
        fr1=$(bed_status "$leader" counters.fence_releases 2>/dev/null || echo '?')
        [[ $fr0$fr1 =~ ^[0-9]+$ ]] && fr1=$((fr1 - fr0)) || fr1='?'
        ((SATURATE)) && bed_unsaturate
        h=$(bed_leader)
        pid=$(bed_raftvip_pid "$h")
        c0=$(cpu_ticks "$pid"); sleep "$IDLE_S"; c1=$(cpu_ticks "$pid")
        # CPU-seconds (user + system; the system part is mostly the kernel handling our
        # netlink requests) and the share of one core.
        cpu=$(awk -v c0="$c0" -v c1="$c1" -v hz="$(getconf CLK_TCK)" -v s="$IDLE_S" 'BEGIN {
            split(c0, a, " "); split(c1, b, " "); u = (b[1] - a[1]) / hz; k = (b[2] - a[2]) / hz
            printf "%.2fs(sys=%.2fs)=%.2f%%", u + k, k, 100 * (u + k) / s }')
        say "boxes=$nboxes vips=$vips saturated=$SATURATE term@3,6,10,15,20s=${terms[*]} leader=$leader" \
            "term_changes_in_${STABLE_S}s=$((term1 - term0)) leader_fence_releases=$fr1" \
            "holder=box$h held_extra=$(bed_extra_held "$h")" \
            "holder_idle_cpu_in_${IDLE_S}s=$cpu load=$(cut -d' ' -f1-3 /proc/loadavg)"
        if ((extra >= 2)); then
            # Neighbour entries for the first and last VIP on the client, then lose the holder.
            reach_times "$(bed_now_ms)" "$(bed_extra_vip 1)" "$(bed_extra_vip "$extra")" >/dev/null
            fault=$(bed_now_ms)
            bed_link_down "$h"
            mapfile -t lines < <(reach_times "$fault" "$(bed_extra_vip 1)" "$(bed_extra_vip "$extra")")
            n=$(bed_leader | grep -vx "$h" || echo '?')
            say "boxes=$nboxes vips=$vips saturated=$SATURATE box_loss box$h->box$n" \
                "first_vip_reachable_ms=${lines[0]#* } last_vip_reachable_ms=${lines[1]#* }" \
                "$(takeover_times "$n")"
        fi
    )
}

[[ $EUID -eq 0 ]] || { echo "$0: must run as root" >&2; exit 1; }
say "# bench-many-vips $(date -u +%FT%TZ) raftvip=$(git -C "$REPO" rev-parse --short HEAD) stable=${STABLE_S}s saturate=$SATURATE"
for boxes in $BOXES; do
    for vips in $VIP_COUNTS; do
        # A bed that fails to start (a slow backend on a loaded box) costs one line, not the run.
        one_config "$boxes" "$vips" || say "boxes=$boxes vips=$vips: the bed failed (exit $?)"
    done
done
