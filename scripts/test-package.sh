#!/usr/bin/env bash
# test-package.sh: builds the .deb, installs it with dpkg, checks what an operator relies on,
# and removes it again (purge). Needs root, dpkg and cargo-deb. Leaves the box as it found it
# (the raftvip user is deleted again if this test created it).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

usage() {
    cat <<EOF2
Usage: ${0##*/} [--no-build]

Checks after dpkg -i: the binary and its --version, the unit (systemd-analyze verify where
systemd-analyze exists), the example config as a conffile, the operator scripts (--help),
man pages, completions, the raftvip user and the state directory, and that no daemon was
started (no config). Then dpkg --purge, and the files are gone.
Exit codes: 0 all checks passed; 1 a check failed (named).
EOF2
}
case ${1:-} in -h | --help) usage; exit 0 ;; esac

die() { echo "test-package.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }
[[ $EUID -eq 0 ]] || die "must run as root (dpkg -i)"
dpkg -s raftvip >/dev/null 2>&1 && die "a raftvip package is already installed here; not touching it"

had_user=0
getent passwd raftvip >/dev/null && had_user=1
deb=$(scripts/package.sh "$@")
cleanup() {
    dpkg --purge raftvip >/dev/null 2>&1 || true
    ((had_user)) || userdel raftvip 2>/dev/null || true
}
trap cleanup EXIT

dpkg -i "$deb" >/tmp/raftvip-dpkg.log 2>&1 || die "dpkg -i $deb: $(tail -n 5 /tmp/raftvip-dpkg.log)"
ok "dpkg -i $deb"
grep -q "not started: it has no /etc/raftvip/raftvip.toml" /tmp/raftvip-dpkg.log || die "postinst did not say why it starts nothing"

want=$(awk -F'"' '/^version =/ { print $2; exit }' Cargo.toml)
[[ $(/usr/bin/raftvip --version) == "raftvip $want" ]] || die "raftvip --version: $(/usr/bin/raftvip --version)"
ok "raftvip --version = $want"

for f in /lib/systemd/system/raftvip.service /etc/raftvip/raftvip.example.toml \
    /usr/share/raftvip/scripts/{cluster-status,drain,failover-drill,rolling-upgrade}.sh \
    /usr/share/raftvip/scripts/raftvip-ops.sh /usr/share/man/man1/raftvip.1* \
    /usr/share/bash-completion/completions/raftvip /usr/share/zsh/vendor-completions/_raftvip \
    /usr/share/fish/vendor_completions.d/raftvip.fish /usr/share/doc/raftvip/operations.md \
    /usr/share/doc/raftvip/monitoring/alerts.yml; do
    [[ -e $f ]] || die "missing $f"
done
ok "files in place"
grep -qx /etc/raftvip/raftvip.example.toml /var/lib/dpkg/info/raftvip.conffiles || die "the example config is not a conffile"
ok "example config is a conffile"
# An upgrade (here: reinstall) keeps the operator's edits of a conffile.
echo "# local edit" >>/etc/raftvip/raftvip.example.toml
dpkg -i "$deb" >/tmp/raftvip-dpkg.log 2>&1 || die "dpkg -i over the installed package: $(tail -n 5 /tmp/raftvip-dpkg.log)"
grep -qx "# local edit" /etc/raftvip/raftvip.example.toml || die "reinstalling overwrote the edited example config"
ok "reinstall keeps the edited conffile"
grep -q '^ExecStart=/usr/bin/raftvip run' /lib/systemd/system/raftvip.service || die "the unit does not start /usr/bin/raftvip"
for s in cluster-status drain failover-drill rolling-upgrade; do
    /usr/share/raftvip/scripts/$s.sh --help >/dev/null || die "$s.sh --help"
done
ok "operator scripts answer --help"
# roff escapes the hyphen: import\-keepalived
zcat -f /usr/share/man/man1/raftvip.1* | grep -qF 'import\-keepalived' || die "the man page lacks import-keepalived"
[[ -e $(echo /usr/share/man/man1/raftvip-import-keepalived.1*) ]] || die "no man page for raftvip import-keepalived"
grep -q import-keepalived /usr/share/bash-completion/completions/raftvip || die "bash completion lacks import-keepalived"
ok "man page and completions cover the CLI"
getent passwd raftvip >/dev/null || die "no raftvip user"
[[ $(stat -c '%U %a' /var/lib/raftvip) == "raftvip 700" ]] || die "/var/lib/raftvip: $(stat -c '%U %a' /var/lib/raftvip)"
[[ $(stat -c '%G %a' /etc/raftvip) == "raftvip 750" ]] || die "/etc/raftvip: $(stat -c '%G %a' /etc/raftvip)"
ok "user raftvip, /var/lib/raftvip 0700, /etc/raftvip 0750"
# Other raftvip processes (tests, a dev build) may run here: only the installed binary counts.
for pid in $(pgrep -x raftvip || true); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) != /usr/bin/raftvip ]] || die "the package started a daemon (pid $pid) although there is no config"
done
ok "no daemon started"
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify /lib/systemd/system/raftvip.service 2>&1) || die "systemd-analyze verify: $out"
    ok "systemd-analyze verify${out:+ (notes: $out)}"
else
    echo "note: no systemd-analyze here, unit not verified"
fi

dpkg --purge raftvip >/dev/null || die "dpkg --purge"
[[ ! -e /usr/bin/raftvip && ! -e /var/lib/raftvip && ! -e /etc/raftvip ]] || die "files left after purge"
ok "dpkg --purge removes it"
