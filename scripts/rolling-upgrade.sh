#!/usr/bin/env bash
# rolling-upgrade.sh: upgrades raftvip one box at a time without losing the VIPs.
set -euo pipefail
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=raftvip-ops.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/raftvip-ops.sh"

EXEC_CMD='ssh -o BatchMode=yes {host}'
INSTALL_PATH=/usr/bin/raftvip
RESTART_CMD='systemctl restart raftvip'
TIMEOUT_S=30
declare -A HOSTS=()

usage() {
    cat <<EOF
Usage: ${0##*/} --package FILE.deb | --binary FILE [options]

For each node, followers first and the VIP holder last:
  drain (drain.sh on; skipped on a witness) -> copy FILE to the box -> install
  (--package: dpkg -i, whose postinst restarts raftvip through the graceful handover;
   --binary: install FILE as --install-path, then --restart-cmd) -> wait until the node
  answers with the new version, is healthy and caught up (same leader and term as the
  rest, in contact with the leader) -> undrain (drain.sh off).
Stops at the first failure and says which node and step; that node stays drained.
Checks first that the cluster is healthy (cluster-status.sh exit 0).

  --config FILE       raftvip config on this box (default: $RAFTVIP_CONFIG)
  --exec-cmd PREFIX   how to run a command on a box; {host} and {id} are replaced
                      (default: '$EXEC_CMD'; e.g. 'ip netns exec lb{id}')
  --host ID=NAME      the host name of node ID for {host} (default: its [[peer]] IP)
  --install-path P    where --binary goes (default: $INSTALL_PATH)
  --restart-cmd CMD   how --binary is restarted, {id} replaced (default: '$RESTART_CMD';
                      SIGTERM is raftvip's graceful stop, so a plain restart hands over)
  --timeout S         per wait (default: $TIMEOUT_S)

Exit codes: 0 every node upgraded; 1 stopped at a failure (printed); 2 the cluster was not
healthy before starting, nothing changed; 3 usage or setup error.
EOF
}

# on_box ID COMMAND: runs a shell command on node ID's box (stdin passes through).
on_box() {
    local id=$1 host prefix=() line
    host=${HOSTS[$id]:-$(peer_address "$id" | sed -E 's/^\[?([^]]*)\]?:[0-9]+$/\1/')}
    line=${EXEC_CMD//\{host\}/$host}
    line=${line//\{id\}/$id}
    read -r -a prefix <<<"$line"
    printf '[#] (node %s) %s\n' "$id" "$2" >&2
    "${prefix[@]}" sh -c "$2"
}

# caught_up ID VERSION: answers with VERSION, healthy (or a witness), follows the same leader
# in the same term as the leader itself, and the leader heard from it within a second.
caught_up() {
    local nodes
    nodes=$(cluster_json)
    jq -e --argjson id "$1" --arg v "$2" '
        (first(.[] | select(.reachable and .status.role == "leader")) // null) as $l
        | (first(.[] | select(.id == $id and .reachable)) // null) as $n
        | $l != null and $n != null
          and $n.status.version == $v
          and ($n.status.health == null or $n.status.healthy)
          and $n.status.leader_id == $l.id and $n.status.term == $l.status.term
          and ($l.id == $id or ([$l.status.peers[] | select(.id == $id) | .last_contact_ms][0] // 99999) < 1000)' \
        <<<"$nodes" >/dev/null
}

STEP="" NODE=""
stopped() {
    local rc=$?
    ((rc == 0)) && return
    say "STOPPED at node ${NODE:-?}, step '${STEP:-?}' (upgraded so far: ${DONE:-none}). Node ${NODE:-?} may still be in maintenance: fix it, then 'drain.sh off --node ${NODE:-?}'." >&2
}

main() {
    local package="" binary=""
    while (($#)); do
        case $1 in
            --package) need_value "$@"; package=$2; shift 2 ;;
            --binary) need_value "$@"; binary=$2; shift 2 ;;
            --config) need_value "$@"; RAFTVIP_CONFIG=$2; shift 2 ;;
            --exec-cmd) need_value "$@"; EXEC_CMD=$2; shift 2 ;;
            --host) need_value "$@"; HOSTS[${2%%=*}]=${2#*=}; shift 2 ;;
            --install-path) need_value "$@"; INSTALL_PATH=$2; shift 2 ;;
            --restart-cmd) need_value "$@"; RESTART_CMD=$2; shift 2 ;;
            --timeout) need_seconds "$@"; TIMEOUT_S=$2; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; exit 3 ;;
        esac
    done
    if [[ -z $package$binary || ( -n $package && -n $binary ) ]]; then usage >&2; exit 3; fi
    need curl jq "$RAFTVIP_BIN"
    [[ -r $RAFTVIP_CONFIG ]] || die "cannot read $RAFTVIP_CONFIG (use --config FILE)"
    local file=${package:-$binary} version
    [[ -r $file ]] || die "cannot read $file"
    if [[ -n $package ]]; then
        need dpkg-deb
        version=$(dpkg-deb -f "$file" Version)
        version=${version%%-*}
    else
        version=$("$file" --version | awk '{ print $2 }')
    fi
    [[ -n $version ]] || die "cannot tell the version of $file"

    local here
    here=$(dirname "$(readlink -f "$0")")
    require_healthy

    # Followers first, the holder last: the VIPs move once, onto an upgraded box.
    local holder order=() id _addr
    holder=$(holders)
    while read -r id _addr; do [[ $id == "$holder" ]] || order+=("$id"); done < <(cfg_peers)
    order+=("$holder")
    say "upgrading to $version, order: ${order[*]}"
    trap stopped EXIT

    local remote witness
    for NODE in "${order[@]}"; do
        STEP="ask its status"
        witness=$(node_field "$NODE" '.health == null')
        if [[ $witness != true ]]; then
            STEP=drain; "$here/drain.sh" on --node "$NODE" --config "$RAFTVIP_CONFIG" --timeout "$TIMEOUT_S"
        fi
        STEP=copy
        remote=/tmp/raftvip-upgrade.$$
        on_box "$NODE" "cat > $remote" <"$file"
        STEP=install
        if [[ -n $package ]]; then
            on_box "$NODE" "mv $remote $remote.deb && dpkg -i $remote.deb && rm -f $remote.deb"
        else
            on_box "$NODE" "install -m 0755 $remote $INSTALL_PATH && rm -f $remote"
            STEP=restart
            on_box "$NODE" "${RESTART_CMD//\{id\}/$NODE}"
        fi
        STEP="wait healthy and caught up"
        wait_until "$TIMEOUT_S" caught_up "$NODE" "$version" ||
            { say "node $NODE: not healthy and caught up on $version after ${TIMEOUT_S}s" >&2; exit 1; }
        if [[ $witness != true ]]; then
            STEP=undrain; "$here/drain.sh" off --node "$NODE" --config "$RAFTVIP_CONFIG" --timeout "$TIMEOUT_S"
        fi
        DONE="${DONE:+$DONE }$NODE"
        say "node $NODE: upgraded to $version"
    done
    trap - EXIT
    say "all nodes upgraded to $version: ${DONE}"
}

main "$@"
