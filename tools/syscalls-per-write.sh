#!/bin/bash
# The daemon's system calls per 4 KiB write(2) through a mount, counted with strace -c -f:
#
#   tools/syscalls-per-write.sh [-n WRITES] [-o OPTIONS] [-u] [-p]
#
#   -n WRITES   4 KiB writes of dd, one FUSE WRITE each (default 20000)
#   -o OPTIONS  mount options (default none: snapshots on, write-through)
#   -u          write as an unprivileged user (nobody): the kernel then asks the daemon to
#               kill set-id bits and capabilities on every write
#   -p          with a snapshot pending (its copy held back), so writes preserve pre-images
#
# Prints each system call the daemon made per write, most frequent first. Needs root and strace.
# Uses the newer of target/release/bkfs and target/debug/bkfs (BKFS=path overrides).
set -euo pipefail
N=20000 OPTS="" AS=() PENDING=0
while getopts "n:o:up" o; do
    case $o in
        n) N=$OPTARG ;;
        o) OPTS=$OPTARG ;;
        u) AS=(setpriv --reuid=65534 --regid=65534 --clear-groups) ;;
        p) PENDING=1 ;;
        *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BKFS:-}" ]; then
    BKFS=$(ls -t "$ROOT"/target/release/bkfs "$ROOT"/target/debug/bkfs 2>/dev/null | head -1)
fi
[ -x "$BKFS" ] || { echo "no bkfs binary: cargo build first" >&2; exit 1; }
command -v strace >/dev/null || { echo "needs strace" >&2; exit 1; }

W=$(mktemp -d /var/tmp/bkfs-syscalls-XXXXXX)
mkdir -p "$W/src" "$W/mnt"
chmod 755 "$W"
cleanup() {
    [ -n "${SP:-}" ] && kill "$SP" 2>/dev/null || true
    rm -f "$W/hold"
    umount "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
if [ $PENDING = 1 ]; then
    touch "$W/hold"
    export BKFS_HOLD_COPY=$W/hold
fi
"$BKFS" mount "$W/src" "$W/mnt" ${OPTS:+-o "$OPTS"}
pid=$(pgrep -f -- "mount $W/src $W/mnt" | head -1)
dd if=/dev/zero of="$W/mnt/f" bs=4k count=$((N < 100 ? N : 100)) status=none
chown 65534:65534 "$W/mnt/f"
[ $PENDING = 1 ] && echo pending > "$W/mnt/.control/snapshot"
strace -c -f -p "$pid" -o "$W/strace.txt" 2>/dev/null & SP=$!
sleep 1
"${AS[@]}" dd if=/dev/zero of="$W/mnt/f" bs=4k count="$N" conv=notrunc status=none
sleep 0.5
kill -INT $SP; wait $SP 2>/dev/null || true; SP=
echo "daemon system calls per 4 KiB write ($N writes; options: ${OPTS:-none}; writer: $([ ${#AS[@]} -gt 0 ] && echo nobody || echo root)$([ $PENDING = 1 ] && echo '; a snapshot pending'))"
awk -v n="$N" '$4 ~ /^[0-9]+$/ && $NF != "total" { printf "%-20s %6.2f\n", $NF, $4 / n; t += $4 / n }
     END { printf "%-20s %6.2f\n", "all", t }' "$W/strace.txt" | sort -k2 -rn | awk '$2 >= 0.01'
