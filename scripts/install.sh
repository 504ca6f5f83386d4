#!/usr/bin/env bash
# Installs raftvip on this box: binary, systemd unit, a user, /etc/raftvip with an example
# config and (if absent) a fresh secret. Copy the SAME secret to every node afterwards.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<USAGE
Usage: $0 [--binary PATH]

  --binary PATH   raftvip binary to install (default: target/release/raftvip, built if missing)

Installs /usr/local/bin/raftvip, /etc/systemd/system/raftvip.service, /etc/raftvip/ and the
raftvip user. Existing config and secret files are never overwritten.
USAGE
}

die() { echo "install.sh: $*" >&2; exit 1; }
cmd() { echo "+ $*"; "$@"; }

here=$(cd "$(dirname "$0")/.." && pwd)
binary="$here/target/release/raftvip"
while (($#)); do
    case $1 in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ $EUID -eq 0 ]] || die "run as root"
if [[ ! -x $binary ]]; then
    command -v cargo >/dev/null || die "$binary is missing and cargo is not installed"
    (cd "$here" && cmd cargo build --release --locked)
fi

cmd install -m 0755 "$binary" /usr/local/bin/raftvip
cmd install -m 0644 "$here/scripts/raftvip.service" /etc/systemd/system/raftvip.service
if command -v systemd-analyze >/dev/null; then
    cmd systemd-analyze verify /etc/systemd/system/raftvip.service || die "systemd rejects the unit (see above)"
fi
cmd install -d -m 0644 /usr/local/share/doc/raftvip
cmd install -m 0644 "$here/docs/design.md" /usr/local/share/doc/raftvip/design.md
getent group haproxy >/dev/null || cmd groupadd --system haproxy
id raftvip >/dev/null 2>&1 || cmd useradd --system --no-create-home --shell /usr/sbin/nologin raftvip
cmd install -d -m 0750 -g raftvip /etc/raftvip
if [[ ! -e /etc/raftvip/secret ]]; then
    echo "+ generating /etc/raftvip/secret"
    # Only the service user may read it: raftvip refuses a secret group or others can read.
    (umask 077 && head -c 48 /dev/urandom | base64 > /etc/raftvip/secret)
    chown raftvip:raftvip /etc/raftvip/secret
fi
if [[ ! -e /etc/raftvip/raftvip.toml ]]; then
    cmd install -m 0640 -g raftvip "$here/docs/raftvip.example.toml" /etc/raftvip/raftvip.toml
    echo "Edit /etc/raftvip/raftvip.toml (node_id, peers, VIPs), copy /etc/raftvip/secret to every node, then:"
else
    echo "Kept the existing /etc/raftvip/raftvip.toml. Then:"
fi
echo "  sudo -u raftvip raftvip check-config --config /etc/raftvip/raftvip.toml && systemctl daemon-reload && systemctl enable --now raftvip"
