#!/usr/bin/env bash
# A long fsx soak of bkfs mounts, to run by hand (CI runs 30,000 operations per configuration
# in tests/conformance; this runs a million). Each configuration gets a fresh mount of an
# empty source under /tmp and one fsx run (fsx-rs, the File System eXerciser) with the
# project's tests/conformance/fsx.toml (every operation, mmap included):
#
#   default    bkfs mount SRC MNT         snapshots on, the kernel's writeback cache
#   off        -o snapshots=off           kernel passthrough for every open
#   nowriteback -o nowriteback            snapshots on, every write(2) through the daemon
#   snapshots  the default mount, with a snapshot asked for every 0.5 s through
#              .control/snapshot while a large file is rewritten (64 MiB/s), so that the
#              copy of a snapshot is pending most of the time (EBUSY meanwhile is expected)
#
# Usage: tools/soak-fsx.sh [-n OPS] [-p PER_RUN] [-s SEED] [-c CONFIGS] [-b BKFS] [-m MIB]
#                          [-o OPTS] [-k]
#   -n OPS      fsx operations per configuration (default 1000000)
#   -p PER_RUN  operations per fsx process (default 50000): fsx-rs 0.3.2 never unmaps the
#               mapping of a mapread, so one process cannot do a million operations (the
#               kernel's vm.max_map_count, 65530, ends it, and every truncate walks all the
#               mappings, so it slows down as it goes); run k of a configuration uses seed
#               SEED+k, on the same file
#   -s SEED     fsx seed (default: a random one, printed; give it again to replay)
#   -c CONFIGS  comma-separated, in order (default default,off,nowriteback,snapshots)
#   -b BKFS     the bkfs binary (default: target/release/bkfs, else target/debug/bkfs,
#               else bkfs on PATH; build one first with cargo build [--release])
#   -m MIB      size of the large file of the snapshots configuration (default 128)
#   -o OPTS     mount options added to every configuration (for example dev,suid)
#   -k          keep every scratch folder (source, store, daemon log, fsx log), not only
#               those of failed runs
#
# Needs root and /dev/fuse; installs fsx if missing (tools/install-conformance-tools.sh).
# A million operations take about 10-20 minutes per configuration on the project's 2-core
# machine (fsx's fsyncs dominate). Prints one line per configuration and exits 1 if any
# failed; a failed run's folder (named in its line) keeps fsx's log, its .fsxgood file, the
# bad file and the daemon's log. Every mount and background loop is stopped on exit, Ctrl-C
# included.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

ops=1000000
per_run=50000
seed=
configs=default,off,nowriteback,snapshots
bkfs=
big_mib=128
extra=
keep=false
while getopts "n:p:s:c:b:m:o:kh" opt; do
    case $opt in
    n) ops=$OPTARG ;;
    p) per_run=$OPTARG ;;
    s) seed=$OPTARG ;;
    c) configs=$OPTARG ;;
    b) bkfs=$OPTARG ;;
    m) big_mib=$OPTARG ;;
    o) extra=$OPTARG ;;
    k) keep=true ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: needs root (it mounts filesystems)" >&2
    exit 1
fi
[ -c /dev/fuse ] || { echo "$0: /dev/fuse is missing" >&2; exit 1; }
if [ -z "$bkfs" ]; then
    for b in target/release/bkfs target/debug/bkfs "$(command -v bkfs || true)"; do
        if [ -n "$b" ] && [ -x "$b" ]; then bkfs=$b; break; fi
    done
fi
[ -n "$bkfs" ] && [ -x "$bkfs" ] || { echo "$0: no bkfs binary: cargo build --release, or -b" >&2; exit 1; }
bkfs=$(realpath "$bkfs")
bash tools/install-conformance-tools.sh
fsx=${CARGO_HOME:-$HOME/.cargo}/bin/fsx
conf=$repo/tests/conformance/fsx.toml
[ -n "$seed" ] || seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')

echo "bkfs: $bkfs"
echo "fsx: $("$fsx" --version), $ops operations per configuration in runs of $per_run" \
    "(seeds $seed, $((seed + 1)), ...), $conf"

# What is running now, for the cleanup: the daemon, the load loops, the mount point.
daemon=
loops=()
mnt=
dir=

stop_loops() {
    local p
    # Each loop, stopped first so it starts nothing new, then its dd or echo, then itself.
    for p in "${loops[@]}"; do
        kill -STOP "$p" 2>/dev/null || true
        pkill -TERM -P "$p" 2>/dev/null || true
        kill -TERM "$p" 2>/dev/null || true
        kill -CONT "$p" 2>/dev/null || true
    done
    for p in "${loops[@]}"; do wait "$p" 2>/dev/null || true; done
    loops=()
}

unmount() {
    if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt"
    fi
    if [ -n "$daemon" ]; then
        local i
        for i in $(seq 1 300); do
            kill -0 "$daemon" 2>/dev/null || break
            sleep 0.1
        done
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    daemon=
    mnt=
}

cleanup() {
    stop_loops
    unmount
    # An interrupted run leaves nothing behind (a failed one is kept, and named).
    if [ -n "$dir" ] && ! $keep; then rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The snapshot load: requests every 0.5 s, and the large file rewritten in 4 MiB pieces at
# 64 MiB/s, in turn from two pattern files (so the store dedups the rewrites).
start_load() { # DIR
    local dir=$1
    (
        i=1
        while :; do
            if err=$({ echo "soak-$i" >"$mnt/.control/snapshot"; } 2>&1); then
                echo taken >>"$dir/requests"
                i=$((i + 1))
            elif [[ $err == *"busy"* ]]; then
                echo busy >>"$dir/requests"
            else
                echo "error: $err" >>"$dir/requests"
            fi
            sleep 0.5
        done
    ) &
    loops+=($!)
    (
        pass=0
        while :; do
            pattern=$dir/pattern$((pass % 2))
            for ((k = 0; k < big_mib; k += 4)); do
                dd if="$pattern" of="$mnt/load/big" bs=1M count=4 skip=$k seek=$k \
                    conv=notrunc status=none 2>>"$dir/rewrite-errors" || true
                sleep 0.0625
            done
            pass=$((pass + 1))
            echo "$pass" >"$dir/passes"
        done
    ) &
    loops+=($!)
}

failed=0
summary=()
IFS=, read -ra list <<<"$configs"
for config in "${list[@]}"; do
    case $config in
    default | snapshots) opts= ;;
    off) opts=snapshots=off ;;
    nowriteback) opts=nowriteback ;;
    *) echo "$0: unknown configuration $config" >&2; exit 2 ;;
    esac
    if [ -n "$extra" ]; then opts=${opts:+$opts,}$extra; fi
    dir=$(mktemp -d "/tmp/bkfs-soak-$config-XXXXXX")
    mkdir "$dir/src" "$dir/mnt" "$dir/fsx"
    if [ "$config" = snapshots ]; then
        head -c $((big_mib << 20)) /dev/urandom >"$dir/pattern0"
        head -c $((big_mib << 20)) /dev/urandom >"$dir/pattern1"
        mkdir "$dir/src/load"
        cp "$dir/pattern1" "$dir/src/load/big"
    fi
    mnt=$dir/mnt
    BKFS_LOG=${BKFS_LOG:-warn} "$bkfs" mount "$dir/src" "$mnt" --foreground ${opts:+-o "$opts"} \
        </dev/null >/dev/null 2>"$dir/daemon.log" &
    daemon=$!
    for i in $(seq 1 200); do
        mountpoint -q "$mnt" && break
        kill -0 "$daemon" 2>/dev/null || break
        sleep 0.1
    done
    if ! mountpoint -q "$mnt"; then
        echo "$config: the mount did not come up; see $dir/daemon.log" >&2
        tail -5 "$dir/daemon.log" >&2
        unmount
        dir=
        exit 1
    fi
    if [ "$config" = snapshots ]; then start_load "$dir"; fi
    echo "== $config (-o ${opts:-defaults}): fsx -f $conf -N $per_run -S $seed+k $mnt/fsx.file"
    t0=$EPOCHREALTIME
    done_ops=0
    run=0
    rc=0
    while [ "$done_ops" -lt "$ops" ]; do
        n=$((ops - done_ops < per_run ? ops - done_ops : per_run))
        s=$((seed + run))
        "$fsx" -f "$conf" -N "$n" -S "$s" -P "$dir/fsx" "$mnt/fsx.file" >"$dir/fsx/fsx.log" 2>&1 ||
            rc=$?
        if [ "$rc" -ne 0 ] || ! grep -q "All operations completed A-OK" "$dir/fsx/fsx.log"; then
            rc=${rc/#0/1}
            break
        fi
        done_ops=$((done_ops + n))
        run=$((run + 1))
    done
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    line=$(printf '%-10s %8d ops %8.1f s' "$config" "$done_ops" "$secs")
    if [ "$rc" -eq 0 ]; then
        line+="  A-OK"
        ok=true
    else
        line+="  FAILED in run $((run + 1)), after $done_ops operations (fsx exit $rc;"
        line+=" replay: fsx -f $conf -N $n -S $s FILE; $dir)"
        cp "$mnt/fsx.file" "$dir/fsx/fsx.bad" 2>/dev/null || true
        tail -20 "$dir/fsx/fsx.log"
        ok=false
    fi
    if [ "$config" = snapshots ]; then
        stop_loops
        # Wait for the last copy, so that a failure of it shows.
        for i in $(seq 1 3000); do
            state=$(awk -F': ' '$1=="state"{print $2}' "$mnt/.control/snapshot")
            case $state in quiescing | committing | committed | copying) sleep 0.1 ;; *) break ;; esac
        done
        taken=$(grep -c '^taken' "$dir/requests" || true)
        busy=$(grep -c '^busy' "$dir/requests" || true)
        errors=$(grep -c '^error' "$dir/requests" || true)
        line+="; $taken snapshots taken, $busy refused (EBUSY), $errors other errors, last $state"
        line+=", large file rewritten $(cat "$dir/passes" 2>/dev/null || echo 0) times"
        if [ "$errors" -gt 0 ] || [ -s "$dir/rewrite-errors" ] || [ "$state" = failed ]; then
            line+="  LOAD FAILED ($dir)"
            ok=false
        fi
    fi
    unmount
    echo "$line"
    summary+=("$line")
    if $ok; then
        $keep || rm -rf "$dir"
    else
        failed=1
    fi
    dir=
done

echo
echo "fsx soak, seed $seed, $bkfs:"
printf '  %s\n' "${summary[@]}"
exit $failed
