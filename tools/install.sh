#!/bin/sh
# Builds bkfs in release mode and installs it:
#   bkfs        -> $PREFIX/bin/bkfs   (PREFIX defaults to /usr/local)
#   mount.bkfs  -> $SBINDIR/mount.bkfs (SBINDIR defaults to /sbin), so that
#                  `mount -t bkfs` and /etc/fstab lines work.
# Usage: sudo tools/install.sh   (run from anywhere inside the repository)
set -eu
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-/sbin}
cargo build --release --bin bkfs
mkdir -p "$SBINDIR"
install -D -m 0755 target/release/bkfs "$PREFIX/bin/bkfs"
sed "s|^BKFS=\${BKFS_BIN:-}|BKFS=\${BKFS_BIN:-$PREFIX/bin/bkfs}|" mount/mount.bkfs > "$SBINDIR/mount.bkfs.tmp"
chmod 0755 "$SBINDIR/mount.bkfs.tmp"
mv "$SBINDIR/mount.bkfs.tmp" "$SBINDIR/mount.bkfs"
echo "installed $PREFIX/bin/bkfs and $SBINDIR/mount.bkfs"
