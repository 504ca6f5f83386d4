#!/usr/bin/env bash
# A five-minute tour of raftvip on a fresh machine: three load-balancer boxes and a client in
# network namespaces, the VIP on one box, that box taken down, the VIP on another.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<EOF
Usage: $0 [--no-install] [--no-build]

Installs haproxy, iproute2, nftables and python3 if missing (apt-get), builds raftvip
(cargo build --release), then shows a failover on a throw-away network-namespace test bed
(192.0.2.0/24 and 2001:db8::/32 only; nothing touches this machine's own interfaces).
Everything it creates is removed at the end, also on Ctrl-C. Needs root.

  --no-install   do not apt-get anything (fail if a tool is missing)
  --no-build     use the existing target/release/raftvip (or \$RAFTVIP)
EOF
}

install=1 build=1
for arg in "$@"; do
    case $arg in
        --no-install) install=0 ;;
        --no-build) build=0 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 1 ;;
    esac
done

cd "$(dirname "$0")/.."
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }
say() { printf '   %s\n' "$*"; }

[[ $EUID -eq 0 ]] || die "run as root (network namespaces): sudo $0"

step "1. Tools"
missing=()
for pair in ip:iproute2 haproxy:haproxy nft:nftables python3:python3; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    ((install)) || die "missing packages: ${missing[*]}"
    say "installing ${missing[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
say "haproxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $(ip -V | awk '{ print $3 }' | tr -d ,), $(python3 --version)"

step "2. Build raftvip"
if ((build)); then
    command -v cargo >/dev/null || die "cargo is missing: install Rust from https://rustup.rs"
    cargo build --release --quiet
fi
export RAFTVIP=${RAFTVIP:-$PWD/target/release/raftvip}
[[ -x $RAFTVIP ]] || die "no $RAFTVIP (run without --no-build)"
say "$RAFTVIP ($("$RAFTVIP" --version))"

# shellcheck source-path=SCRIPTDIR/.. source=integration/netns/lib.sh
source integration/netns/lib.sh

step "3. The test bed: 3 boxes (HAProxy + raftvip) and a client on one bridge"
bed_create 3
for box in 1 2 3; do bed_start_haproxy "$box"; done
for box in 1 2 3; do bed_start_raftvip "$box"; done
say "box1 192.0.2.11   box2 192.0.2.12   box3 192.0.2.13   client 192.0.2.50"
say "VIP $(bed_vip4) and $(bed_vip6); each HAProxy answers with its box's name"

step "4. Who holds the VIP?"
holder=$(bed_wait_holder 10000) || die "no box took the VIP within 10 s (logs: $BED_DIR/box*/raftvip.log)"
say "box$holder holds it (Raft leader: box$(bed_leader), term $(bed_status "$holder" term))"
for box in 1 2 3; do
    say "  box$box: $(ip -n "$(bed_ns "$box")" -br addr show dev eth0 | cut -c1-100)"
done
answer=$(bed_exec client python3 "$BED_TOOL" page "http://$(bed_vip4)/" 2)
say "client: GET http://$(bed_vip4)/ -> \"$answer\""
say "client's ARP entry for the VIP: $(bed_client_neigh "$(bed_vip4)") (box$holder's MAC is $(bed_box_mac "$holder"))"

step "5. The client probes the VIP every 10 ms; box$holder's network link goes down"
probe=$(bed_probe_start "$(bed_vip4)" probe)
bed_probe_wait_ok "$probe" 3000 || die "the client cannot reach the VIP"
fault=$(bed_now_ms)
bed_link_down "$holder"
new=$(bed_wait_holder 10000 "$(bed_vip4)" "$holder") || die "the VIP did not move (logs: $BED_DIR)"
say "box$new took the VIP $(($(bed_now_ms) - fault)) ms after the link went down"
bed_probe_wait_ok "$probe" 5000 || die "the client is not served again"
sleep 0.3
outage=$(probe_outage "$probe" "$fault")
failed=$(probe_failures "$probe" "$fault" "$(bed_now_ms)")
say "client: answered by $(probe_last_box "$probe") again; outage it saw: $outage ms ($failed failed attempts)"
say "client's ARP entry for the VIP: $(bed_client_neigh "$(bed_vip4)") (box$new's MAC is $(bed_box_mac "$new"); moved by gratuitous ARP)"
bed_probe_stop probe

step "6. Clean up"
bed_cleanup
say "namespaces, HAProxy, backends and raftvip processes removed"
