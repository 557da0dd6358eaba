#!/bin/sh
# Runs inside an image's first stage (a Debian base, where ldd is): gathers BINARY and every
# shared library it loads, and nothing else, under /rootfs, which the final stage copies onto
# `scratch`. Every library keeps its path (libtorch finds CUDA's through its own relative
# runpaths). A library under /opt brings the other libraries of its directory too: CUDA's and
# cuDNN's dlopen their siblings (cuDNN's engines, NVRTC), which ldd cannot see. Also the CA bundle (HTTPS to a Solana
# RPC), a passwd entry for the non-root user 65532, and a world-writable /tmp.
#
# Usage: image-rootfs.sh BINARY   (LD_LIBRARY_PATH names any library directory ldd must search)
set -eu
binary=$1
mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp
cp "$binary" /rootfs/usr/local/bin/
# ldd prints `name => /path (addr)` for each library and `/lib64/ld-linux... (addr)` for the
# loader; a library it cannot find is an error here, not a crash at the first run.
if ldd "$binary" | grep -q 'not found'; then
    ldd "$binary" | grep 'not found' >&2
    echo "image-rootfs: $binary needs libraries this stage does not have" >&2
    exit 1
fi
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r library; do
        library=$(realpath -s "$library")
        case "$library" in
        /opt/*) for sibling in "$(dirname "$library")"/*.so*; do cp --parents -L "$sibling" /rootfs/; done ;;
        *) cp --parents -L "$library" /rootfs/ ;;
        esac
    done
cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/
echo 'nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin' > /rootfs/etc/passwd
echo 'nonroot:x:65532:' > /rootfs/etc/group
chmod 1777 /rootfs/tmp
