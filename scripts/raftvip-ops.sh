# shellcheck shell=bash
# Shared functions of the operator scripts (cluster-status.sh, drain.sh, failover-drill.sh,
# rolling-upgrade.sh). Sourced, never run. Needs curl and jq.
#
# How the scripts reach the cluster: read-only questions go over HTTP to every peer's
# GET /v1/status (the [[peer]] addresses of the config); changes (maintenance) go through the
# `raftvip` CLI, which signs them with the cluster secret. Only rolling-upgrade.sh runs
# commands on other boxes (over ssh, or any prefix given with --exec-cmd).

set -euo pipefail
export LC_ALL=C

RAFTVIP_CONFIG=${RAFTVIP_CONFIG:-/etc/raftvip/raftvip.toml}
# The raftvip CLI (for maintenance); override for a binary outside PATH.
RAFTVIP_BIN=${RAFTVIP_BIN:-raftvip}
# One status request: peers answer in ~1 ms; 2 s only fires for a box that is gone.
STATUS_TIMEOUT_S=${STATUS_TIMEOUT_S:-2}

die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit "${DIE_CODE:-3}"; }
say() { printf '%s\n' "$*"; }
# Option checks, before anything is done: a usage error (exit 3) names the option.
need_value() { [[ -n ${2-} ]] || die "$1 needs a value"; }
need_seconds() { [[ ${2-} =~ ^[0-9]+$ ]] || die "$1 takes whole seconds, not '${2-}'"; }
# cmd: echoes a command that changes state, then runs it (wg-quick style).
cmd() { printf '[#] %s\n' "$*" >&2; "$@"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo "${t:0:13}"; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "needs '$tool' (apt-get install $tool)"
    done
}

# cfg_get KEY [SECTION]: a scalar `key = value` of the config (quotes and comments removed).
# Enough for raftvip.toml's flat keys; not a general TOML parser.
cfg_get() {
    awk -v key="$1" -v want="${2:-}" '
        /^[[:space:]]*\[/ { sect = $0; gsub(/[][[:space:]]/, "", sect); next }
        sect == want {
            line = $0; sub(/[[:space:]]+#.*$/, "", line)
            if (match(line, "^[[:space:]]*" key "[[:space:]]*=")) {
                v = substr(line, RLENGTH + 1); gsub(/^[[:space:]]+|[[:space:]]+$/, "", v)
                gsub(/^"|"$/, "", v); print v; exit
            }
        }' "$RAFTVIP_CONFIG"
}

# cfg_peers: "ID ADDRESS" per [[peer]] of the config.
cfg_peers() {
    awk '
        /^[[:space:]]*\[/ { in_peer = ($0 ~ /^[[:space:]]*\[\[peer\]\]/); next }
        in_peer {
            line = $0; sub(/[[:space:]]+#.*$/, "", line); gsub(/[[:space:]"]/, "", line)
            split(line, kv, "=")
            if (kv[1] == "id") id = kv[2]
            if (kv[1] == "address") addr = substr(line, 9)
            if (id != "" && addr != "") { print id, addr; id = ""; addr = "" }
        }' "$RAFTVIP_CONFIG"
}

# peer_address ID: the [[peer]] address of node ID.
peer_address() {
    local id addr
    while read -r id addr; do
        [[ $id == "$1" ]] && { echo "$addr"; return 0; }
    done < <(cfg_peers)
    die "node $1 is not a [[peer]] in $RAFTVIP_CONFIG"
}

# fetch_status ADDRESS: the node's status JSON, or fails.
fetch_status() {
    curl -fsS --max-time "$STATUS_TIMEOUT_S" "http://$1/v1/status" 2>/dev/null
}

# cluster_json: one JSON array with every peer: {id, address, reachable, status|null}.
cluster_json() {
    local id addr doc docs=()
    while read -r id addr; do
        if doc=$(fetch_status "$addr"); then
            docs+=("$(jq -c --argjson id "$id" --arg a "$addr" '{id: $id, address: $a, reachable: true, status: .}' <<<"$doc")")
        else
            docs+=("$(jq -nc --argjson id "$id" --arg a "$addr" '{id: $id, address: $a, reachable: false, status: null}')")
        fi
    done < <(cfg_peers)
    ((${#docs[@]})) || die "no [[peer]] in $RAFTVIP_CONFIG"
    printf '%s\n' "${docs[@]}" | jq -sc .
}

# holders: ids of reachable nodes that hold a VIP, space separated.
holders() {
    cluster_json | jq -r '[.[] | select(.reachable and (.status.holds_vips or any(.status.vips[]; .held))) | .id] | join(" ")'
}

# node_field ID JQ_FILTER: a field of node ID's status (fails when unreachable).
node_field() {
    local doc
    doc=$(fetch_status "$(peer_address "$1")") || return 1
    jq -r "$2" <<<"$doc"
}

# wait_until TIMEOUT_S COMMAND...: polls COMMAND every 100 ms.
wait_until() {
    local deadline=$(($(now_ms) + $1 * 1000)); shift
    until "$@" 2>/dev/null; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.1
    done
}

# maintenance on|off ID: through the CLI (signed with the secret).
maintenance() {
    cmd "$RAFTVIP_BIN" maintenance "$1" --node "$2" --config "$RAFTVIP_CONFIG" >/dev/null
}

# require_healthy: dies (exit 2, nothing changed) unless cluster-status.sh says healthy; the
# message carries its reasons.
require_healthy() {
    local out rc=0
    out=$("$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/cluster-status.sh" --config "$RAFTVIP_CONFIG" --json) || rc=$?
    ((rc == 0)) && return 0
    DIE_CODE=2 die "the cluster is not healthy (cluster-status.sh exit $rc: $(jq -r '.reasons | join("; ")' <<<"$out" 2>/dev/null)): fix that first"
}
