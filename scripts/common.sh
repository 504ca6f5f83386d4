# shellcheck shell=bash
# The preamble the repository's benchmark scripts share (bench-failover, bench-raft,
# bench-flood, soak): strict mode, the repository root, messages that name the script, the
# raftvip binary they measure, and the netns test bed (integration/netns/lib.sh, sourced here:
# nothing happens until bed_create). Source it first. The operator scripts are installed
# alone and have their own (raftvip-ops.sh).

# lib.sh sets -euo pipefail and LC_ALL=C as well; here they hold from the first line on.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT_NAME=${0##*/}
SCRIPT_NAME=${SCRIPT_NAME%.sh}

die() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }
log() { printf '%s\n' "$*" >&2; }
# Runs a command, echoing it first (wg-quick's cmd()).
cmd() { log "[#] $*"; "$@"; }

# use_raftvip BUILD(0|1): with 1, cargo build --release first. Exports RAFTVIP (default
# target/release/raftvip: the bed's processes run it) and fails unless it is executable.
use_raftvip() {
    if (($1)); then
        (cd "$REPO" && cmd cargo build --release --quiet) || die "cargo build --release failed"
    fi
    export RAFTVIP=${RAFTVIP:-$REPO/target/release/raftvip}
    [[ -x $RAFTVIP ]] || die "no raftvip binary at $RAFTVIP (cargo build --release, or set RAFTVIP)"
}

# The [timing] raftvip runs with, from the environment, raftvip's defaults when unset:
# RAFTVIP_HEARTBEAT_MS, RAFTVIP_ELECTION_TIMEOUT_MS (MIN,MAX), RAFTVIP_FENCE_MS (raftvip's
# default: 10 ms under MAX). raftvip check-config judges the values when a node starts.
DEFAULT_HEARTBEAT_MS=25
DEFAULT_ELECTION_TIMEOUT_MS=75,90
HEARTBEAT_MS=${RAFTVIP_HEARTBEAT_MS:-$DEFAULT_HEARTBEAT_MS}
ELECTION_TIMEOUT_MS=${RAFTVIP_ELECTION_TIMEOUT_MS:-$DEFAULT_ELECTION_TIMEOUT_MS}
FENCE_MS=${RAFTVIP_FENCE_MS:-}
# timing_toml: that [timing] table, for a node's config.
timing_toml() {
    printf '[timing]\nheartbeat_ms = %s\nelection_timeout_ms = [%s]\n' "$HEARTBEAT_MS" "$ELECTION_TIMEOUT_MS"
    [[ -z $FENCE_MS ]] || printf 'fence_ms = %s\n' "$FENCE_MS"
}
# timing_line: the timing in words, for a benchmark's header.
timing_line() {
    echo "heartbeat ${HEARTBEAT_MS} ms, election timeout [${ELECTION_TIMEOUT_MS}] ms${FENCE_MS:+, fence ${FENCE_MS} ms}"
}
# timing_is_default: true when the environment leaves raftvip's defaults.
timing_is_default() {
    [[ $HEARTBEAT_MS == "$DEFAULT_HEARTBEAT_MS" && $ELECTION_TIMEOUT_MS == "$DEFAULT_ELECTION_TIMEOUT_MS" && -z $FENCE_MS ]]
}

# shellcheck source-path=SCRIPTDIR source=../integration/netns/lib.sh
source "$REPO/integration/netns/lib.sh"
