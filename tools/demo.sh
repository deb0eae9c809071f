#!/bin/bash
# bkfs's main job, on a default that needs no configuration: mount a directory
# (a copy of /etc under /var/tmp/bkfs-demo), take a point-in-time snapshot
# through the mount, change the live tree, show that the snapshot kept its
# moment, verify the store, unmount.
#
#   tools/demo.sh [DIR]      (default /var/tmp/bkfs-demo; run as root after tools/install.sh)
set -euo pipefail

DIR=${1:-/var/tmp/bkfs-demo}
SRC=$DIR/data
MNT=$DIR/mnt
BKFS=${BKFS:-$(command -v bkfs || echo /usr/local/bin/bkfs)}

mkdir -p "$SRC" "$MNT"
if mountpoint -q "$MNT"; then umount "$MNT"; fi
trap 'mountpoint -q "$MNT" && umount "$MNT"' EXIT
if [ ! -e "$SRC/etc" ]; then
    cp -a /etc "$SRC/etc"
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "mount $SRC on $MNT (store: $SRC/.bkfs)"
"$BKFS" mount "$SRC" "$MNT"
grep " $MNT " /proc/mounts

step "take a snapshot: echo > $MNT/.control/snapshot"
before=$(cat "$MNT/etc/hostname" 2>/dev/null || true)
echo > "$MNT/.control/snapshot"
name=$(awk -F': ' '$1=="name"{print $2}' "$MNT/.control/snapshot")
echo "snapshot $name: point in time fixed"

step "change the live tree while the snapshot is copied"
echo "changed by the bkfs demo at $(date -u +%FT%TZ)" > "$MNT/etc/hostname"
echo "live:     $(cat "$MNT/etc/hostname")"
echo "snapshot: $(cat "$MNT/.snapshots/$name/etc/hostname")"
[ "$(cat "$MNT/.snapshots/$name/etc/hostname")" = "$before" ]

step "wait until the copy is sealed in the store"
while ! grep -q '^state: sealed' "$MNT/.control/snapshot"; do
    if grep -q '^state: failed' "$MNT/.control/snapshot"; then
        cat "$MNT/.control/snapshot"
        exit 1
    fi
    sleep 0.1
done
cat "$MNT/.control/snapshot"
ls "$MNT/.snapshots/"

step "the snapshot, now read from the store, still holds its moment (diff with the live tree)"
diff -r --no-dereference "$MNT/.snapshots/$name/etc" "$SRC/etc" | head -5 || true
[ "$(cat "$MNT/.snapshots/$name/etc/hostname")" = "$before" ]

step "verify every byte of the store"
"$BKFS" check --read-data --store "$SRC/.bkfs"

umount "$MNT"
trap - EXIT
echo
echo "done: $SRC is the source, $SRC/.bkfs the store; mount it again with"
echo "  bkfs mount $SRC $MNT      (or mount -t bkfs $SRC $MNT)"
