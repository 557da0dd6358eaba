#!/usr/bin/env bash
# Runs `.ci/run` on a clean clone of HEAD inside a new Debian rootfs, so that an install step
# missing from .ci/run fails here before it fails on a new CI machine.
#
# Usage (as root): scripts/fresh-machine-check.sh [COMMAND...]
#   COMMAND defaults to `bash .ci/run`; it runs in the clone, inside the rootfs.
#   FRESH_DIR (default /var/tmp/demeter-fresh) holds the pristine rootfs tarball, reused between
#   checks, and the rootfs of the current check, made anew from it every time.
#
# The rootfs is Debian bookworm `minbase` (debootstrap from deb.debian.org) plus what the machine
# image brings that no Debian package gives: the Rust toolchain (rustup's, from $RUSTUP_HOME) and
# CPython 3.11 (pyenv's, from $PYENV_ROOT), both bind-mounted read-only. It has no gcc, make,
# pkg-config, libssl-dev, libclang-dev, Python venv or crates: CI must install all of them itself.
# It is stricter than the image (which has gcc and make), never looser.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${FRESH_DIR:-/var/tmp/demeter-fresh}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
python_bin="$(dirname "$(pyenv which python3 2>/dev/null || command -v python3)")"
command=("$@")
((${#command[@]})) || command=(bash .ci/run)

[[ $(id -u) == 0 ]] || { echo "fresh-machine-check: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap

pristine="$dir/bookworm-minbase.tar"
if [[ ! -f "$pristine" ]]; then
    mkdir -p "$dir"
    rm -rf "$dir/bootstrap"
    echo "fresh-machine-check: debootstrap bookworm minbase (one time)" >&2
    debootstrap --variant=minbase bookworm "$dir/bootstrap" http://deb.debian.org/debian
    tar -C "$dir/bootstrap" -cf "$pristine.partial" .
    mv "$pristine.partial" "$pristine"
    rm -rf "$dir/bootstrap"
fi

root="$dir/root"
cleanup() {
    for mount in tmp dev/shm dev sys proc root/.rustup root/.pyenv; do
        umount -l "$root/$mount" 2>/dev/null || true
    done
    umount -l "$root" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$root"
mkdir -p "$root"
# The rootfs is a mount point of its own, as `/` is on any machine: the Docker engine of the
# image check remounts `/` private when it unpacks an image, which fails on a plain directory.
mount --bind "$root" "$root"
tar -C "$root" -xf "$pristine"
# Name resolution as on any installed machine (debootstrap's minbase has no /etc/hosts, so not
# even `localhost` resolves there).
cp /etc/resolv.conf /etc/hosts "$root/etc/"
# The machine's network trust, which every machine of this kind has before any project step: its
# registries are reached through an egress proxy whose CA is in the system bundle, and pip is told
# so (/etc/pip.conf, PIP_CERT). Copied in, not installed by CI; the environment variables that
# name the bundle are passed through below.
mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
[[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$root/etc/pip.conf"
trust_env=()
for name in SSL_CERT_FILE SSL_CERT_DIR PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO; do
    [[ -n "${!name:-}" ]] && trust_env+=("$name=${!name}")
done

mkdir -p "$root/root/.rustup" "$root/root/.pyenv" "$root/root/.cargo"
mount --bind -o ro "$rustup_home" "$root/root/.rustup"
mount --bind -o ro "$pyenv_root" "$root/root/.pyenv"
cp -a "$cargo_bin" "$root/root/.cargo/bin"
mount -t proc proc "$root/proc"
# sysfs with the machine's cgroups: the Docker engine `make test` starts to build and run the
# images needs them, as it would on any machine.
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/dev/shm"
mount -t tmpfs -o size=16g tmpfs "$root/tmp"

git clone --quiet "$repo" "$root/work/demeter"
git -C "$root/work/demeter" log --oneline -1 >&2

start=$(date +%s)
set +e
chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 "${trust_env[@]}" \
    PATH="/root/.cargo/bin:${python_bin/#$HOME//root}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    bash -c 'cd /work/demeter && exec "$@"' fresh "${command[@]}"
rc=$?
set -e
echo "fresh-machine-check: '${command[*]}' exited $rc after $(($(date +%s) - start)) s in a new bookworm rootfs" >&2
exit "$rc"
