#!/bin/sh
# Builds bkfs in release mode and installs it:
#   bkfs        -> $PREFIX/bin/bkfs   (PREFIX defaults to /usr/local)
#   mount.bkfs  -> $SBINDIR/mount.bkfs (SBINDIR defaults to /sbin), so that
#                  `mount -t bkfs` and /etc/fstab lines work, and
#                  $SBINDIR/mount.fuse.bkfs, a symlink to it: mounts show as
#                  type fuse.bkfs, and mount(8) runs mount.fuse.bkfs to remount
#                  them (`mount -o remount,ro DIR`) and for fstab lines of type
#                  fuse.bkfs (without it, fuse3's mount.fuse, which cannot);
#   bkfs@.service -> /etc/systemd/system/ if systemd is there (docs/PLUGINS.md);
#   hypervisor hooks -> /etc/qemu/fsfreeze-hook.d/bkfs and
#                  /etc/vmware-tools/backupScripts.d/bkfs, where those tools are installed.
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
rm -f "$SBINDIR/mount.fuse.bkfs.tmp"
ln -s mount.bkfs "$SBINDIR/mount.fuse.bkfs.tmp"
mv -f "$SBINDIR/mount.fuse.bkfs.tmp" "$SBINDIR/mount.fuse.bkfs"
echo "installed $PREFIX/bin/bkfs, $SBINDIR/mount.bkfs and $SBINDIR/mount.fuse.bkfs"
if [ -d /etc/systemd/system ]; then
    sed "s|/usr/local/bin/bkfs|$PREFIX/bin/bkfs|g" mount/systemd/bkfs@.service > /etc/systemd/system/bkfs@.service
    chmod 0644 /etc/systemd/system/bkfs@.service
    echo "installed /etc/systemd/system/bkfs@.service"
fi
if [ -d /etc/qemu ]; then
    install -D -m 0755 mount/fsfreeze-hook.d/bkfs /etc/qemu/fsfreeze-hook.d/bkfs
    echo "installed /etc/qemu/fsfreeze-hook.d/bkfs"
fi
if [ -d /etc/vmware-tools ]; then
    install -D -m 0755 mount/backupScripts.d/bkfs /etc/vmware-tools/backupScripts.d/bkfs
    echo "installed /etc/vmware-tools/backupScripts.d/bkfs"
fi
