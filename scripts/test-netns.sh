#!/usr/bin/env bash
# Builds raftvip (release) and runs the netns scenarios: integration/netns/run.sh.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<USAGE
Usage: $0 [--no-build] [run.sh options] [SCENARIO...]

Builds target/release/raftvip, then runs integration/netns/run.sh with the remaining
arguments (-l lists the scenarios, -k DIR keeps logs of failures). Needs root.
USAGE
}

cd "$(dirname "$0")/.."
build=1
case ${1:-} in
    -h | --help) usage; exit 0 ;;
    --no-build) build=0; shift ;;
esac
if [[ $EUID -ne 0 ]]; then
    echo "$0: must run as root (network namespaces, nftables, raw sockets)" >&2
    exit 1
fi
((build == 0)) || cargo build --release --locked
RAFTVIP=$PWD/target/release/raftvip exec integration/netns/run.sh "$@"
