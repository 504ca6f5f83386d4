#!/usr/bin/env bash
# package.sh: builds the Debian package into target/debian/ with cargo-deb.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

usage() {
    cat <<EOF2
Usage: ${0##*/} [--no-build]

Builds target/release/raftvip (unless --no-build), generates the man pages and shell
completions from the CLI (raftvip generate-docs, a hidden subcommand) and the systemd unit
with /usr/bin paths into target/deb-assets/, then runs cargo deb. Prints the .deb's path.
Needs cargo-deb (cargo install cargo-deb). The package layout is [package.metadata.deb] in
Cargo.toml; maintainer scripts are in packaging/debian/.

Exit codes: 0 built; 1 a step failed.
EOF2
}

die() { echo "package.sh: $*" >&2; exit 1; }
cmd() { echo "[#] $*" >&2; "$@"; }

build=1
case ${1:-} in
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 1 ;;
esac
command -v cargo-deb >/dev/null || die "needs cargo-deb: cargo install cargo-deb"
((build == 0)) || cmd cargo build --release --locked
[[ -x target/release/raftvip ]] || die "no target/release/raftvip (build it or drop --no-build)"

rm -rf target/deb-assets
cmd target/release/raftvip generate-docs target/deb-assets >/dev/null
# The unit is written for scripts/install.sh (/usr/local); the package installs to /usr.
sed -e 's|/usr/local/bin/raftvip|/usr/bin/raftvip|g' -e 's|/usr/local/share/doc/raftvip|/usr/share/doc/raftvip|g' \
    scripts/raftvip.service >target/deb-assets/raftvip.service
grep -q /usr/local target/deb-assets/raftvip.service && die "the unit still names /usr/local"
echo "[#] cargo deb --no-build --locked --output target/debian/" >&2
deb=$(cargo deb --no-build --locked --output target/debian/)
[[ -f $deb ]] || die "cargo deb did not report a package file (got: $deb)"
echo "$deb"
