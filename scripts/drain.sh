#!/usr/bin/env bash
# drain.sh: takes a box out of service (maintenance on, VIPs gone, HAProxy connections drained)
# or puts it back, and waits until that has really happened.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=raftvip-ops.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/raftvip-ops.sh"

TIMEOUT_S=10
DRAIN_TIMEOUT_S=60

usage() {
    cat <<EOF
Usage: ${0##*/} on|off [--node ID] [--config FILE] [--timeout S] [--drain-timeout S]

on   puts node ID (default: this box's node_id) into maintenance: it hands the VIPs to a healthy
     peer and never takes them. Waits until the node holds no VIP and another node does, then
     (when run on that box) until its HAProxy frontends have no current sessions left (scur
     from the stats socket of [haproxy] stats_socket; needs socat).
     Refuses, changing nothing, when no other healthy node could take the VIPs.
off  ends maintenance and waits until the node stands in elections again, and, if nobody
     held the VIPs, until they are back. raftvip does not preempt: VIPs held elsewhere stay
     there (use failover-drill.sh to move them back).

  --node ID          the node to drain (default: node_id of the config)
  --config FILE      raftvip config (default: $RAFTVIP_CONFIG)
  --timeout S        wait this long for the VIPs to move / the node to return (default: $TIMEOUT_S)
  --drain-timeout S  wait this long for HAProxy's sessions to end (default: $DRAIN_TIMEOUT_S)

Exit codes: 0 done; 1 it did not happen in time (a failed 'on' is rolled back: maintenance
off again); 2 refused by a precondition, nothing changed; 3 usage or setup error.
EOF
}

# Current sessions of every HAProxy frontend on this box (sum of scur).
frontend_sessions() {
    local socket
    socket=$(cfg_get stats_socket haproxy)
    echo "show stat" | socat -t 1 - "UNIX-CONNECT:$socket" |
        awk -F, '$2 == "FRONTEND" { n += $5 } END { print n + 0 }'
}
no_sessions() { [[ $(frontend_sessions) == 0 ]]; }

# released ID: node ID holds no VIP, and exactly one other node does.
released() {
    local h
    [[ $(node_field "$1" '.holds_vips or any(.vips[]; .held)') == false ]] || return 1
    h=$(holders)
    [[ -n $h && $h != *" "* && $h != "$1" ]]
}

one_holder() { local h; h=$(holders); [[ -n $h && $h != *" "* ]]; }

standing() {
    [[ $(node_field "$1" '(.maintenance | not) and .candidate_for_leader') == true ]]
}

drain_on() {
    local node=$1 others
    [[ $(node_field "$node" .maintenance) != true ]] || { say "node $node: already in maintenance"; }
    # Precondition: someone else must be able to take the VIPs.
    others=$(cluster_json | jq -r --argjson n "$node" \
        '[.[] | select(.reachable and .id != $n and .status.candidate_for_leader and (.status.maintenance | not)) | .id] | join(" ")')
    [[ -n $others ]] || DIE_CODE=2 die "no other reachable node stands in elections: draining node $node would leave nobody to hold the VIPs"

    maintenance on "$node"
    # Roll back if we do not get to the end.
    trap 'say "rolling back: maintenance off on node $node" >&2; maintenance off "$node" || true' EXIT
    if ! wait_until "$TIMEOUT_S" released "$node"; then
        say "node $node: the VIPs did not move within ${TIMEOUT_S}s (holders: '$(holders)')" >&2
        exit 1
    fi
    say "node $node: VIPs released; now held by node $(holders)"
    trap - EXIT

    if [[ $node != "$(cfg_get node_id)" ]]; then
        say "node $node: not this box, so its HAProxy sessions are not watched (run drain.sh on that box to wait for them)"
    elif [[ -z $(cfg_get stats_socket haproxy) ]]; then
        say "node $node: no [haproxy] stats_socket, no sessions to wait for"
    else
        need socat
        if ! wait_until "$DRAIN_TIMEOUT_S" no_sessions; then
            say "node $node: HAProxy still has $(frontend_sessions) session(s) after ${DRAIN_TIMEOUT_S}s (it stays in maintenance)" >&2
            exit 1
        fi
        say "node $node: HAProxy frontends have no sessions left"
    fi
    say "node $node: drained"
}

drain_off() {
    local node=$1
    maintenance off "$node"
    if ! wait_until "$TIMEOUT_S" standing "$node"; then
        say "node $node: maintenance is off but it does not stand in elections after ${TIMEOUT_S}s (unhealthy? see raftvip status)" >&2
        exit 1
    fi
    # Nobody held the VIPs (every other box drained or unhealthy): they come back to this one.
    if [[ -z $(holders) ]] && ! wait_until "$TIMEOUT_S" one_holder; then
        say "node $node: back in service, but nobody holds the VIPs after ${TIMEOUT_S}s" >&2
        exit 1
    fi
    say "node $node: back in service; VIPs held by node $(holders) (no preemption)"
}

main() {
    local action="" node=""
    while (($#)); do
        case $1 in
            on | off) action=$1; shift ;;
            --node) need_value "$@"; node=$2; shift 2 ;;
            --config) need_value "$@"; RAFTVIP_CONFIG=$2; shift 2 ;;
            --timeout) need_seconds "$@"; TIMEOUT_S=$2; shift 2 ;;
            --drain-timeout) need_seconds "$@"; DRAIN_TIMEOUT_S=$2; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; exit 3 ;;
        esac
    done
    [[ -n $action ]] || { usage >&2; exit 3; }
    need curl jq "$RAFTVIP_BIN"
    [[ -r $RAFTVIP_CONFIG ]] || die "cannot read $RAFTVIP_CONFIG (use --config FILE)"
    node=${node:-$(cfg_get node_id)}
    peer_address "$node" >/dev/null
    fetch_status "$(peer_address "$node")" >/dev/null || DIE_CODE=2 die "node $node does not answer at $(peer_address "$node")"
    "drain_$action" "$node"
}

main "$@"
