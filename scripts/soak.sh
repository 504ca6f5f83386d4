#!/usr/bin/env bash
# Soak: N idle boxes on the netns bed (integration/netns/lib.sh) with a client probing the VIP,
# for a given time; every interval, each daemon's RSS (from /proc) and the size of its tables of
# per-request state (raftvip_table_entries from /metrics, when the binary has them) are
# recorded, so memory that grows with uptime shows (issue 14).
#
#                         namespace $BED_ID-br
#              +---------------------------------------------+
#              |                    br0                      |
#              |   box1  ...  boxN                   client  |
#              +----|----------|-------------------------|---+
#              192.0.2.11 .. 192.0.2.1N               192.0.2.50   VIP 192.0.2.100
#              HAProxy + raftvip on every box          probes http://VIP:80/ every 10 ms
#
# Everything it creates belongs to the bed and is removed by lib.sh's cleanup trap.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BOXES=3
MINUTES=60
INTERVAL_S=60
OUT=""

usage() {
    cat <<EOF
Usage: $0 [options]

Runs N raftvip boxes on a netns bed for a given time with a client probing the VIP, and prints
each node's RSS and table sizes every interval, as a Markdown table. Needs root, ip, haproxy,
python3. The binary is \$RAFTVIP, else target/release/raftvip.

  -n BOXES            boxes (default $BOXES)
  -m MINUTES          duration (default $MINUTES)
  -i SECONDS          sampling interval (default $INTERVAL_S)
  --heartbeat-ms MS   raftvip's [timing] heartbeat_ms (default: raftvip's default), to age faster
  -o FILE             also write the raw samples (TSV) to FILE and the table to FILE.md
  -h                  this help

RAFTVIP_HEARTBEAT_MS, RAFTVIP_ELECTION_TIMEOUT_MS (MIN,MAX) and RAFTVIP_FENCE_MS set the
whole [timing] (--heartbeat-ms wins over the first).
EOF
}

while (($#)); do
    case $1 in
        -n) BOXES=$2; shift 2 ;;
        -m) MINUTES=$2; shift 2 ;;
        -i) INTERVAL_S=$2; shift 2 ;;
        --heartbeat-ms) HEARTBEAT_MS=$2; shift 2 ;;
        -o) OUT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ $BOXES =~ ^[1-9]$ && $MINUTES =~ ^[0-9]+$ && $INTERVAL_S =~ ^[1-9][0-9]*$ ]] ||
    die "bad -n, -m or -i"
[[ $HEARTBEAT_MS =~ ^[1-9][0-9]*$ ]] || die "bad --heartbeat-ms"
use_raftvip 0

# tables BOX: "nonces=N reject_log=N ..." from /metrics ("-" if the binary has none).
tables() {
    local out
    out=$(bed_exec "$1" python3 "$BED_TOOL" metrics "$(bed_status_url "$1")/metrics" raftvip_table_entries 2>/dev/null |
        sed -E 's/^raftvip_table_entries\{table="([a-z_]+)"\} /\1=/' | sort | tr '\n' ' ') || true
    echo "${out:--}"
}

bed_create "$BOXES"
for b in $(bed_boxes a); do bed_start_haproxy "$b"; done
for b in $(bed_boxes a); do bed_start_raftvip "$b" "$(timing_toml)"; done
bed_wait 10000 bed_one_leader || die "no leader within 10 s"
probe=$(bed_probe_start "$(bed_vip4 a)")
bed_probe_wait_ok "$probe" 5000 || die "the client cannot reach the VIP"

raw=$BED_DIR/soak.tsv
printf 'minute\tbox\trole\trss_kb\ttables\n' >"$raw"
start=$(bed_now_ms)
samples=$((MINUTES * 60 / INTERVAL_S))
bed_log "soak: $BOXES boxes, $MINUTES min, sample every $INTERVAL_S s, $(timing_line), binary $RAFTVIP"
for ((i = 1; i <= samples; i++)); do
    # Sleep to the sample's due time (sampling itself takes a moment).
    due=$((start + i * INTERVAL_S * 1000))
    now=$(bed_now_ms)
    ((due > now)) && sleep "$(awk -v ms=$((due - now)) 'BEGIN { printf "%.3f", ms / 1000 }')"
    minute=$(awk -v s="$((i * INTERVAL_S))" 'BEGIN { printf "%g", s / 60 }')
    for b in $(bed_boxes a); do
        printf '%s\tbox%s\t%s\t%s\t%s\n' "$minute" "$b" "$(bed_status "$b" role 2>/dev/null || echo '?')" \
            "$(bed_pid_rss_kb "$(bed_raftvip_pid "$b")")" "$(tables "$b")" >>"$raw"
    done
    tail -n "$BOXES" "$raw" | sed 's/^/  /' >&2
done
end=$(bed_now_ms)
bed_probe_stop probe

failed=$(probe_failures "$probe" "$start" "$end")
attempts=$(awk -v s="$start" -v e="$end" '$1 >= s && $1 <= e' "$probe" | wc -l)
changes=""
for b in $(bed_boxes a); do
    changes+="box$b=$(bed_status "$b" counters.leader_changes) "
done

# The Markdown table: one row per sample, one column per box ("RSS MB (role)"), then each
# box's tables at the first and last sample.
{
    echo "soak: $BOXES boxes, $MINUTES min, $(timing_line), binary $RAFTVIP"
    echo "probes: $attempts, failed: $failed; leader changes seen per node: $changes"
    echo
    printf '| minute |'; for b in $(bed_boxes a); do printf ' box%s |' "$b"; done; echo
    printf '|---|'; for _ in $(bed_boxes a); do printf -- '---|'; done; echo
    awk -F'\t' -v n="$BOXES" 'NR > 1 {
        cell = sprintf("%.2f MB (%s)", $4 / 1024, $3)
        row = (($2 == "box1") ? "| " $1 " | " : row) cell " | "
        if ($2 == "box" n) print row
    }' "$raw"
    echo
    echo "tables (entries) at the first and last sample:"
    awk -F'\t' -v n="$BOXES" 'NR > 1 && NR <= 1 + n { print "  first " $2 ": " $5 }' "$raw"
    tail -n "$BOXES" "$raw" | awk -F'\t' '{ print "  last  " $2 ": " $5 }'
} >"$BED_DIR/soak.md"
cat "$BED_DIR/soak.md"
if [[ -n $OUT ]]; then
    cp "$raw" "$OUT"
    cp "$BED_DIR/soak.md" "$OUT.md"
fi
