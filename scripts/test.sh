#!/usr/bin/env bash
# Runs every test tier: unit tests, multi-process clusters on loopback, real HAProxy, real
# netlink/AF_PACKET in namespaces, and the netns scenarios with real HAProxy boxes.
# Needs root (namespaces, netlink, raw sockets) and haproxy, iproute2, nftables, python3.
# A tier that cannot run fails; nothing is skipped.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "scripts/test.sh: must run as root (network namespaces, netlink, raw sockets): sudo $0" >&2
    exit 1
fi

cargo build --release --locked
# One test thread per binary: the integration tests start real processes and namespaces,
# and the machine has two cores.
cargo test --release --locked -- --test-threads=2
integration/netns/run.sh
# The Debian package: build, dpkg -i, check, purge.
scripts/test-package.sh --no-build
# The alert rules and the dashboard (promtool, jq).
scripts/test-monitoring.sh
