#!/usr/bin/env bash
# failover-drill.sh: a controlled handover on a live cluster, measured by a client probe.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=raftvip-ops.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/raftvip-ops.sh"

TIMEOUT_S=10
SETTLE_S=2
PROBE_INTERVAL_S=0.02
# A probe that takes longer counts as failed. It bounds the resolution: one lost SYN costs a
# whole timeout. 100 ms is ample for HAProxy on a LAN; raise it for slow backends.
PROBE_TIMEOUT_S=0.1
PROBE_URL=""
PROBE_CMD=""

usage() {
    cat <<EOF
Usage: ${0##*/} [--config FILE] [--probe URL] [--probe-cmd PREFIX] [--probe-timeout S]
       [--timeout S] [--settle S]

Moves the VIPs off their holder on purpose and reports what a client saw:
  1. checks the cluster is healthy (cluster-status.sh would exit 0),
  2. starts a probe: GET URL every ${PROBE_INTERVAL_S}s (curl, --probe-timeout each),
  3. puts the holder into maintenance (the controlled handover: it hands the VIPs to a
     healthy peer), waits for the new holder, lets the probe run --settle seconds more,
  4. takes the old holder out of maintenance again (also on failure or Ctrl-C),
  5. prints the old and new holder, the handover time and the probe's outage.
Step 3 uses maintenance rather than 'raftvip transfer', so the old holder cannot be elected
again before step 4.

  --config FILE       raftvip config (default: $RAFTVIP_CONFIG)
  --probe URL         what the client fetches (default: http://FIRST-VIP/)
  --probe-cmd PREFIX  run the probe through PREFIX, e.g. 'ssh client.example' or
                      'ip netns exec client' (default: on this box; the probe needs bash+curl)
  --probe-timeout S   a probe slower than this fails (default: $PROBE_TIMEOUT_S)
  --timeout S         wait this long for the new holder (default: $TIMEOUT_S)
  --settle S          keep probing this long after the move (default: $SETTLE_S)

Outage = from the start of the first failed probe to the start of the first success after
the last failure (0 if none failed). Resolution: one probe interval plus curl's start-up
(~20-30 ms); a single failed probe already counts a whole --probe-timeout.
Exit codes: 0 the VIPs moved and the client was served again; 1 the drill failed (the VIPs did
not move, or the client was not served again); 2 the cluster was not healthy, nothing
changed; 3 usage or setup error.
EOF
}

# The probe loop, run by bash (locally or through --probe-cmd): "START_MS ok|fail" lines,
# for at most $2 seconds; $3 between probes, $4 timeout of each.
# shellcheck disable=SC2016 # expanded by the probe's own bash
PROBE_LOOP='end=$((SECONDS + $2)); while ((SECONDS < end)); do t=${EPOCHREALTIME/./}; t=${t:0:13}
if curl -fsS -o /dev/null --max-time "$4" "$1" 2>/dev/null; then echo "$t ok"; else echo "$t fail"; fi
sleep "$3"; done'

first_vip_url() {
    local vip
    vip=$(awk '/^[[:space:]]*\[\[vip\]\]/ { v = 1; next } v && /^[[:space:]]*address/ { gsub(/.*= *"|\/.*/, ""); print; exit }' "$RAFTVIP_CONFIG")
    [[ -n $vip ]] || die "no [[vip]] in $RAFTVIP_CONFIG: give --probe URL"
    [[ $vip == *:* ]] && vip="[$vip]"
    echo "http://$vip/"
}

one_holder_other_than() {
    local h
    h=$(holders)
    [[ -n $h && $h != *" "* && $h != "$1" ]] && echo "$h"
}

main() {
    while (($#)); do
        case $1 in
            --config) need_value "$@"; RAFTVIP_CONFIG=$2; shift 2 ;;
            --probe) need_value "$@"; PROBE_URL=$2; shift 2 ;;
            --probe-cmd) need_value "$@"; PROBE_CMD=$2; shift 2 ;;
            --probe-timeout) need_value "$@"; PROBE_TIMEOUT_S=$2; shift 2 ;;
            --timeout) need_seconds "$@"; TIMEOUT_S=$2; shift 2 ;;
            --settle) need_seconds "$@"; SETTLE_S=$2; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; exit 3 ;;
        esac
    done
    need curl jq "$RAFTVIP_BIN"
    [[ -r $RAFTVIP_CONFIG ]] || die "cannot read $RAFTVIP_CONFIG (use --config FILE)"
    PROBE_URL=${PROBE_URL:-$(first_vip_url)}

    require_healthy
    local old
    old=$(holders)

    local log probe_pid prefix=()
    log=$(mktemp /tmp/raftvip-drill.XXXXXX)
    read -r -a prefix <<<"$PROBE_CMD"
    "${prefix[@]}" bash -c "$PROBE_LOOP" probe "$PROBE_URL" $((TIMEOUT_S + SETTLE_S + 10)) "$PROBE_INTERVAL_S" "$PROBE_TIMEOUT_S" >"$log" &
    probe_pid=$!
    trap 'kill "$probe_pid" 2>/dev/null || true; rm -f "$log"' EXIT
    wait_until 5 grep -q ' ok$' "$log" || { say "the probe never reached $PROBE_URL before the drill" >&2; exit 1; }
    say "probe: $PROBE_URL ${PROBE_CMD:+via \"$PROBE_CMD\" }served; node $old holds the VIPs"

    local t0 t1 new="" rc=0
    t0=$(now_ms)
    maintenance on "$old"
    trap 'kill "$probe_pid" 2>/dev/null || true; rm -f "$log"; maintenance off "$old" || true' EXIT
    wait_until "$TIMEOUT_S" one_holder_other_than "$old" >/dev/null || true
    new=$(one_holder_other_than "$old" || true)
    t1=$(now_ms)
    sleep "$SETTLE_S"
    kill "$probe_pid" 2>/dev/null || true
    wait "$probe_pid" 2>/dev/null || true

    local summary
    summary=$(awk -v t0="$t0" '
        $1 >= t0 { n++ }
        $1 >= t0 && $2 == "fail" { fails++; if (!first) first = $1; recovered = 0 }
        $1 >= t0 && $2 == "ok" && first && !recovered { recovered = $1 }
        END { printf "%d %d %.0f %.0f\n", n, fails, first, recovered }' "$log")
    local probes fails first recovered
    read -r probes fails first recovered <<<"$summary"

    say "old holder: node $old"
    if [[ -n $new ]]; then
        say "new holder: node $new (its status API reported it $((t1 - t0)) ms after maintenance on; polled)"
    else
        say "new holder: NONE within ${TIMEOUT_S}s (holders: '$(holders)')"
        rc=1
    fi
    if ((fails == 0)); then
        say "client: $probes probes, none failed (outage 0 ms, below the probe resolution)"
    elif ((recovered > 0)); then
        say "client: $probes probes, $fails failed; outage $((recovered - first)) ms"
    else
        say "client: $probes probes, $fails failed; NOT served again within ${SETTLE_S}s"
        rc=1
    fi
    trap 'rm -f "$log"' EXIT
    maintenance off "$old"
    say "node $old: out of maintenance (the VIPs stay on node ${new:-?}: no preemption)"
    exit "$rc"
}

main "$@"
