#!/usr/bin/env bash
# Runs a command in a fresh clone inside a clean Debian 12 (bookworm) root: Debian's minimal
# base system plus this machine's Rust toolchain and Node.js, nothing else. It proves that the
# README's commands install everything they use (docs/DEVELOPING.md).
#   sudo scripts/fresh-machine.sh [--keep] ./scripts/test.sh
#   sudo scripts/fresh-machine.sh ./scripts/run.sh serve --port 4728
# The root is made with debootstrap (from Debian's mirror) in $FRESH_DIR (default
# /var/tmp/agent-budget-fresh), cloned from this checkout's committed HEAD, and thrown away
# afterwards unless --keep is given. Needs root, debootstrap, and about 8 GB of disk.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine: run as root (it mounts and chroots)" >&2; exit 1; }
keep=0
if [ "${1:-}" = --keep ]; then keep=1; shift; fi
[ $# -gt 0 ] || { echo "usage: fresh-machine.sh [--keep] <command> [args...]" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
base="${FRESH_DIR:-/var/tmp/agent-budget-fresh}"
root="$base/root"
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
rustup_bin="$(command -v rustup)" || { echo "fresh-machine: rustup not found" >&2; exit 1; }
node_bin="$(command -v node)"
npm_dir="$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)"

# The pristine base system, made once and copied for every run.
if [ ! -e "$base/pristine/.done" ]; then
  rm -rf "$base/pristine"
  debootstrap --variant=minbase bookworm "$base/pristine" http://deb.debian.org/debian
  cat >"$base/pristine/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  touch "$base/pristine/.done"
fi
rm -rf "$root"
cp -a "$base/pristine" "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# What Debian's installer writes on every machine (debootstrap leaves it out): localhost.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# This machine's network: a TLS-inspecting egress whose CA the host trusts. The clean root gets
# that CA (ca-certificates, once setup installs it, adds it to the bundle) and the variables
# that point Node and pip at the bundle; nothing else of the host's set-up goes in.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
trust=()
for v in NODE_EXTRA_CA_CERTS PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE; do
  [ -z "${!v:-}" ] || trust+=("$v=${!v}")
done

# Rust as rustup installs it (the toolchains shared read-only), Node as nodejs.org ships it.
mkdir -p "$root/root/.rustup" "$root/root/.cargo/bin" "$root/usr/local/lib/node_modules/npm"
cp "$rustup_bin" "$root/root/.cargo/bin/rustup"
for t in cargo rustc rustdoc cargo-clippy cargo-fmt clippy-driver rustfmt; do ln -s rustup "$root/root/.cargo/bin/$t"; done
cp "$rustup_home/settings.toml" "$root/root/.rustup/"
mkdir -p "$root/root/.rustup/toolchains"
cp "$node_bin" "$root/usr/local/bin/node"
cp -a "$npm_dir/." "$root/usr/local/lib/node_modules/npm/"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"

mkdir -p "$root/src"
git clone --quiet "$repo" "$root/src/agent-budget"

# A private mount namespace whose root is the new system (pivot_root, not chroot, so the
# tests can still make user namespaces); everything it mounts goes away with it.
status=0
unshare --mount --propagation private -- bash -s "$root" "$rustup_home" "${trust[*]:-}" "$@" <<'INNER' || status=$?
set -euo pipefail
root=$1 rustup_home=$2 trust=$3; shift 3
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"
mount --bind -o ro "$rustup_home/toolchains" "$root/root/.rustup/toolchains"
mount --bind -o remount,ro,bind "$root/root/.rustup/toolchains"
cd "$root"; mkdir -p .oldroot; pivot_root . .oldroot; cd /; umount -l /.oldroot
# shellcheck disable=SC2086 # $trust is a list of VAR=value words without spaces
exec env -i HOME=/root USER=root TERM=dumb LANG=C.UTF-8 CI="${CI:-}" $trust \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  bash -c 'cd /src/agent-budget && exec "$@"' bash "$@"
INNER
[ "$keep" -eq 1 ] || rm -rf "$root"
echo "fresh-machine: '$*' exited $status" >&2
exit "$status"
