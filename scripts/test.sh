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

# One test thread per binary: the integration tests start real processes and namespaces,
# and the machine has two cores.
cargo test --release --locked -- --test-threads=2
# Built after the tests: `cargo test` links target/release/raftvip with the dev-dependencies'
# features (tokio's test-util clock, reqwest's blocking client; 0.5 MB more). What follows —
# the netns scenarios, the chaos run, the package — runs the binary as shipped.
cargo build --release --locked
integration/netns/run.sh
# 60 s of seeded chaos on the netns bed, every fault kind (docs/reliability.md). CI enforces
# safety — a killed or frozen holder's VIP gone within its lease + 0.5 s, no second holder after
# any other fault, no panic — and recovery (one holder at the end); availability and outage are
# printed, not enforced: on a 2-core machine they measure its load (the 10-minute runs in
# docs/reliability.md).
scripts/chaos.sh --seed 1 --duration 60 --min-availability -1 --max-outage-ms -1
# The Debian package: build, dpkg -i, check, purge.
scripts/test-package.sh --no-build
# The alert rules and the dashboard (promtool, jq).
scripts/test-monitoring.sh
