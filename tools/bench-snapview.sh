#!/bin/bash
# Reading a sealed snapshot: the live directory against `bkfs mount --store` and `restic mount`
# of the same tree, measured in one run.
#
#   tools/bench-snapview.sh [-r RUNS] [-R RESTIC_RUNS] [-t TREE] [-w WORKDIR]
#
#   -r RUNS         repetitions of each measurement; medians are reported (default 3)
#   -R RESTIC_RUNS  repetitions for restic, which takes minutes per run (default RUNS; 0 skips it)
#   -t TREE         the tree to read (default /var/tmp/lead/linux, Debian's linux-source 6.1)
#   -w WORKDIR      store, restic repository and mountpoints (default /var/tmp/snapview)
#
# Each figure is the median wall time of `tar cf - . | wc -c` (GNU tar answers `tar cf /dev/null`
# without reading file data) or `find . -ls | wc -l`, run inside the tree:
#   warm  the same mount read again (the kernel's caches full);
#   cold  a fresh mount for every run, its input (the live tree, the store's packs, the restic
#         repository) re-read right before timing so that it is in the page cache: what is
#         measured is the filesystem, not the disk. The page cache is never dropped (the machine
#         is shared).
# Needs root (FUSE mounts). Uses target/release/bkfs (built if missing; BKFS=path overrides).
set -euo pipefail

RUNS=3
RESTIC_RUNS=
TREE=/var/tmp/lead/linux
WORK=/var/tmp/snapview
while getopts "r:R:t:w:" o; do
    case $o in
        r) RUNS=$OPTARG ;;
        R) RESTIC_RUNS=$OPTARG ;;
        t) TREE=$OPTARG ;;
        w) WORK=$OPTARG ;;
        *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done
RESTIC_RUNS=${RESTIC_RUNS:-$RUNS}
command -v restic >/dev/null || RESTIC_RUNS=0

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BKFS=${BKFS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bkfs}
if [ ! -x "$BKFS" ]; then
    (cd "$ROOT" && cargo build --release --bin bkfs)
fi
TREE=$(cd "$TREE" && pwd)
STORE=$WORK/store
REPO=$WORK/restic
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-x}
mkdir -p "$WORK/mnt-bkfs" "$WORK/mnt-restic"

MOUNTS=()
RESTIC_PID=
cleanup() {
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -n "$RESTIC_PID" ] && kill "$RESTIC_PID" 2>/dev/null || true
}
trap cleanup EXIT

# --- the store and the restic repository, made once -----------------------------------------
if ! "$BKFS" list --store "$STORE" 2>/dev/null | grep -q '^bench '; then
    echo "backing $TREE up into $STORE ..."
    "$BKFS" backup --no-progress --name bench --store "$STORE" "$TREE"
fi
if [ "$RESTIC_RUNS" != 0 ] && ! restic snapshots --repo "$REPO" --path "$TREE" --json 2>/dev/null | grep -q '"paths"'; then
    echo "backing $TREE up into restic repository $REPO ..."
    [ -f "$REPO/config" ] || restic init --repo "$REPO" -q
    restic backup --repo "$REPO" -q "$TREE"
fi

# --- mounting ----------------------------------------------------------------------------------
mount_bkfs() {
    "$BKFS" mount --store "$STORE" "$WORK/mnt-bkfs" -o "log=$WORK/bkfs.log"
    MOUNTS+=("$WORK/mnt-bkfs")
}
umount_bkfs() { umount "$WORK/mnt-bkfs"; }
mount_restic() {
    restic mount --repo "$REPO" "$WORK/mnt-restic" >"$WORK/restic-mount.log" 2>&1 &
    RESTIC_PID=$!
    MOUNTS+=("$WORK/mnt-restic")
    for _ in $(seq 600); do
        [ -d "$WORK/mnt-restic/snapshots/latest$TREE" ] && return 0
        sleep 0.1
    done
    echo "restic mount did not come up: $(cat "$WORK/restic-mount.log")" >&2
    exit 1
}
umount_restic() {
    umount "$WORK/mnt-restic" 2>/dev/null || kill "$RESTIC_PID"
    wait "$RESTIC_PID" 2>/dev/null || true
    RESTIC_PID=
}

# --- timing ------------------------------------------------------------------------------------
now() { date +%s.%N; }
# run WHAT DIR: prints "seconds output"
run() {
    local what=$1 dir=$2 t0 out
    t0=$(now)
    case $what in
        tar) out=$(cd "$dir" && tar cf - . | wc -c) ;;
        find) out=$(cd "$dir" && find . -ls | wc -l) ;;
    esac
    echo "$(echo "$(now) - $t0" | bc) $out"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
reread() { # the input of a kind, into the page cache
    case $1 in
        live) tar cf - -C "$TREE" . | cat > /dev/null ;;
        bkfs) cat "$STORE"/packs/* "$STORE"/index/* > /dev/null ;;
        restic) cat -- $(find "$REPO" -type f) > /dev/null ;;
    esac
}
dir_of() {
    case $1 in
        live) echo "$TREE" ;;
        bkfs) echo "$WORK/mnt-bkfs/bench" ;;
        restic) echo "$WORK/mnt-restic/snapshots/latest$TREE" ;;
    esac
}
runs_of() { if [ "$1" = restic ]; then echo "$RESTIC_RUNS"; else echo "$RUNS"; fi; }
up() { case $1 in bkfs) mount_bkfs ;; restic) mount_restic ;; *) ;; esac; }
down() { case $1 in bkfs) umount_bkfs ;; restic) umount_restic ;; *) ;; esac; }

declare -A RESULT OUTPUT
measure() { # KIND WHAT MODE
    local kind=$1 what=$2 mode=$3 n times=() r
    n=$(runs_of "$kind")
    [ "$n" = 0 ] && return 0
    if [ "$mode" = warm ]; then
        up "$kind"
        run "$what" "$(dir_of "$kind")" > /dev/null
    fi
    for _ in $(seq "$n"); do
        if [ "$mode" = cold ]; then reread "$kind"; up "$kind"; fi
        r=$(run "$what" "$(dir_of "$kind")")
        times+=("${r%% *}")
        OUTPUT[$kind.$what]=${r#* }
        if [ "$mode" = cold ]; then down "$kind"; fi
    done
    [ "$mode" = warm ] && down "$kind"
    RESULT[$kind.$what.$mode]=$(printf '%s\n' "${times[@]}" | median)
    printf '  %-6s %-4s %-4s %8.2f s   (runs: %s; output %s)\n' "$kind" "$what" "$mode" \
        "${RESULT[$kind.$what.$mode]}" "${times[*]}" "${OUTPUT[$kind.$what]}"
}

echo "tree: $TREE ($(find "$TREE" | wc -l) entries, $(du -sh "$TREE" | cut -f1)); runs: $RUNS, restic runs: $RESTIC_RUNS"
for what in tar find; do
    for mode in cold warm; do
        for kind in live bkfs restic; do
            measure "$kind" "$what" "$mode"
        done
    done
done

ratio() { if [ -n "${2:-}" ] && [ -n "${1:-}" ]; then echo "scale=2; $1 / $2" | bc; else echo "-"; fi; }
echo
printf '%-10s %10s %10s %10s %16s %18s\n' "" live bkfs restic "bkfs/live time" "restic/bkfs time"
for what in tar find; do
    for mode in cold warm; do
        l=${RESULT[live.$what.$mode]:-}; b=${RESULT[bkfs.$what.$mode]:-}; r=${RESULT[restic.$what.$mode]:-}
        printf '%-10s %10s %10s %10s %16s %18s\n' "$what $mode" "$l" "$b" "${r:--}" \
            "$(ratio "$b" "$l")" "$(ratio "$r" "$b")"
    done
done
if [ "${OUTPUT[live.tar]}" = "${OUTPUT[bkfs.tar]}" ]; then
    echo "tar streams of live and bkfs: same length (${OUTPUT[live.tar]} bytes)"
else
    echo "tar streams differ in length: live ${OUTPUT[live.tar]}, bkfs ${OUTPUT[bkfs.tar]}"
fi
echo "targets: bkfs/live tar time <= 2 (at least half as fast); restic/bkfs tar time >= 3"
