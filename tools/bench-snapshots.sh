#!/bin/bash
# Snapshots through a live mount (`.control/snapshot`, `.snapshots/NAME/`), measured in one run:
#
#   tools/bench-snapshots.sh [-r RUNS] [-R SLOW_RUNS] [-n SNAPS] [-p PHASES] [-w WORKDIR]
#
#   -r RUNS        repetitions of each timed measurement; medians are reported (default 3)
#   -R SLOW_RUNS   repetitions for restic and borg mounts, minutes per run (default 1; 0 skips)
#   -n SNAPS       snapshots in a row for the barrier figures (default 20)
#   -p PHASES      comma-separated subset of: barrier,fence,incr,write,copy,read (default all)
#   -w WORKDIR     trees, stores, repositories, mountpoints (default /var/tmp/snapbench)
#
# Phases:
#   barrier  barrier_ms of SNAPS snapshots in a row (each waits for `state: sealed`) on a tree of
#            10,000 and of 1,000,000 small files, a light writer appending through the mount;
#            p50, p99 (nearest rank) and max, and the wall time of the `echo NAME >` request.
#   fence    SNAPS snapshots while a writer holds 1, 100 and 1,000 files open for writing and
#            writes 4 KiB to each in turn: fence_ms (fencing the open files), barrier_ms, the
#            wall time of the request, and the writer's longest pause (one write's latency).
#   incr     10 files changed in the 100,000-file tree: time from the first write to
#            `state: sealed` (polled every 5 ms), against `restic backup` of the same change in a
#            plain copy of the tree (repository made once).
#   write    1 GiB sequential write (dd bs=1M conv=fsync) through the mount while the first
#            snapshot of the kernel tree is being copied (fresh store each run), against the same
#            write idle right before the snapshot and right after it is sealed (ratio to the mean).
#   copy     first snapshot of the kernel tree (`seconds` of .control/snapshot, fresh store each
#            run) against `bkfs backup` of the same tree into a fresh store.
#   read     `tar cf - . | wc -c` and `find . -ls | wc -l` in a sealed snapshot of the kernel
#            tree through the live mount's `.snapshots/NAME/`, against the native directory, the
#            live tree through the mount, `restic mount` and `borg mount`; cold (fresh mount per
#            run, input re-read right before) and warm.
#
# Inputs are made once under WORKDIR and kept (never deleted between timed runs: a big rm -rf
# slows file creation on this unjournalled ext4 for minutes): tree-10k and tree-1m (generated),
# small-src and small-restic (copies of /var/tmp/bkfs-bench/small), linux-src (a copy of
# /var/tmp/bkfs-bench/linux). Fresh stores are kept under WORKDIR/stores (delete it afterwards).
# Needs root (FUSE mounts), restic, borg with python3-llfuse for borg mount.
# Uses target/release/bkfs (built if missing; BKFS=path overrides).
set -euo pipefail

RUNS=3
SLOW_RUNS=1
SNAPS=20
PHASES=barrier,fence,incr,write,copy,read
WORK=/var/tmp/snapbench
while getopts "r:R:n:p:w:" o; do
    case $o in
        r) RUNS=$OPTARG ;;
        R) SLOW_RUNS=$OPTARG ;;
        n) SNAPS=$OPTARG ;;
        p) PHASES=$OPTARG ;;
        w) WORK=$OPTARG ;;
        *) sed -n '2,32p' "$0"; exit 2 ;;
    esac
done
CMDLINE="$0 $*"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BKFS=${BKFS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bkfs}
if [ ! -x "$BKFS" ]; then
    (cd "$ROOT" && cargo build --release --bin bkfs)
fi
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-x}
export BORG_PASSPHRASE=${BORG_PASSPHRASE:-x}
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
mkdir -p "$WORK/stores" "$WORK/logs"
TAG=$(date -u +%Y%m%dT%H%M%S)
RESULTS=$WORK/results-$TAG.txt
: > "$RESULTS"
has() { case ",$PHASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

MOUNTS=()
BGPIDS=()
cleanup() {
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for m in "${MOUNTS[@]}"; do
        mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    return 0
}
trap cleanup EXIT

# --- helpers -----------------------------------------------------------------------------------
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | awk '{printf "%.3f\n", $1}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
# nearest-rank percentile P of the numbers on stdin
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {if (!NR) exit; i=int(NR*p/100+0.999999); if (i<1) i=1; print a[i]}'; }
record() { echo "$*" >> "$RESULTS"; }   # key value
get() { awk -v k="$1" '$1==k {print $2}' "$RESULTS" | tail -1; }
med() { awk -v k="$1" '$1==k {print $2}' "$RESULTS" | median; }
ratio() { if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then echo "scale=3; $1 / $2" | bc | sed 's/^\./0./'; else echo "-"; fi; }

mount_live() { # SRC MNT [extra -o options]
    local src=$1 mnt=$2 opts="log=$WORK/logs/bkfs-$(basename "$1").log"
    [ -n "${3:-}" ] && opts="$opts,$3"
    mkdir -p "$mnt"
    "$BKFS" mount "$src" "$mnt" -o "$opts"
    MOUNTS+=("$mnt")
}
umount_live() { umount "$1"; }
field() { awk -F': ' -v k="$2" '$1==k {print $2}' "$1/.control/snapshot"; }
# snap MNT NAME: request a snapshot; prints the wall seconds of the request
snap() {
    local t0
    t0=$(now)
    if ! echo "$2" > "$1/.control/snapshot"; then
        echo "snapshot $2 refused:" >&2; cat "$1/.control/snapshot" "$1/.control/status" >&2; exit 1
    fi
    since "$t0"
}
# wait_sealed MNT [TIMEOUT_S]: polls every 5 ms
wait_sealed() {
    local mnt=$1 limit=${2:-3600} t0 st
    t0=$(date +%s)
    while :; do
        st=$(field "$mnt" state)
        case $st in
            sealed) return 0 ;;
            failed|interrupted)
                echo "snapshot $(field "$mnt" name) $st:" >&2; cat "$mnt/.control/snapshot" >&2; exit 1 ;;
        esac
        if [ $(( $(date +%s) - t0 )) -gt "$limit" ]; then
            echo "snapshot not sealed after ${limit}s:" >&2; cat "$mnt/.control/snapshot" >&2; exit 1
        fi
        sleep 0.005
    done
}
reread() { (cd "$1" && tar cf - . | wc -c) > /dev/null; }   # a tree's data into the page cache
reread_store() { find "$1" -type f -print0 | xargs -0 cat > /dev/null; }

# --- inputs, made once -------------------------------------------------------------------------
gen_tree() { # DIR NFILES: NFILES files of 201 bytes, 1000 per directory, 100 directories per level
    [ -d "$1" ] && return 0
    echo "generating $1 ($2 files) ..."
    python3 - "$1" "$2" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
tmp, data = root + ".tmp", b"x" * 200 + b"\n"
for i in range(n):
    d = os.path.join(tmp, "d%03d" % (i // 100000), "d%03d" % ((i // 1000) % 100))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "f%04d" % (i % 1000)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
os.rename(tmp, root)
EOF
}
copy_once() { # FROM TO
    [ -d "$2" ] && return 0
    echo "copying $1 to $2 ..."
    cp -a "$1" "$2.tmp" && mv "$2.tmp" "$2"
}
TREE10K=$WORK/tree-10k
TREE1M=$WORK/tree-1m
SMALL=$WORK/small-src
SMALL_R=$WORK/small-restic
LINUX=$WORK/linux-src
if has barrier; then gen_tree "$TREE10K" 10000; gen_tree "$TREE1M" 1000000; fi
if has incr; then
    copy_once /var/tmp/bkfs-bench/small "$SMALL"
    copy_once /var/tmp/bkfs-bench/small "$SMALL_R"
fi
if has write || has copy || has read; then copy_once /var/tmp/bkfs-bench/linux "$LINUX"; fi

echo "bkfs: $BKFS ($(cd "$ROOT" && git rev-parse --short HEAD)); runs $RUNS, restic/borg runs $SLOW_RUNS; results: $RESULTS"

# --- 1. barrier duration -----------------------------------------------------------------------
bg_writer() { # MNT: appends a line every 10 ms through the mount (open, write, close each time)
    while :; do echo "$(date +%s.%N)" >> "$1/bench-bg.log"; sleep 0.01; done
}
barrier_tree() { # LABEL TREE
    local label=$1 tree=$2 mnt=$WORK/mnt-barrier t r i wall bms
    echo "== barrier: $label ($tree)"
    mount_live "$tree" "$mnt"
    t=$(now); snap "$mnt" "first-$TAG" > /dev/null; wait_sealed "$mnt"
    echo "  first snapshot sealed in $(since "$t") s ($(field "$mnt" copy); files $(field "$mnt" files))"
    record "barrier.$label.first_s" "$(since "$t")"
    bg_writer "$mnt" & BGPIDS+=($!)
    sleep 0.5
    for i in $(seq "$SNAPS"); do
        wall=$(snap "$mnt" "b$i-$TAG")
        bms=$(field "$mnt" barrier_ms)
        wait_sealed "$mnt"
        record "barrier.$label.ms" "$bms"
        record "barrier.$label.wall_s" "$wall"
        record "barrier.$label.incr_s" "$(field "$mnt" seconds)"
    done
    kill "${BGPIDS[-1]}"; wait "${BGPIDS[-1]}" 2>/dev/null || true; unset 'BGPIDS[-1]'
    umount_live "$mnt"
    r=$(awk -v k="barrier.$label.ms" '$1==k {print $2}' "$RESULTS")
    echo "  barrier_ms: p50 $(echo "$r" | pct 50)  p99 $(echo "$r" | pct 99)  max $(echo "$r" | pct 100)   (all: $(echo $r))"
    echo "  request wall s: p50 $(awk -v k="barrier.$label.wall_s" '$1==k {print $2}' "$RESULTS" | pct 50); copy s p50: $(awk -v k="barrier.$label.incr_s" '$1==k {print $2}' "$RESULTS" | pct 50)"
}
if has barrier; then
    barrier_tree 10k "$TREE10K"
    barrier_tree 1m "$TREE1M"
fi

# --- 1b. fences with files open for writing -----------------------------------------------------
open_writer() { # DIR N STOPFILE OUT: N files open for writing, 4 KiB to each in turn until STOPFILE
    python3 - "$@" <<'EOF'
import os, sys, time
d, n, stop, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.makedirs(d, exist_ok=True)
fds = [os.open(os.path.join(d, "w%04d" % i), os.O_WRONLY | os.O_CREAT, 0o644) for i in range(n)]
buf, worst, writes, i = b"w" * 4096, 0.0, 0, 0
open(out + ".ready", "w").close()
while not os.path.exists(stop):
    t = time.monotonic()
    os.pwrite(fds[i % n], buf, (i // n % 256) * 4096)
    worst = max(worst, time.monotonic() - t)
    writes += 1
    i += 1
with open(out, "w") as f:
    f.write("%.3f %d\n" % (worst * 1000, writes))
EOF
}
if has fence; then
    MNT=$WORK/mnt-fence
    mkdir -p "$WORK/fence-src"
    for n in 1 100 1000; do
        echo "== fence: $n files open for writing"
        mount_live "$WORK/fence-src" "$MNT"
        rm -f "$WORK/fence.stop" "$WORK/fence.out" "$WORK/fence.out.ready"
        open_writer "$MNT/open-$n" "$n" "$WORK/fence.stop" "$WORK/fence.out" & BGPIDS+=($!)
        while [ ! -e "$WORK/fence.out.ready" ]; do sleep 0.05; done
        sleep 0.5
        for i in $(seq "$SNAPS"); do
            wall=$(snap "$MNT" "f$n-$i-$TAG")
            record "fence.$n.fence_ms" "$(field "$MNT" fence_ms)"
            record "fence.$n.files" "$(field "$MNT" fenced_files)"
            record "fence.$n.barrier_ms" "$(field "$MNT" barrier_ms)"
            record "fence.$n.wall_ms" "$(echo "$wall * 1000" | bc)"
            wait_sealed "$MNT"
        done
        touch "$WORK/fence.stop"; wait "${BGPIDS[-1]}" 2>/dev/null || true; unset 'BGPIDS[-1]'
        read -r worst writes < "$WORK/fence.out"
        record "fence.$n.worst_write_ms" "$worst"
        echo "  fenced $(get "fence.$n.files") files; fence_ms p50 $(awk -v k="fence.$n.fence_ms" '$1==k {print $2}' "$RESULTS" | pct 50); barrier_ms p50 $(awk -v k="fence.$n.barrier_ms" '$1==k {print $2}' "$RESULTS" | pct 50); longest write $worst ms of $writes"
        umount_live "$MNT"
    done
fi

# --- 2. incremental snapshot of 10 changed files ------------------------------------------------
CHANGED=()
if has incr; then
    mapfile -t CHANGED < <(cd "$SMALL" && find . -type f -not -path './.bkfs/*' | sort | awk 'NR % 10000 == 1' | head -10)
    change_files() { # DIR RUN: overwrites the first 4 KiB of each changed file
        local f
        for f in "${CHANGED[@]}"; do
            head -c 4096 /dev/urandom | dd of="$1/$f" bs=4096 conv=notrunc status=none
        done
    }
    REPO_S=$WORK/restic-small
    if [ ! -f "$REPO_S/config" ]; then
        echo "restic repository of $SMALL_R ..."
        restic init --repo "$REPO_S" -q
        restic backup --repo "$REPO_S" -q "$SMALL_R"
    fi
    MNT=$WORK/mnt-incr
    for run in $(seq "$RUNS"); do
        echo "== incr run $run"
        mount_live "$SMALL" "$MNT"
        snap "$MNT" "incr-base-$TAG-$run" > /dev/null; wait_sealed "$MNT"
        echo "  base snapshot: $(field "$MNT" copy), $(field "$MNT" seconds) s"
        t=$(now)
        change_files "$MNT" "$run"
        snap "$MNT" "incr-$TAG-$run" > /dev/null
        wait_sealed "$MNT"
        s=$(since "$t")
        echo "  bkfs: write to sealed $s s (copy: $(field "$MNT" copy); files $(field "$MNT" files); seconds $(field "$MNT" seconds); barrier_ms $(field "$MNT" barrier_ms))"
        record incr.bkfs_s "$s"
        umount_live "$MNT"
        (cd "$SMALL_R" && find . -ls > /dev/null)
        change_files "$SMALL_R" "$run"
        t=$(now)
        restic backup --repo "$REPO_S" -q "$SMALL_R"
        s=$(since "$t")
        echo "  restic backup: $s s"
        record incr.restic_s "$s"
    done
fi

# --- 3. write throughput during the first copy / 4. copy rate ----------------------------------
dd_mib_s() { # FILE: 1 GiB, prints MiB/s
    local t0 s
    t0=$(now)
    dd if=/dev/zero of="$1" bs=1M count=1024 conv=fsync status=none
    s=$(since "$t0")
    echo "scale=1; 1024 / $s" | bc
}
if has write; then
    MNT=$WORK/mnt-write
    for run in $(seq "$RUNS"); do
        echo "== write run $run"
        mount_live "$LINUX" "$MNT" "store=$WORK/stores/write-$TAG-$run"
        reread "$LINUX"
        idle=$(dd_mib_s "$MNT/bench-dd-idle.bin"); rm -f "$MNT/bench-dd-idle.bin"
        snap "$MNT" "w$run" > /dev/null
        sleep 0.5
        busy=$(dd_mib_s "$MNT/bench-dd-busy.bin")
        st=$(field "$MNT" state); fl=$(field "$MNT" files)
        echo "  idle $idle MiB/s, during copy $busy MiB/s (state at end of dd: $st, files $fl)"
        [ "$st" = copying ] || echo "  WARNING: the copy ended before the write did" >&2
        wait_sealed "$MNT"
        rm -f "$MNT/bench-dd-busy.bin"
        # idle again once sealed: the first idle write follows the mount and the re-read
        idle2=$(dd_mib_s "$MNT/bench-dd-idle.bin"); rm -f "$MNT/bench-dd-idle.bin"
        echo "  idle after the copy $idle2 MiB/s"
        umount_live "$MNT"
        record write.idle_mib_s "$idle"
        record write.idle2_mib_s "$idle2"
        record write.busy_mib_s "$busy"
        record write.ratio "$(ratio "$busy" "$(echo "($idle + $idle2) / 2" | bc -l)")"
    done
fi
if has copy; then
    MNT=$WORK/mnt-copy
    for run in $(seq "$RUNS"); do
        echo "== copy run $run"
        mount_live "$LINUX" "$MNT" "store=$WORK/stores/copy-$TAG-$run"
        reread "$LINUX"
        t=$(now)
        snap "$MNT" "c$run" > /dev/null
        wait_sealed "$MNT"
        s=$(since "$t")
        # read once: `seconds` still grows for a moment after `state: sealed`
        secs=$(field "$MNT" seconds)
        echo "  first snapshot: seconds $secs, wall $s, rate_mb_s $(field "$MNT" rate_mb_s), files $(field "$MNT" files), bytes $(field "$MNT" bytes)"
        sleep 1; echo "  seconds 1 s after sealed: $(field "$MNT" seconds)"
        record copy.snap_s "$secs"
        record copy.snap_wall_s "$s"
        umount_live "$MNT"
        reread "$LINUX"
        t=$(now)
        "$BKFS" backup --no-progress --name c$run --store "$WORK/stores/backup-$TAG-$run" "$LINUX" > /dev/null
        s=$(since "$t")
        echo "  bkfs backup: $s s"
        record copy.backup_s "$s"
    done
fi

# --- 5. reading a sealed snapshot --------------------------------------------------------------
if has read; then
    RSTORE=$WORK/stores/read
    MNT=$WORK/mnt-read
    REPO_L=$WORK/restic-linux
    BORG_L=$WORK/borg-linux
    if ! "$BKFS" list --store "$RSTORE" 2>/dev/null | grep -q '^bench '; then
        echo "sealed snapshot 'bench' of $LINUX in $RSTORE ..."
        mount_live "$LINUX" "$MNT" "store=$RSTORE"
        snap "$MNT" bench > /dev/null; wait_sealed "$MNT"; umount_live "$MNT"
    fi
    if [ "$SLOW_RUNS" != 0 ] && [ ! -f "$REPO_L/config" ]; then
        echo "restic repository of $LINUX ..."
        restic init --repo "$REPO_L.tmp" -q && restic backup --repo "$REPO_L.tmp" -q --exclude "$LINUX/.bkfs" "$LINUX" && mv "$REPO_L.tmp" "$REPO_L"
    fi
    if [ "$SLOW_RUNS" != 0 ] && [ ! -f "$BORG_L/config" ]; then
        echo "borg repository of $LINUX ..."
        borg init -e none "$BORG_L.tmp" && borg create --exclude "$LINUX/.bkfs" "$BORG_L.tmp::bench" "$LINUX" && mv "$BORG_L.tmp" "$BORG_L"
    fi
    mkdir -p "$WORK/mnt-restic" "$WORK/mnt-borg"
    RESTIC_PID=
    up() {
        case $1 in
            mount|snap) mount_live "$LINUX" "$MNT" "store=$RSTORE" ;;
            restic)
                restic mount --repo "$REPO_L" "$WORK/mnt-restic" > "$WORK/logs/restic-mount.log" 2>&1 &
                RESTIC_PID=$!; MOUNTS+=("$WORK/mnt-restic")
                for _ in $(seq 600); do [ -d "$WORK/mnt-restic/snapshots/latest$LINUX" ] && return 0; sleep 0.1; done
                echo "restic mount did not come up" >&2; exit 1 ;;
            borg) borg mount "$BORG_L::bench" "$WORK/mnt-borg"; MOUNTS+=("$WORK/mnt-borg") ;;
        esac
    }
    down() {
        case $1 in
            mount|snap) umount_live "$MNT" ;;
            restic) umount "$WORK/mnt-restic" 2>/dev/null || kill "$RESTIC_PID"; wait "$RESTIC_PID" 2>/dev/null || true ;;
            borg) borg umount "$WORK/mnt-borg" ;;
        esac
    }
    dir_of() {
        case $1 in
            live) echo "$LINUX" ;;
            mount) echo "$MNT" ;;
            snap) echo "$MNT/.snapshots/bench" ;;
            restic) echo "$WORK/mnt-restic/snapshots/latest$LINUX" ;;
            borg) echo "$WORK/mnt-borg${LINUX}" ;;
        esac
    }
    input() {
        case $1 in
            live|mount) reread "$LINUX" ;;
            snap) reread_store "$RSTORE" ;;
            restic) reread_store "$REPO_L" ;;
            borg) reread_store "$BORG_L" ;;
        esac
    }
    # the native tree has the store and diff area of the mounts inside (.bkfs): exclude it there
    read_cmd() { # WHAT KIND DIR -> "seconds output"
        local t0 out ex=()
        [ "$2" = live ] && ex=(--exclude=./.bkfs)
        t0=$(now)
        case $1 in
            tar) out=$(cd "$3" && tar cf - "${ex[@]}" . | wc -c) ;;
            find) if [ "$2" = live ]; then out=$(cd "$3" && find . -path ./.bkfs -prune -o -ls | wc -l)
                  else out=$(cd "$3" && find . -ls | wc -l); fi ;;
        esac
        echo "$(since "$t0") $out"
    }
    measure() { # KIND WHAT MODE
        local kind=$1 what=$2 mode=$3 n=$RUNS times=() r out=
        case $kind in restic|borg) n=$SLOW_RUNS ;; esac
        [ "$n" = 0 ] && return 0
        if [ "$mode" = warm ]; then up "$kind"; read_cmd "$what" "$kind" "$(dir_of "$kind")" > /dev/null; fi
        for _ in $(seq "$n"); do
            if [ "$mode" = cold ]; then input "$kind"; up "$kind"; fi
            r=$(read_cmd "$what" "$kind" "$(dir_of "$kind")")
            times+=("${r%% *}"); out=${r#* }
            if [ "$mode" = cold ]; then down "$kind"; fi
        done
        [ "$mode" = warm ] && down "$kind"
        for r in "${times[@]}"; do record "read.$kind.$what.$mode" "$r"; done
        record "read.$kind.$what.out" "$out"
        printf '  %-6s %-4s %-4s %8.2f s   (runs: %s; output %s)\n' "$kind" "$what" "$mode" \
            "$(printf '%s\n' "${times[@]}" | median)" "${times[*]}" "$out"
    }
    echo "== read: $LINUX ($(find "$LINUX" -path "$LINUX/.bkfs" -prune -o -print | wc -l) entries)"
    for what in tar find; do
        for mode in cold warm; do
            for kind in live mount snap restic borg; do measure "$kind" "$what" "$mode"; done
        done
    done
fi

# --- the table ---------------------------------------------------------------------------------
echo
echo "Command: $CMDLINE   ($(date -u +%Y-%m-%dT%H:%MZ), bkfs $(cd "$ROOT" && git rev-parse --short HEAD))"
echo
if has barrier; then
    echo "| tree | snapshots | barrier_ms p50 | p99 | max | request wall ms p50 | copy s p50 |"
    echo "|---|---|---|---|---|---|---|"
    for l in 10k 1m; do
        b=$(awk -v k="barrier.$l.ms" '$1==k {print $2}' "$RESULTS")
        w=$(awk -v k="barrier.$l.wall_s" '$1==k {printf "%.1f\n", $2*1000}' "$RESULTS" | pct 50)
        c=$(awk -v k="barrier.$l.incr_s" '$1==k {print $2}' "$RESULTS" | pct 50)
        echo "| $l files | $(echo "$b" | wc -l) | $(echo "$b" | pct 50) | $(echo "$b" | pct 99) | $(echo "$b" | pct 100) | $w | $c |"
    done
    echo
fi
if has fence; then
    echo "| files open for writing | snapshots | fence_ms p50 | p99 | barrier_ms p50 | p99 | request wall ms p50 | p99 | longest write ms |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for n in 1 100 1000; do
        f=$(awk -v k="fence.$n.fence_ms" '$1==k {print $2}' "$RESULTS")
        b=$(awk -v k="fence.$n.barrier_ms" '$1==k {print $2}' "$RESULTS")
        w=$(awk -v k="fence.$n.wall_ms" '$1==k {print $2}' "$RESULTS")
        echo "| $n (fenced: $(get "fence.$n.files")) | $(echo "$f" | wc -l) | $(echo "$f" | pct 50) | $(echo "$f" | pct 99) | $(echo "$b" | pct 50) | $(echo "$b" | pct 99) | $(echo "$w" | pct 50) | $(echo "$w" | pct 99) | $(get "fence.$n.worst_write_ms") |"
    done
    echo
fi
if has incr || has write || has copy; then
    echo "| measurement | bkfs | other | ratio | target |"
    echo "|---|---|---|---|---|"
    if has incr; then
        b=$(med incr.bkfs_s); r=$(med incr.restic_s)
        echo "| 10 changed files of 100k, write to sealed vs restic backup (s) | $b | $r | $(ratio "$r" "$b")x faster | ≥ 20x |"
    fi
    if has write; then
        echo "| 1 GiB dd during first copy vs idle before / after it (MiB/s) | $(med write.busy_mib_s) | $(med write.idle_mib_s) / $(med write.idle2_mib_s) | $(med write.ratio) | ≥ 0.7 |"
    fi
    if has copy; then
        b=$(med copy.snap_s); r=$(med copy.backup_s)
        echo "| first snapshot of the kernel tree (seconds) vs bkfs backup (s) | $b | $r | $(ratio "$b" "$r") | |"
    fi
    echo
fi
if has read; then
    echo "| read (s) | native | live mount | .snapshots/bench | restic mount | borg mount | snap/native | snap/live mount | restic/snap | borg/snap |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for what in tar find; do
        for mode in cold warm; do
            v=()
            for kind in live mount snap restic borg; do v+=("$(med "read.$kind.$what.$mode")"); done
            echo "| $what $mode | ${v[0]} | ${v[1]} | ${v[2]} | ${v[3]:--} | ${v[4]:--} | $(ratio "${v[2]}" "${v[0]}") | $(ratio "${v[2]}" "${v[1]}") | $(ratio "${v[3]}" "${v[2]}") | $(ratio "${v[4]}" "${v[2]}") |"
        done
    done
    echo
    for k in live mount snap restic borg; do echo "tar bytes $k: $(get "read.$k.tar.out") find lines $k: $(get "read.$k.find.out")"; done
fi
