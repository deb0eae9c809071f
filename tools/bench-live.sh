#!/bin/bash
# Native filesystem against bkfs's live tree, measured in one run.
#
#   tools/bench-live.sh [-r RUNS] [-w WORKDIR] [-c CONFIGS] [-q]
#
#   -r RUNS     repetitions of each measurement, native and bkfs interleaved; medians are
#               reported with the spread (min-max) (default 5)
#   -w WORKDIR  scratch space on the filesystem to test (default /var/tmp/bkfs-bench-live)
#   -c CONFIGS  bkfs option sets to compare, ';'-separated; "default" means no -o
#               (default "default;writeback")
#   -q          quick: smaller files and no kernel tree (for a smoke test)
#
# Needs root, fio, python3, and for `tar x` the kernel tree: /var/tmp/bkfs-bench/linux if
# another benchmark extracted it, else Debian's linux-source (/usr/src/linux-source-*.tar.xz).
# Uses target/release/bkfs (built if missing; BKFS=path overrides).
#
# Traps this script avoids: inputs are re-read right before each timed read (idle page cache
# is reclaimed after about a minute); trees are never deleted between timed runs (a big rm -rf
# slows file creation on this unjournalled ext4 for minutes); every figure is a median.
set -euo pipefail

RUNS=5
WORK=/var/tmp/bkfs-bench-live
CONFIGS="default;writeback"
QUICK=0
while getopts "r:w:c:q" o; do
    case $o in
        r) RUNS=$OPTARG ;;
        w) WORK=$OPTARG ;;
        c) CONFIGS=$OPTARG ;;
        q) QUICK=1 ;;
        *) sed -n '2,20p' "$0"; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BKFS=${BKFS:-$ROOT/target/release/bkfs}
if [ ! -x "$BKFS" ]; then
    (cd "$ROOT" && cargo build --release --bin bkfs)
fi
for t in fio python3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done

if [ $QUICK = 1 ]; then SIZE=256M; NFILES=5000; RT=3; else SIZE=1G; NFILES=20000; RT=10; fi

mkdir -p "$WORK"
RESULTS=$WORK/results.txt
: > "$RESULTS"
MOUNTS=()
cleanup() {
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

# The kernel tree as an uncompressed tar (decompressing xz would dominate the timing).
KTAR=$WORK/linux.tar
if [ $QUICK = 0 ] && [ ! -s "$KTAR" ]; then
    if [ -d /var/tmp/bkfs-bench/linux ]; then
        tar -C /var/tmp/bkfs-bench -cf "$KTAR" linux
    elif ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1; then
        xz -dc "$(ls /usr/src/linux-source-*.tar.xz | head -1)" > "$KTAR"
    else
        echo "no kernel tree: install linux-source; skipping tar x" >&2
        : > "$KTAR"
    fi
fi

record() { echo "$1 $2 $3" >> "$RESULTS"; }   # config metric value

fio_run() { # dir rw bs bw|iops [fio options] -> MiB/s (bw) or IOPS
    local dir=$1 rw=$2 bs=$3 what=$4
    shift 4
    local out
    local timed=("$@")
    # Random tests run for a fixed time; sequential ones cover the file once.
    [ "${rw#rand}" != "$rw" ] && timed+=(--runtime=$RT --time_based)
    out=$(fio --name=b --directory="$dir" --filename=fio.data --rw="$rw" --bs="$bs" --size=$SIZE \
        --ioengine=psync --invalidate=0 --numjobs=1 "${timed[@]}" --output-format=json 2>/dev/null)
    echo "$out" | python3 -c "
import json,sys
j=json.load(sys.stdin)['jobs'][0]
side=j['read'] if j['read']['io_bytes']>0 else j['write']
print(side['bw']/1024 if '$what'=='bw' else side['iops'])"
}

meta() { # create|stat|unlink dir -> operations per second
    python3 - "$1" "$2" "$NFILES" <<'PY'
import os, sys, time
mode, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = [os.path.join(d, "f%05d" % i) for i in range(n)]
if mode == "create":
    os.makedirs(d)
    t = time.perf_counter()
    for p in names:
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
elif mode == "stat":
    for p in names:  # first pass fills the caches; the second is timed
        os.stat(p)
    t = time.perf_counter()
    for p in names:
        os.stat(p)
else:
    t = time.perf_counter()
    for p in names:
        os.unlink(p)
print(round(n / (time.perf_counter() - t)))
PY
}

io_tests() { # config dir
    local cfg=$1 dir=$2
    sync; sleep 1
    record "$cfg" seq_write_MiBs "$(fio_run "$dir" write 1M bw)"
    # The same with the data on disk at the end: buffered writes on this VM are bimodal.
    sync; sleep 1
    record "$cfg" seq_write_fsync_MiBs "$(fio_run "$dir" write 1M bw --end_fsync=1)"
    # Cold: nothing of the file in any page cache (the mount's nor the source's).
    sync; echo 3 > /proc/sys/vm/drop_caches
    record "$cfg" seq_read_cold_MiBs "$(fio_run "$dir" read 1M bw)"
    cat "$dir/fio.data" > /dev/null
    record "$cfg" seq_read_MiBs "$(fio_run "$dir" read 1M bw)"
    cat "$dir/fio.data" > /dev/null
    record "$cfg" rand_read_iops "$(fio_run "$dir" randread 4k iops)"
    # No page may still be under writeback: writing to one waits for the disk.
    sync; sleep 1
    record "$cfg" rand_write_iops "$(fio_run "$dir" randwrite 4k iops)"
}

tar_x() { # config dir run
    local cfg=$1 dir=$2 run=$3 t0 t1
    cat "$KTAR" > /dev/null
    sync; sleep 1
    mkdir "$dir/tar$run"
    t0=$(date +%s.%N)
    tar -C "$dir/tar$run" -xf "$KTAR"
    t1=$(date +%s.%N)
    record "$cfg" tar_x_files_per_s "$(python3 -c "print(round($KFILES / ($t1 - $t0)))")"
}

# Native directory and one source+mount per bkfs configuration, all on the same filesystem.
# Leftovers of an earlier run are moved aside, not deleted (deleting would slow creation).
if [ -e "$WORK/native" ]; then
    OLD=$WORK/old.$(date +%s)
    mkdir -p "$OLD"
    mv "$WORK/native" "$WORK"/src-* "$OLD"/ 2>/dev/null || true
    rmdir "$WORK"/mnt-* 2>/dev/null || true
    echo "moved the previous run's trees to $OLD" >&2
fi
mkdir -p "$WORK/native"
IFS=';' read -r -a CFGS <<< "$CONFIGS"
for i in "${!CFGS[@]}"; do
    mkdir -p "$WORK/src-$i" "$WORK/mnt-$i"
    opts=()
    [ "${CFGS[$i]}" != default ] && opts=(-o "${CFGS[$i]}")
    "$BKFS" mount "$WORK/src-$i" "$WORK/mnt-$i" "${opts[@]}"
    MOUNTS+=("$WORK/mnt-$i")
done

# Each phase runs for every configuration before the next phase, so that no
# timed file creation follows a mass deletion; unlinks are timed last of all.
DIRS=("native|$WORK/native")
for i in "${!CFGS[@]}"; do DIRS+=("bkfs:${CFGS[$i]}|$WORK/mnt-$i"); done
KFILES=0
[ -s "$KTAR" ] && KFILES=$(tar -tf "$KTAR" | wc -l)
for run in $(seq 1 "$RUNS"); do
    for cd in "${DIRS[@]}"; do
        echo "run $run/$RUNS: I/O on ${cd%%|*}" >&2
        io_tests "${cd%%|*}" "${cd#*|}"
    done
    sync; sleep 1
    for cd in "${DIRS[@]}"; do record "${cd%%|*}" create_per_s "$(meta create "${cd#*|}/meta$run")"; done
    for cd in "${DIRS[@]}"; do record "${cd%%|*}" stat_cached_per_s "$(meta stat "${cd#*|}/meta$run")"; done
    if [ "$KFILES" -gt 0 ]; then
        for cd in "${DIRS[@]}"; do
            echo "run $run/$RUNS: tar x on ${cd%%|*}" >&2
            tar_x "${cd%%|*}" "${cd#*|}" "$run"
        done
    fi
done
for run in $(seq 1 "$RUNS"); do
    for cd in "${DIRS[@]}"; do record "${cd%%|*}" unlink_per_s "$(meta unlink "${cd#*|}/meta$run")"; done
done

python3 - "$RESULTS" "$CONFIGS" "$RUNS" <<'PY'
import sys, statistics, collections
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    cfg, metric, v = line.split()
    vals[(cfg, metric)].append(float(v))
cfgs = ["bkfs:" + c for c in sys.argv[2].split(";")]
# Targets of the write-path issue, with snapshots on (docs/BENCHMARKS.md).
targets = {"seq_read_cold_MiBs": 0.9, "seq_read_MiBs": 0.9, "seq_write_MiBs": 0.9, "seq_write_fsync_MiBs": 0.9,
           "rand_read_iops": 0.9, "rand_write_iops": 0.9, "stat_cached_per_s": 0.9,
           "create_per_s": 0.5, "tar_x_files_per_s": 0.5, "unlink_per_s": 0.5}
def cell(v):
    return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
print(f"medians of {sys.argv[3]} runs, (min-max); ratio = median of bkfs / median of native")
head = f"{'metric':<22}{'native':>24}"
for c in cfgs:
    head += f"{c:>26}{'ratio':>7}"
print(head + f"{'target':>7}")
for m in targets:
    if ("native", m) not in vals:
        continue
    nv = vals[("native", m)]
    n = statistics.median(nv)
    row = f"{m:<22}{cell(nv):>24}"
    for c in cfgs:
        bv = vals.get((c, m), [0])
        row += f"{cell(bv):>26}{statistics.median(bv) / n:>7.2f}"
    print(row + f"{targets[m]:>7.2f}")
PY
echo "raw figures: $RESULTS (trees under $WORK are kept; delete them when the disk is idle)" >&2
