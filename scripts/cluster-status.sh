#!/usr/bin/env bash
# cluster-status.sh: every node's view of the raftvip cluster in one table, and a verdict
# that monitoring and cron can act on.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=raftvip-ops.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/raftvip-ops.sh"

usage() {
    cat <<EOF
Usage: ${0##*/} [--config FILE] [--json]

Asks every [[peer]] of the config for GET /v1/status and prints one line per node: role,
the leader it follows, term, HAProxy verdict (and why), VIPs held, maintenance, and the
leader's last contact with it. Then a verdict:

  healthy   one leader, exactly one holder, every node reachable, healthy, not in maintenance
  degraded  still serving, but a node is unreachable, unhealthy, in maintenance, or does
            not follow the leader (cut off from it, or started with another secret)
  broken    no leader, no holder of the VIPs, or two holders

  --config FILE   raftvip config (default: $RAFTVIP_CONFIG)
  --json          print the collected statuses and the verdict as JSON instead
  -h, --help      this help

Exit codes: 0 healthy, 1 degraded, 2 broken, 3 usage or setup error (no config, no curl/jq).
Needs curl and jq; reads only, changes nothing.
EOF
}

# The verdict and its reasons from cluster_json's array.
# shellcheck disable=SC2016 # jq variables
VERDICT_JQ='
  [.[] | select(.reachable)] as $up
  | [$up[] | select(.status.role == "leader") | .id] as $leaders
  | [$up[] | select(.status.holds_vips or any(.status.vips[]; .held)) | .id] as $holders
  | ([.[] | select(.reachable | not) | "node \(.id) (\(.address)) unreachable"]
     + [$up[] | select(.status.health != null and (.status.healthy | not))
        | "node \(.id) HAProxy unhealthy: \(.status.health.reason // "no verdict yet")"]
     + [$up[] | select(.status.maintenance) | "node \(.id) in maintenance"]
     + (if ($leaders | length) > 1 then ["nodes \($leaders | join(",")) all say they lead"] else [] end)
     + (if ($leaders | length) == 1
        then [$up[] | select(.id != $leaders[0] and .status.leader_id != $leaders[0])
              | "node \(.id) does not follow leader \($leaders[0]) (it follows: \(.status.leader_id // "none"))"]
        else [] end)
    ) as $degraded
  | ((if ($leaders | length) == 0 then ["no reachable node is leader"] else [] end)
     + (if ($holders | length) == 0 then ["no node holds the VIPs"] else [] end)
     + (if ($holders | length) > 1 then ["two holders: nodes \($holders | join(", "))"] else [] end)
    ) as $broken
  | {verdict: (if ($broken | length) > 0 then "broken" elif ($degraded | length) > 0 then "degraded" else "healthy" end),
     exit: (if ($broken | length) > 0 then 2 elif ($degraded | length) > 0 then 1 else 0 end),
     reasons: ($broken + $degraded), leaders: $leaders, holders: $holders}'

# One tab-separated row per node; last contact as the (first) leader saw it.
# shellcheck disable=SC2016 # jq variables
ROWS_JQ='
  (first(.[] | select(.reachable and .status.role == "leader")) // null) as $leader
  | .[] | . as $n
  | if .reachable | not then [(.id | tostring), "UNREACHABLE", "-", "-", "-", "-", "-", "-"]
    else .status as $s
    | [ ($n.id | tostring),
        $s.role,
        ($s.leader_id // "none" | tostring),
        ($s.term | tostring),
        (if $s.maintenance then "ON" else "off" end),
        (if $leader == null then "?"
         elif $leader.id == $n.id then "(leader)"
         else ([$leader.status.peers[] | select(.id == $n.id) | .last_contact_ms][0]
               | if . == null then "never" else "\(.) ms" end) end),
        (if $s.health == null then "n/a (witness)"
         elif $s.healthy then "healthy"
         else "UNHEALTHY: \($s.health.reason // "no verdict yet")" end),
        ([$s.vips[] | select(.held) | .address] | if length == 0 then "-" else join(",") end) ]
    end
  | @tsv'

main() {
    local json=0
    while (($#)); do
        case $1 in
            --config) need_value "$@"; RAFTVIP_CONFIG=$2; shift 2 ;;
            --json) json=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; exit 3 ;;
        esac
    done
    need curl jq
    [[ -r $RAFTVIP_CONFIG ]] || die "cannot read $RAFTVIP_CONFIG (use --config FILE)"

    local nodes verdict code
    nodes=$(cluster_json)
    verdict=$(jq -c "$VERDICT_JQ" <<<"$nodes")
    code=$(jq -r .exit <<<"$verdict")
    if ((json)); then
        jq -n --argjson v "$verdict" --argjson n "$nodes" '$v + {nodes: $n}'
        exit "$code"
    fi

    local fmt='%-5s %-11s %-7s %-6s %-12s %-13s %-36s %s\n'
    # shellcheck disable=SC2059 # the format is ours
    printf "$fmt" NODE ROLE LEADER TERM MAINTENANCE "LAST CONTACT" HAPROXY "VIPS HELD"
    local id role leader term maint contact health vips
    while IFS=$'\t' read -r id role leader term maint contact health vips; do
        # shellcheck disable=SC2059
        printf "$fmt" "$id" "$role" "$leader" "$term" "$maint" "$contact" "$health" "$vips"
    done < <(jq -r "$ROWS_JQ" <<<"$nodes")
    say ""
    say "cluster: $(jq -r '.verdict | ascii_upcase' <<<"$verdict")$(jq -r 'if .holders | length == 1 then "  (VIPs on node \(.holders[0]))" else "" end' <<<"$verdict")"
    jq -r '.reasons[] | "  - \(.)"' <<<"$verdict"
    exit "$code"
}

main "$@"
