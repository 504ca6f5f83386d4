#!/usr/bin/env bash
# Flood benchmark (issue 7's goal): on the netns bed (integration/netns/lib.sh), a client holds
# 5,000 idle connections to every box's peer port and posts 4 MiB junk bodies back to back for
# 30 s, with the daemons under a 1,024-file soft limit (systemd's default). Reported next to
# the same 30 s without the flood: failed client probes of the VIP, leader changes, VIP holders
# throughout (sampled every second, and the kernel's exact add/delete events), RSS growth and
# peak open descriptors per node.
#
#                         namespace $BED_ID-br
#              +---------------------------------------------+
#              |                    br0                      |
#              |   box1        box2        box3      client  |
#              +----|-----------|-----------|----------|-----+
#              192.0.2.11  192.0.2.12  192.0.2.13  192.0.2.50   VIP 192.0.2.100
#              HAProxy + raftvip (peer port 7480,         probe http://VIP:80/ every 10 ms
#              status on 127.0.0.1:7481 in each box)      + flood of every box's :7480
#
# Both runs share one bed: first the quiet run, then the flood. Everything it creates belongs
# to the bed and is removed by lib.sh's cleanup trap on every exit path.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SECONDS_PER_RUN=30
CONNS=5000
BODY_MIB=4
NOFILE=1024

usage() {
    cat <<EOF
Usage: $0 [options]

Runs 3 raftvip boxes on a netns bed, measures $SECONDS_PER_RUN s quiet, then $SECONDS_PER_RUN s under a
flood of every box's peer port, and prints a Markdown table. Needs root, ip, haproxy,
python3, prlimit. The binary is \$RAFTVIP, else target/release/raftvip.

  -t SECONDS   length of each run (default $SECONDS_PER_RUN)
  -c CONNS     idle connections held per box (default $CONNS)
  -b MIB       size of each junk body (default $BODY_MIB)
  -f NOFILE    raftvip's soft limit of open files (default $NOFILE)
  -h           this help
EOF
}

while getopts "t:c:b:f:h" opt; do
    case $opt in
        t) SECONDS_PER_RUN=$OPTARG ;;
        c) CONNS=$OPTARG ;;
        b) BODY_MIB=$OPTARG ;;
        f) NOFILE=$OPTARG ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
for v in "$SECONDS_PER_RUN" "$CONNS" "$BODY_MIB" "$NOFILE"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || die "options take positive integers, not '$v'"
done
((SECONDS_PER_RUN <= 600 && CONNS <= 6000)) || die "bounded: at most 600 s and 6000 connections per box"
use_raftvip 0
BED_NOFILE=$NOFILE BED_STATUS_PORT=7481

rss_kb() { bed_pid_rss_kb "$(bed_raftvip_pid "$1")"; }
fds() { find "/proc/$(bed_raftvip_pid "$1")/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
leader_changes() {
    local b sum=0 n
    for b in $(bed_boxes a); do
        n=$(bed_status "$b" counters.leader_changes 2>/dev/null) || n=0
        sum=$((sum + n))
    done
    echo "$sum"
}

# measure NAME FLOOD(0|1): one run; appends a Markdown row to $BED_DIR/rows.md.
measure() {
    local name=$1 flood=$2 b start end flood_pid="" t holders min_h=9 max_h=0
    local -A rss0=() max_fds=()
    for b in $(bed_boxes a); do rss0[$b]=$(rss_kb "$b"); max_fds[$b]=$(fds "$b"); done
    local changes0; changes0=$(leader_changes)
    start=$(bed_now_ms)
    if ((flood)); then
        local targets=()
        for b in $(bed_boxes a); do targets+=("$(bed_addr4 "$b"):$(bed_port a)"); done
        ip netns exec "$(bed_ns client)" python3 "$BED_TOOL" flood "$SECONDS_PER_RUN" "$CONNS" "$BODY_MIB" \
            "${targets[@]}" >"$BED_DIR/flood-$name.json" 2>"$BED_DIR/flood-$name.err" &
        flood_pid=$!
    fi
    for ((t = 0; t < SECONDS_PER_RUN; t++)); do
        sleep 1
        holders=$(bed_holders | wc -w)
        ((holders < min_h)) && min_h=$holders
        ((holders > max_h)) && max_h=$holders
        for b in $(bed_boxes a); do
            local f; f=$(fds "$b")
            ((f > max_fds[$b])) && max_fds[$b]=$f
        done
    done
    [[ -z $flood_pid ]] || wait "$flood_pid" || die "the flooder failed: $(cat "$BED_DIR/flood-$name.err")"
    end=$(bed_now_ms)
    # Let a flood's last connections drain before reading the status counters.
    sleep 1
    local failed attempts overlap growth="" peak=""
    failed=$(probe_failures "$probe" "$start" "$end")
    attempts=$(awk -v s="$start" -v e="$end" '$1 >= s && $1 <= e' "$probe" | wc -l)
    overlap=$(bed_overlap "$(bed_vip4 a)" "$start" "$end")
    for b in $(bed_boxes a); do
        growth+=$(awk -v a="${rss0[$b]}" -v z="$(rss_kb "$b")" 'BEGIN { printf "%+.2f ", (z - a) / 1024 }')
        peak+="${max_fds[$b]} "
    done
    printf '| %s | %s / %s | %s | %s–%s (max %s, %s ms with 2+) | %s| %s|\n' \
        "$name" "$failed" "$attempts" "$(($(leader_changes) - changes0))" "$min_h" "$max_h" \
        "${overlap% *}" "${overlap#* }" "$growth" "$peak" >>"$BED_DIR/rows.md"
    tail -n 1 "$BED_DIR/rows.md" >&2
}

bed_create 3
for b in $(bed_boxes a); do bed_start_haproxy "$b"; done
for b in $(bed_boxes a); do bed_start_raftvip "$b"; done
bed_wait 10000 bed_one_leader || die "no leader within 10 s"
bed_wait_holder 5000 "$(bed_vip4 a)" >/dev/null || die "no single VIP holder"
probe=$(bed_probe_start "$(bed_vip4 a)")
bed_probe_wait_ok "$probe" 5000 || die "the client cannot reach the VIP"
for b in $(bed_boxes a); do
    soft=$(awk '/^Max open files/ { print $4 }' "/proc/$(bed_raftvip_pid "$b")/limits")
    [[ $soft == "$NOFILE" ]] || die "box$b runs with a soft limit of $soft files, not $NOFILE"
done
sleep 2

measure quiet 0
measure flood 1
bed_probe_stop probe

{
    echo "bench-flood: 3 boxes, $SECONDS_PER_RUN s per run, flood = $CONNS idle connections + $BODY_MIB MiB junk posts on 4 connections per box, raftvip soft limit $NOFILE files, binary $RAFTVIP"
    echo
    echo "| run | failed probes / probes | leader changes | VIP holders (sampled 1/s) | RSS growth MB box1 box2 box3 | peak open fds box1 box2 box3 |"
    echo "|---|---|---|---|---|---|"
    cat "$BED_DIR/rows.md"
    echo
    echo "flooder (per target):"
    sed 's/^/  /' "$BED_DIR/flood-flood.json"
}
