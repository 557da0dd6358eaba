#!/usr/bin/env bash
# Installs the Debian packages the build loads, when (and only when) they are missing.
#
# Each package is tested by its installed status (dpkg), not by a loose glob over libraries: a
# glob once took the image's libclang-cpp14 for the libclang.so a build script loads, and a
# fresh machine failed. (Since e2e's localnet stopped building solana-test-validator, nothing
# needs libclang or rocksdb's C++ any more.)
set -euo pipefail

# package: why the build needs it
declare -A needed=(
    [gcc]="cc for the -sys crates (zstd, lz4, bzip2, oniguruma)"
    [g++]="torch-sys compiles tch's C++ shim over libtorch"
    [make]="the Makefile: README.md's two commands; openssl-src's build of OpenSSL"
    [perl]="openssl-src configures OpenSSL with perl and its core modules (FindBin), which perl-base lacks"
    [pkg-config]="openssl-sys finds libssl through pkg-config"
    [libssl-dev]="openssl-sys (solana-client's HTTP stack)"
    [ca-certificates]="HTTPS to crates.io and PyPI"
    [debootstrap]="the images' Debian base is made locally (scripts/images.sh), where no registry answers"
    [prometheus]="promtool checks and unit-tests the chart's alerting rules (scripts/check-chart.sh); a real Prometheus scrapes a run (e2e/tests/prometheus/)"
)

# Packages needed only on some machines, and why.
declare -A why=(
    [docker.io]="a Docker engine builds and runs the images in make test (scripts/images.sh)"
    [python3-venv]="the libtorch bootstrap makes a venv with pip"
)

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

missing=()
for package in "${!needed[@]}"; do
    installed "$package" || missing+=("$package")
done
# A Docker engine builds and runs the images in `make test` (scripts/images.sh): Debian's
# docker.io, unless the machine has an engine already (Docker's own docker-ce would conflict).
if ! { command -v docker >/dev/null && { command -v dockerd >/dev/null || docker info >/dev/null 2>&1; }; }; then
    missing+=(docker.io)
fi
# python3-venv is needed only when the Python on PATH cannot make a venv with pip (Debian's
# python3 without python3-venv); a pyenv or python.org build carries ensurepip itself.
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi

if ((${#missing[@]} == 0)); then
    exit 0
fi
for package in "${missing[@]}"; do
    echo "prerequisites: missing $package: ${needed[$package]:-${why[$package]}}" >&2
done
sudo_cmd=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || {
        echo "prerequisites: run as root or install sudo, or install them yourself: apt-get install ${missing[*]}" >&2
        exit 1
    }
    sudo_cmd=(sudo)
fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
