#!/bin/bash
# Reading a sealed snapshot: the native directory against its sealed snapshot read through a
# live mount (`MNT/.snapshots/bench/`), `bkfs mount --store` and `restic mount` of the same
# tree, measured in one run.
#
#   tools/bench-snapview.sh [-r RUNS] [-R RESTIC_RUNS] [-k KINDS] [-t TREE] [-w WORKDIR]
#
#   -r RUNS         repetitions of each measurement; medians are reported (default 5)
#   -R RESTIC_RUNS  repetitions for restic, which takes minutes per run (default RUNS; 0 skips it)
#   -k KINDS        comma-separated subset of live,snap,view,restic (default all)
#                     live    the native directory
#                     snap    `bkfs mount TREE MNT -o store=WORKDIR/live-store`, then
#                             MNT/.snapshots/bench/ (taken once through .control/snapshot and
#                             waited for until `state: sealed`)
#                     view    `bkfs mount --store WORKDIR/store` (a `bkfs backup` of the tree)
#                     restic  `restic mount` of a restic backup of the tree
#   -t TREE         the tree to read (default /var/tmp/lead/linux, Debian's linux-source 6.1)
#   -w WORKDIR      stores, restic repository and mountpoints (default /var/tmp/snapview)
#
# The kinds are interleaved: run 1 of each, then run 2 of each, and so on, so that the machine's
# drift hits them alike. Each figure is the median wall time of `tar cf - . | wc -c` (GNU tar answers `tar cf /dev/null`
# without reading file data) or `find . -ls | wc -l`, run inside the tree:
#   warm  the same mount read again (the kernel's caches full);
#   cold  a fresh mount for every run, its input (the live tree, the store's packs, the restic
#         repository) re-read right before timing so that it is in the page cache: what is
#         measured is the filesystem, not the disk. The page cache is never dropped (the machine
#         is shared).
# Needs root (FUSE mounts). Uses target/release/bkfs (built if missing; BKFS=path overrides).
set -euo pipefail

RUNS=5
RESTIC_RUNS=
KINDS=live,snap,view,restic
TREE=/var/tmp/lead/linux
WORK=/var/tmp/snapview
while getopts "r:R:k:t:w:" o; do
    case $o in
        r) RUNS=$OPTARG ;;
        k) KINDS=$OPTARG ;;
        R) RESTIC_RUNS=$OPTARG ;;
        t) TREE=$OPTARG ;;
        w) WORK=$OPTARG ;;
        *) sed -n '2,30p' "$0"; exit 2 ;;
    esac
done
RESTIC_RUNS=${RESTIC_RUNS:-$RUNS}
command -v restic >/dev/null || RESTIC_RUNS=0
has() { case ",$KINDS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
has restic || RESTIC_RUNS=0

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BKFS=${BKFS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bkfs}
if [ ! -x "$BKFS" ]; then
    (cd "$ROOT" && cargo build --release --bin bkfs)
fi
TREE=$(cd "$TREE" && pwd)
STORE=$WORK/store
LSTORE=$WORK/live-store
REPO=$WORK/restic
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-x}
mkdir -p "$WORK/mnt-bkfs" "$WORK/mnt-live" "$WORK/mnt-restic"

MOUNTS=()
RESTIC_PID=
cleanup() {
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -n "$RESTIC_PID" ] && kill "$RESTIC_PID" 2>/dev/null || true
}
trap cleanup EXIT

# --- the store and the restic repository, made once -----------------------------------------
mount_live() {
    "$BKFS" mount "$TREE" "$WORK/mnt-live" -o "store=$LSTORE,log=$WORK/bkfs-live.log"
    MOUNTS+=("$WORK/mnt-live")
}
umount_live() { umount "$WORK/mnt-live"; }
state_of() { awk -F': ' '$1=="state" {print $2}' "$WORK/mnt-live/.control/snapshot"; }
if has snap && ! "$BKFS" list --store "$LSTORE" 2>/dev/null | grep -q '^bench '; then
    echo "snapshot 'bench' of $TREE through a live mount, into $LSTORE ..."
    mount_live
    echo bench > "$WORK/mnt-live/.control/snapshot"
    until [ "$(state_of)" = sealed ]; do
        case $(state_of) in failed|interrupted) cat "$WORK/mnt-live/.control/snapshot" >&2; exit 1 ;; esac
        sleep 0.1
    done
    umount_live
fi
if has view && ! "$BKFS" list --store "$STORE" 2>/dev/null | grep -q '^bench '; then
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
        view) find "$STORE" -type f -print0 | xargs -0 cat > /dev/null ;;
        snap) find "$LSTORE" -type f -print0 | xargs -0 cat > /dev/null ;;
        restic) cat -- $(find "$REPO" -type f) > /dev/null ;;
    esac
}
dir_of() {
    case $1 in
        live) echo "$TREE" ;;
        view) echo "$WORK/mnt-bkfs/bench" ;;
        snap) echo "$WORK/mnt-live/.snapshots/bench" ;;
        restic) echo "$WORK/mnt-restic/snapshots/latest$TREE" ;;
    esac
}
runs_of() { if [ "$1" = restic ]; then echo "$RESTIC_RUNS"; else echo "$RUNS"; fi; }
up() { case $1 in view) mount_bkfs ;; snap) mount_live ;; restic) mount_restic ;; *) ;; esac; }
down() { case $1 in view) umount_bkfs ;; snap) umount_live ;; restic) umount_restic ;; *) ;; esac; }

declare -A RESULT OUTPUT
ALL=()
for k in live snap view restic; do has "$k" && ALL+=("$k"); done
measure() { # WHAT MODE: every kind, interleaved run by run
    local what=$1 mode=$2 kind i r
    declare -A times=()
    if [ "$mode" = warm ]; then
        for kind in "${ALL[@]}"; do
            [ "$(runs_of "$kind")" = 0 ] && continue
            up "$kind"; run "$what" "$(dir_of "$kind")" > /dev/null
        done
    fi
    local most=$(( RUNS > RESTIC_RUNS ? RUNS : RESTIC_RUNS ))
    for i in $(seq "$most"); do
        for kind in "${ALL[@]}"; do
            [ "$i" -gt "$(runs_of "$kind")" ] && continue
            if [ "$mode" = cold ]; then reread "$kind"; up "$kind"; fi
            r=$(run "$what" "$(dir_of "$kind")")
            times[$kind]+="${r%% *} "
            OUTPUT[$kind.$what]=${r#* }
            if [ "$mode" = cold ]; then down "$kind"; fi
        done
    done
    if [ "$mode" = warm ]; then
        for kind in "${ALL[@]}"; do [ "$(runs_of "$kind")" = 0 ] || down "$kind"; done
    fi
    for kind in "${ALL[@]}"; do
        [ -z "${times[$kind]:-}" ] && continue
        RESULT[$kind.$what.$mode]=$(printf '%s\n' ${times[$kind]} | median)
        printf '  %-6s %-4s %-4s %8.2f s   (runs: %s; min-max %s-%s; output %s)\n' "$kind" "$what" "$mode" \
            "${RESULT[$kind.$what.$mode]}" "${times[$kind]% }" \
            "$(printf '%s\n' ${times[$kind]} | sort -n | head -1)" \
            "$(printf '%s\n' ${times[$kind]} | sort -n | tail -1)" "${OUTPUT[$kind.$what]}"
    done
}

echo "tree: $TREE ($(find "$TREE" | wc -l) entries, $(du -sh "$TREE" | cut -f1)); runs: $RUNS, restic runs: $RESTIC_RUNS; kinds: ${ALL[*]}"
echo "bkfs: $BKFS ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo ?)); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for what in tar find; do
    for mode in cold warm; do
        measure "$what" "$mode"
    done
done

ratio() { if [ -n "${2:-}" ] && [ -n "${1:-}" ]; then echo "scale=2; $1 / $2" | bc; else echo "-"; fi; }
echo
printf '%-10s %8s %8s %8s %8s %10s %10s %12s\n' "" live snap view restic "snap/live" "view/live" "restic/snap"
for what in tar find; do
    for mode in cold warm; do
        l=${RESULT[live.$what.$mode]:-}; sn=${RESULT[snap.$what.$mode]:-}
        v=${RESULT[view.$what.$mode]:-}; r=${RESULT[restic.$what.$mode]:-}
        printf '%-10s %8s %8s %8s %8s %10s %10s %12s\n' "$what $mode" "${l:--}" "${sn:--}" "${v:--}" "${r:--}" \
            "$(ratio "$sn" "$l")" "$(ratio "$v" "$l")" "$(ratio "$r" "$sn")"
    done
done
for k in snap view restic; do
    [ -n "${OUTPUT[$k.tar]:-}" ] || continue
    if [ "${OUTPUT[live.tar]:-}" = "${OUTPUT[$k.tar]}" ]; then
        echo "tar streams of live and $k: same length (${OUTPUT[$k.tar]} bytes)"
    else
        echo "tar streams differ in length: live ${OUTPUT[live.tar]:-?}, $k ${OUTPUT[$k.tar]}"
    fi
done
echo "targets: snap/live tar time < 1.5, cold and warm"
