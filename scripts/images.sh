#!/usr/bin/env bash
# The container images, built with a local Docker engine: `demeter-operator` (operator/Dockerfile)
# and `demeter` (trainer-image/Dockerfile), both on `scratch` with only what their binary loads.
#
# Usage (needs scripts/env.sh):
#   scripts/images.sh build [--tag TAG] operator|trainer...
#       Builds the release binaries with cargo, stages each as a build context and
#       builds its image as NAME:TAG (TAG: the crate version). `make images` runs this.
#   scripts/images.sh check
#       What `make test` runs: the operator image from the dev build `make lint` made, run as a
#       user would (its `crd` equals deploy/crds, its version is the crate's, it runs as 65532
#       with a read-only root). With DEMETER_IMAGES=1 the trainer image too: `demeter --version`
#       and a short `demeter simulate` inside it. Prints each image's size and build time.
#
# The engine: whatever DOCKER_HOST (or the default socket) answers; where none answers and this
# runs as root, a private dockerd of Debian's docker.io, on its own socket, with no bridge and no
# iptables, stopped again at exit. The base: $DEMETER_IMAGE_BASE if set (e.g.
# debian:bookworm-slim where a registry answers), else Debian bookworm minbase made once with
# debootstrap from deb.debian.org and kept under the cache as a tarball, imported as
# demeter/debian:bookworm-minbase.
set -euo pipefail
# A failure inside $(...) (the base image's import, a build) stops the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
cache="${DEMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/demeter}"
export DOCKER_BUILDKIT=0

die() {
    echo "images: $*" >&2
    exit 1
}

engine_pid=
engine_dir=
stop_engine() {
    if [[ -n $engine_pid ]]; then
        kill "$engine_pid" 2>/dev/null || true
        wait "$engine_pid" 2>/dev/null || true
    fi
    [[ -z $engine_dir ]] || rm -rf "$engine_dir"
}
trap stop_engine EXIT

engine() {
    command -v docker >/dev/null || die "no docker CLI: install Debian's docker.io (scripts/prerequisites.sh does)"
    docker info >/dev/null 2>&1 && return
    [[ $(id -u) == 0 ]] && command -v dockerd >/dev/null ||
        die "no Docker engine answers at ${DOCKER_HOST:-the default socket}; start one, or run as root with dockerd installed"
    engine_dir=$(mktemp -d /tmp/demeter-docker.XXXXXX)
    mkdir -p "$cache/docker"
    dockerd --host "unix://$engine_dir/docker.sock" --data-root "$cache/docker" \
        --exec-root "$engine_dir/exec" --pidfile "$engine_dir/docker.pid" \
        --bridge=none --iptables=false --ip6tables=false > "$engine_dir/dockerd.log" 2>&1 &
    engine_pid=$!
    export DOCKER_HOST="unix://$engine_dir/docker.sock"
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$engine_pid" 2>/dev/null || break
        sleep 0.5
    done
    tail -20 "$engine_dir/dockerd.log" >&2
    die "the private dockerd did not start"
}

# Prints the base image's name, making it first when needed.
base() {
    if [[ -n ${DEMETER_IMAGE_BASE:-} ]]; then
        echo "$DEMETER_IMAGE_BASE"
        return
    fi
    local name=demeter/debian:bookworm-minbase
    if ! docker image inspect "$name" >/dev/null 2>&1; then
        local tarball="$cache/images/bookworm-minbase.tar"
        if [[ ! -f $tarball ]]; then
            command -v debootstrap >/dev/null || die "no debootstrap to make the base image: install it, or set DEMETER_IMAGE_BASE=debian:bookworm-slim"
            local root
            root=$(mktemp -d /var/tmp/demeter-base.XXXXXX)
            echo "images: debootstrap bookworm minbase (once; kept as $tarball)" >&2
            debootstrap --variant=minbase --include=ca-certificates bookworm "$root" \
                http://deb.debian.org/debian > "$root.log" 2>&1 || {
                tail -20 "$root.log" >&2
                die "debootstrap failed"
            }
            mkdir -p "$(dirname "$tarball")"
            tar -C "$root" -cf "$tarball.partial" .
            mv "$tarball.partial" "$tarball"
            rm -rf "$root" "$root.log"
        fi
        docker import "$tarball" "$name" >/dev/null
    fi
    echo "$name"
}

# stage COMPONENT PROFILE_DIR CONTEXT: the binary, the rootfs script and (for the trainer) the
# bootstrapped torch's libraries, hard-linked where the file system allows.
stage() {
    local component=$1 bin_dir=$2 context=$3
    mkdir -p "$context/bin"
    cp scripts/image-rootfs.sh "$context/"
    case $component in
    operator) cp "$bin_dir/demeter-operator" "$context/bin/" ;;
    trainer)
        cp "$bin_dir/demeter" "$context/bin/"
        mkdir -p "$context/torch"
        cp -al "$LIBTORCH/lib" "$context/torch/lib" 2>/dev/null || cp -a "$LIBTORCH/lib" "$context/torch/lib"
        cp -al "$LIBTORCH/../nvidia" "$context/nvidia" 2>/dev/null || cp -a "$LIBTORCH/../nvidia" "$context/nvidia"
        ;;
    esac
}

image_name() {
    case $1 in
    operator) echo demeter-operator ;;
    trainer) echo demeter ;;
    *) die "unknown image $1 (operator or trainer)" ;;
    esac
}

dockerfile() {
    case $1 in
    operator) echo operator/Dockerfile ;;
    trainer) echo trainer-image/Dockerfile ;;
    esac
}

# build_image COMPONENT BIN_DIR TAG BASE: builds NAME:TAG; prints seconds taken.
build_image() {
    local component=$1 bin_dir=$2 tag=$3 base_image=$4
    local context start
    context=$(mktemp -d /var/tmp/demeter-image.XXXXXX)
    start=$(date +%s)
    stage "$component" "$bin_dir" "$context"
    # The legacy builder's deprecation notice is noise here; its output shows on a failure.
    docker build --build-arg "BASE=$base_image" -f "$(dockerfile "$component")" \
        -t "$(image_name "$component"):$tag" "$context" > "$context.log" 2>&1 || {
        tail -30 "$context.log" >&2
        die "docker build of $component failed"
    }
    rm -f "$context.log"
    rm -rf "$context"
    echo $(($(date +%s) - start))
}

size_mb() {
    docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f", $1 / 1e6 }'
}

version() {
    sed -n 's/^version = "\(.*\)"/\1/p' "$1" | head -1
}

# build_images TAG BIN_DIR COMPONENT...: builds each image as NAME:TAG (TAG "version": the
# crate's) from the binaries in BIN_DIR, checks it runs as the non-root user, and prints a table
# of sizes and build times.
build_images() {
    local tag=$1 bin_dir=$2
    shift 2
    engine
    local base_image
    base_image=$(base)
    printf '| %-22s | %8s | %9s |\n' image "size MB" "build s"
    printf '| %-22s | %8s | %9s |\n' --- --- ---
    for component in "$@"; do
        local name seconds
        name="$(image_name "$component"):$tag"
        if [[ $tag == version ]]; then
            name="$(image_name "$component"):$(version "$(dirname "$(dockerfile "$component")")/Cargo.toml")"
        fi
        seconds=$(build_image "$component" "$bin_dir" "${name#*:}" "$base_image")
        printf '| %-22s | %8s | %9s |\n' "$name" "$(size_mb "$name")" "$seconds"
        [[ $(docker image inspect -f '{{.Config.User}}' "$name") == 65532:65532 ]] ||
            die "$name does not run as the non-root user 65532"
    done
}

build() {
    local tag=version
    local components=()
    while (($#)); do
        case $1 in
        --tag) tag=$2; shift 2 ;;
        *) image_name "$1" > /dev/null; components+=("$1"); shift ;;
        esac
    done
    ((${#components[@]})) || components=(operator trainer)
    for component in "${components[@]}"; do
        case $component in
        operator) cargo build --locked --release -p demeter-operator --bin demeter-operator ;;
        trainer) cargo build --locked --release -p demeter-trainer --bin demeter ;;
        esac
    done
    build_images "$tag" "$CARGO_TARGET_DIR/release" "${components[@]}"
}

check() {
    local bin_dir="$CARGO_TARGET_DIR/debug"
    [[ -x $bin_dir/demeter-operator ]] || die "no $bin_dir/demeter-operator: run make lint first"
    local components=(operator)
    [[ ${DEMETER_IMAGES:-0} == 1 ]] && components+=(trainer)
    build_images check "$bin_dir" "${components[@]}"

    # As the operator's Deployment runs it: non-root, read-only root, no network.
    local run=(docker run --rm --read-only --network none)
    "${run[@]}" demeter-operator:check crd | cmp - deploy/crds/trainingruns.demeter.dev.yaml ||
        die "demeter-operator crd in the image differs from deploy/crds"
    [[ $("${run[@]}" demeter-operator:check --version) == "demeter-operator $(version operator/Cargo.toml)" ]] ||
        die "the operator image's --version is not the crate's"
    if [[ ${DEMETER_IMAGES:-0} == 1 ]]; then
        [[ $("${run[@]}" demeter:check --version) == "demeter $(version trainer-image/Cargo.toml)" ]] ||
            die "the trainer image's --version is not the crate's"
        "${run[@]}" --tmpfs /tmp demeter:check simulate --workers 2 --steps 3 --batch 2 \
            --seq-len 32 --preset tiny --eval-samples 8 > /dev/null ||
            die "demeter simulate failed inside the trainer image"
    fi
    # The check's images are not kept: the trainer's alone holds gigabytes of CUDA libraries.
    for component in "${components[@]}"; do
        docker image rm "$(image_name "$component"):check" > /dev/null
    done
    docker image prune --force > /dev/null
    echo "images: checked ${components[*]}"
}

command=${1:-}
shift || true
case $command in
build) build "$@" ;;
check) check ;;
*) die "usage: scripts/images.sh build [--tag TAG] [operator|trainer...] | check" ;;
esac
