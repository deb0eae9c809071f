#!/usr/bin/env bash
# Whole-system store benchmark: bkfs against restic and borg, same data, same run.
#
# usage: tools/bench-store.sh [--runs N] [--tools LIST] [--wait-idle PCT] [--keep]
#                             [--clean-between] [--verify] [linux|small|all]
#        tools/bench-store.sh --clean
#
#   linux|small|all  dataset(s) made by tools/prepare-data.sh (default: all)
#   --runs N         repeat the whole sequence N times and report medians (default 3)
#   --tools LIST     comma-separated subset of bkfs,restic,borg (default: all three;
#                    bkfs is dropped with a warning when its binary is missing)
#   --wait-idle PCT  before each timed step, wait (up to 3 min) until the machine is
#                    at least PCT% idle (other engineers compile here); default 0: don't
#   --keep           keep this invocation's stores and restored trees (default: delete
#                    them at the end)
#   --clean-between  delete each run's stores and trees right after the run (when the
#                    disk is short; the next run then starts after a big deletion, which
#                    slows file creation here: a 30 s pause follows it)
#   --clean          only delete what earlier invocations left (work/, trash.*)
#   --verify         after each restore, compare the restored tree with the source
#                    byte for byte (diff -r, untimed; slow on the kernel tree)
#
# Environment: BKFS (default target/release/bkfs), BKFS_BENCH_DIR (default
# /var/tmp/bkfs-bench).
#
# One run of one dataset, each step done for every tool before the next step
# (the tool order rotates from run to run):
#   first     first full backup into a fresh, initialised, empty store
#   nochange  second backup, nothing changed
#   changed   third backup after appending to 5 files, rewriting 16 bytes in the
#             middle of 5 others, and adding one 50 MiB semi-compressible file
#   restore   full restore of the latest (third) snapshot into an empty directory;
#             `cp -a` of the same tree is timed beside it as a reference
#   size      du -sb of the store directory (restic's and borg's local caches are
#             kept outside it and are not counted)
# Each timed step runs under /usr/bin/time (wall seconds, peak RSS, CPU) after a
# `sync` and after re-reading its input (the source tree before a backup or a
# `cp -a`, the store before a restore) so the page cache is warm.  The load
# average is recorded with every figure.  The dataset is put back as it was at
# the end of every run (also on interruption; or at the start of the next
# invocation if the machine died).
#
# Stores and restored trees live under $BKFS_BENCH_DIR/work/DATASET/runN, on the
# same filesystem as the data.  Nothing big is deleted between timed steps: a
# previous invocation's leftovers are renamed aside at the start and deleted, with
# this invocation's own, only at the very end (big deletions slow file creation on
# a journal-less ext4 for minutes).  Results: $BKFS_BENCH_DIR/results/STAMP/.
set -euo pipefail

BENCH_DIR=${BKFS_BENCH_DIR:-/var/tmp/bkfs-bench}
BKFS=${BKFS:-target/release/bkfs}
HERE=$(cd "$(dirname "$0")" && pwd)

RUNS=3
TOOLS=bkfs,restic,borg
KEEP=0
CLEAN_ONLY=0
CLEAN_BETWEEN=0
WAIT_IDLE=0
WAIT_MAX=${BKFS_BENCH_WAIT_MAX:-180}
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
VERIFY=0
DATASETS=()

BORG_COMPRESSION="zstd,3"          # borg's default is lz4; zstd,3 is borg's zstd default level
RESTIC_COMPRESSION="auto"          # restic 0.14 repository v2: auto = zstd (fastest level)
CHANGED_FILES=10
ADDED_NAME="bkfs-bench-added-50M.bin"

usage() { sed -n '4,6p' "$0" | sed 's/^# //'; }
help() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
load1() { cut -d' ' -f1 /proc/loadavg; }

parse_args() {
    while (($#)); do
        case "$1" in
            --runs) RUNS=${2:?--runs needs a number}; shift ;;
            --runs=*) RUNS=${1#*=} ;;
            --tools) TOOLS=${2:?--tools needs a list}; shift ;;
            --tools=*) TOOLS=${1#*=} ;;
            --keep) KEEP=1 ;;
            --verify) VERIFY=1 ;;
            --clean) CLEAN_ONLY=1 ;;
            --clean-between) CLEAN_BETWEEN=1 ;;
            --wait-idle) WAIT_IDLE=${2:?--wait-idle needs a percentage}; shift ;;
            --wait-idle=*) WAIT_IDLE=${1#*=} ;;
            -h|--help) help; exit 0 ;;
            linux|small) DATASETS+=("$1") ;;
            all) DATASETS+=(small linux) ;;
            *) usage >&2; exit 2 ;;
        esac
        shift
    done
    ((${#DATASETS[@]})) || DATASETS=(small linux)
    [[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
    [[ "$WAIT_IDLE" =~ ^[0-9]+$ ]] && ((WAIT_IDLE <= 100)) || die "--wait-idle wants a percentage"
}

# ---------------------------------------------------------------- tools

check_tools() {
    local t ok=()
    IFS=, read -r -a want <<< "$TOOLS"
    for t in "${want[@]}"; do
        case "$t" in
            bkfs)
                if [[ -x "$BKFS" ]]; then
                    BKFS=$(cd "$(dirname "$BKFS")" && pwd)/$(basename "$BKFS")
                    ok+=(bkfs)
                else
                    log "WARNING: no bkfs binary at $BKFS (set BKFS=...); measuring without bkfs"
                fi ;;
            restic|borg)
                command -v "$t" > /dev/null || die "$t is not installed (apt-get install restic borgbackup)"
                ok+=("$t") ;;
            *) die "unknown tool $t (bkfs, restic, borg)" ;;
        esac
    done
    ((${#ok[@]})) || die "no tool left to measure"
    TOOL_LIST=("${ok[@]}")
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
}

versions() {
    local t
    for t in "${TOOL_LIST[@]}"; do
        case "$t" in
            bkfs)
                local rev
                rev=$(git -C "$(dirname "$BKFS_SOURCE")" log -1 --format='%h %cd' --date=short 2>/dev/null || true)
                echo "bkfs: $BKFS_SOURCE (${rev:+HEAD $rev, }built $(date -u -r "$BKFS_SOURCE" "+%Y-%m-%d %H:%M UTC"))" ;;
            restic) echo "restic: $(restic version | head -n 1); repository v2, --compression $RESTIC_COMPRESSION (zstd), always encrypted" ;;
            borg) echo "borg: $(borg --version); init -e none, --compression $BORG_COMPRESSION, default chunker" ;;
        esac
    done
}

# Per-tool commands.  $1 = run dir; the store of tool T is $1/T.store.
tool_init() {
    local t=$1 run=$2
    case "$t" in
        bkfs) "$BKFS" init --store "$run/bkfs.store" ;;
        restic) restic -q -r "$run/restic.store" init --repository-version 2 ;;
        borg) borg init -e none "$run/borg.store" ;;
    esac
}

tool_backup() {  # tool run dir snapshot-name
    local t=$1 run=$2 src=$3 name=$4
    case "$t" in
        bkfs) "$BKFS" backup "$src" --store "$run/bkfs.store" --name "$name" --no-progress ;;
        restic) cd "$src" && restic -r "$run/restic.store" backup --compression "$RESTIC_COMPRESSION" . ;;
        borg) cd "$src" && borg create --stats --compression "$BORG_COMPRESSION" "$run/borg.store::$name" . ;;
    esac
}

tool_restore() {  # tool run dest last-snapshot-name
    local t=$1 run=$2 dest=$3 name=$4
    case "$t" in
        bkfs) "$BKFS" restore latest "$dest" --store "$run/bkfs.store" ;;
        restic) restic -r "$run/restic.store" restore latest --target "$dest" ;;
        borg) cd "$dest" && borg extract "$run/borg.store::$name" ;;
    esac
}

# ---------------------------------------------------------------- measuring

# warm DIR: read every file of DIR so the page cache holds it.
warm() { tar -C "$1" -cf - . | cat > /dev/null; }

# timed DATASET RUN TOOL STEP WARMDIR CMD...: sync, wait for an idle machine if
# asked, re-read WARMDIR, then run CMD (in a child bash) under /usr/bin/time, log
# its output, append wall/rss/cpu/load/others to the results.  Fails when CMD fails.
timed() {
    local ds=$1 run=$2 tool=$3 step=$4 warmdir=$5; shift 5
    local tf="$LOGS/$ds.$run.$tool.$step.time" out="$LOGS/$ds.$run.$tool.$step.log"
    local l rc=0 busy0 busy1
    sync
    wait_idle
    warm "$warmdir"      # last, so that no wait lets the page cache go cold
    l=$(load1)
    busy0=$(busy_ticks)
    /usr/bin/time -f '%e %M %U %S' -o "$tf" bash -c '"$@"' _ "$@" > "$out" 2>&1 || rc=$?
    busy1=$(busy_ticks)
    if ((rc != 0)); then
        log "FAILED: $tool $step on $ds (exit $rc), see $out"
        tail -n 5 "$out" | sed 's/^/    /' >&2
        printf '%s\t%s\t%s\t%s\tfail\t%s\t%s\n' "$ds" "$run" "$tool" "$step" "$rc" "$l" >> "$RESULTS"
        return 1
    fi
    local wall rss user sys
    read -r wall rss user sys < <(tail -n 1 "$tf")
    printf '%s\t%s\t%s\t%s\ttime\t%s\t%s\n' "$ds" "$run" "$tool" "$step" "$wall" "$l" >> "$RESULTS"
    printf '%s\t%s\t%s\t%s\trss_kib\t%s\t%s\n' "$ds" "$run" "$tool" "$step" "$rss" "$l" >> "$RESULTS"
    printf '%s\t%s\t%s\t%s\tcpu\t%s\t%s\n' "$ds" "$run" "$tool" "$step" \
        "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" "$l" >> "$RESULTS"
    # CPU that other processes took during the step, in % of the whole machine
    local others
    others=$(awk -v b="$((busy1 - busy0))" -v hz="$HZ" -v n="$NCPU" -v u="$user" -v s="$sys" -v w="$wall" \
        'BEGIN { o = (b / hz - u - s) / (n * (w > 0.01 ? w : 0.01)) * 100; printf "%.0f", o < 0 ? 0 : o }')
    printf '%s\t%s\t%s\t%s\tothers_pct\t%s\t%s\n' "$ds" "$run" "$tool" "$step" "$others" "$l" >> "$RESULTS"
    log "$(printf '%-6s %-8s %-6s %7ss  %6d MiB  load %-5s others %3s%%' "$ds" "$step" "$tool" "$wall" $((rss / 1024)) "$l" "$others")"
}

# busy_ticks: CPU ticks spent busy (user, nice, system, irq, softirq, steal), all CPUs.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# wait_idle: with --wait-idle PCT, wait (at most WAIT_MAX s) until the machine
# has been at least PCT% idle over 2 s, so that other work disturbs less.
wait_idle() {
    ((WAIT_IDLE > 0)) || return 0
    local t0=$SECONDS b0 idle
    while :; do
        b0=$(busy_ticks); sleep 2
        idle=$(( 100 - ($(busy_ticks) - b0) * 100 / (2 * HZ * NCPU) ))
        ((idle < 0)) && idle=0
        if ((idle >= WAIT_IDLE)); then
            ((SECONDS - t0 > 3)) && log "waited $((SECONDS - t0)) s for the machine to be ${WAIT_IDLE}% idle"
            return 0
        fi
        if ((SECONDS - t0 >= WAIT_MAX)); then
            log "machine still only ${idle}% idle after ${WAIT_MAX} s; measuring anyway"
            return 0
        fi
    done
}

record() {  # dataset run tool metric value
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" size "$4" "$5" "$(load1)" >> "$RESULTS"
}

# tree_sig DIR: entry counts by type and the total bytes of regular files.
tree_sig() {
    (cd "$1" && find . -mindepth 1 ! -name . -printf '%y %s\n' |
        awk '{ n[$1]++; if ($1 == "f") b += $2 } END { printf "f=%d d=%d l=%d bytes=%d", n["f"], n["d"], n["l"], b }')
}

check_restore() {  # tool src dest
    local want got
    want=$(tree_sig "$2"); got=$(tree_sig "$3")
    if [[ "$want" != "$got" ]]; then
        log "WARNING: $1 restore differs from the source: want $want, got $got"
    fi
    if ((VERIFY)) && ! diff -rq --no-dereference "$2" "$3" > "$LOGS/verify.$1.txt" 2>&1; then
        log "WARNING: $1 restore content differs, see $LOGS/verify.$1.txt"
    fi
}

# ---------------------------------------------------------------- changing the data

# The changed files are saved in RUN/orig before the change and copied back
# (with their modes and times) afterwards; RUN is noted in work/.dirty meanwhile.
apply_change() {  # src run
    local src=$1 run=$2 n i=0 f
    mkdir -p "$run/orig"
    find "$src" -type f -size +8k -printf '%P\n' | LC_ALL=C sort > "$run/candidates.txt"
    n=$(wc -l < "$run/candidates.txt")
    awk -v n="$n" -v k="$CHANGED_FILES" 'NR % int(n / k) == 0 && c < k { print; c++ }' \
        "$run/candidates.txt" > "$run/changed.txt"
    printf '%s %s\n' "$src" "$run" > "$BENCH_DIR/work/.dirty"
    while IFS= read -r f; do
        cp -p "$src/$f" "$run/orig/$i"
        if ((i % 2 == 0)); then
            printf 'bkfs-bench: a line appended by the benchmark\n' >> "$src/$f"
        else
            printf 'BKFS-BENCH-EDIT!' |
                dd of="$src/$f" bs=1 seek=$(($(stat -c %s "$src/$f") / 2)) conv=notrunc status=none
        fi
        i=$((i + 1))
    done < "$run/changed.txt"
    cp "$BENCH_DIR/extra/added-50M.bin" "$src/$ADDED_NAME"
}

revert_change() {  # src run
    local src=$1 run=$2 i=0 f
    [[ -f "$run/changed.txt" ]] || return 0
    while IFS= read -r f; do
        [[ -f "$run/orig/$i" ]] && cp -p "$run/orig/$i" "$src/$f"
        i=$((i + 1))
    done < "$run/changed.txt"
    rm -f "$src/$ADDED_NAME"
    rm -f "$BENCH_DIR/work/.dirty"
}

revert_pending() {
    local src run
    if [[ -f "$BENCH_DIR/work/.dirty" ]]; then
        read -r src run < "$BENCH_DIR/work/.dirty"
        log "putting back the files changed by an interrupted run in $src"
        revert_change "$src" "$run"
    fi
}

# remove_tree DIR: delete a big tree.  Each deleted file costs a discard on this
# machine's root filesystem (mounted with discard, no journal); eight rm at a
# time over the subtrees take about a quarter of the time of one rm -rf.
remove_tree() {
    [[ -e "$1" ]] || return 0
    find "$1" -mindepth 5 -maxdepth 5 -type d -print0 | xargs -0 -r -P 8 -n 16 rm -rf
    rm -rf "$1"
}

# clean_leftovers: delete the trees earlier invocations renamed aside.
clean_leftovers() {
    local d
    for d in "$BENCH_DIR"/trash.*; do
        [[ -e "$d" ]] || continue
        log "deleting $d (big trees: a few minutes)"
        remove_tree "$d"
    done
}

# check_space DATASET: stop before a run that would fill the disk (other work
# shares it): a run writes one restored tree per tool plus cp -a's, and the stores.
check_space() {
    local bytes need avail
    bytes=$(du -sb "$BENCH_DIR/$1" | cut -f1)
    need=$(( bytes * (${#TOOL_LIST[@]} + 1) * 12 / 10 + bytes + (1 << 30) ))
    avail=$(( $(df -P -k "$BENCH_DIR" | awk 'NR == 2 { print $4 }') * 1024 ))
    if ((avail < need)); then
        die "a run of $1 needs about $((need >> 30)) GiB free and only $((avail >> 30)) GiB is: free space, or use --clean-between"
    fi
}

# ---------------------------------------------------------------- one run

one_run() {  # dataset run-number
    local ds=$1 r=$2 src="$BENCH_DIR/$1" run="$BENCH_DIR/work/$1/run$2"
    local order=() t i k failed=()
    mkdir -p "$run"
    export RESTIC_PASSWORD=bkfs-bench RESTIC_CACHE_DIR="$run/restic-cache"
    export BORG_BASE_DIR="$run/borg-home" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
    # rotate the tool order from run to run
    for ((i = 0; i < ${#TOOL_LIST[@]}; i++)); do
        order+=("${TOOL_LIST[$(((i + r - 1) % ${#TOOL_LIST[@]}))]}")
    done
    log "== $ds run $r: ${order[*]} =="
    for t in "${order[@]}"; do
        tool_init "$t" "$run" > "$LOGS/$ds.$r.$t.init.log" 2>&1 ||
            { log "FAILED: $t init, see $LOGS/$ds.$r.$t.init.log"; failed+=("$t"); }
    done
    is_failed() { local x; for x in "${failed[@]}"; do [[ "$x" == "$1" ]] && return 0; done; return 1; }

    local steps=(first nochange changed) names=(b1 b2 b3)
    for k in 0 1 2; do
        if ((k == 2)); then
            apply_change "$src" "$run"
            trap 'revert_change "'"$src"'" "'"$run"'"' EXIT
        fi
        for t in "${order[@]}"; do
            is_failed "$t" && continue
            timed "$ds" "$r" "$t" "${steps[$k]}" "$src" tool_backup "$t" "$run" "$src" "${names[$k]}" ||
                failed+=("$t")
        done
    done

    for t in "${order[@]}"; do
        is_failed "$t" && continue
        mkdir -p "$run/restore-$t"
        if timed "$ds" "$r" "$t" restore "$run/$t.store" tool_restore "$t" "$run" "$run/restore-$t" b3; then
            check_restore "$t" "$src" "$run/restore-$t"
        fi
        record "$ds" "$r" "$t" repo_bytes "$(du -sb "$run/$t.store" | cut -f1)"
    done
    timed "$ds" "$r" cp restore "$src" cp -a "$src" "$run/restore-cp" && check_restore cp "$src" "$run/restore-cp"

    revert_change "$src" "$run"
    trap - EXIT
    if ((CLEAN_BETWEEN)); then
        log "--clean-between: deleting run $r's stores and trees, then 30 s for the disk to settle"
        mv "$run" "$BENCH_DIR/trash.$$.$ds.$r"
        remove_tree "$BENCH_DIR/trash.$$.$ds.$r"
        sync
        sleep 30
    fi
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
    if ((CLEAN_ONLY)); then
        revert_pending
        [[ -d "$BENCH_DIR/work" ]] && mv "$BENCH_DIR/work" "$BENCH_DIR/trash.$$.work"
        clean_leftovers
        exit 0
    fi
    check_tools
    # timed() runs the tool functions in a child bash under /usr/bin/time
    export -f tool_backup tool_restore
    export BKFS RESTIC_COMPRESSION BORG_COMPRESSION
    trap 'exit 130' INT TERM
    local ds r stamp
    for ds in "${DATASETS[@]}"; do
        [[ -d "$BENCH_DIR/$ds" ]] || die "no $BENCH_DIR/$ds: run tools/prepare-data.sh first"
    done
    [[ -f "$BENCH_DIR/extra/added-50M.bin" ]] || die "no extra/added-50M.bin: run tools/prepare-data.sh first"

    mkdir -p "$BENCH_DIR/work"
    revert_pending
    TRASH="$BENCH_DIR/trash.$$"
    if [[ -n "$(ls -A "$BENCH_DIR/work")" ]]; then
        log "renaming the previous invocation's work/ aside; it is deleted at the end"
        mv "$BENCH_DIR/work" "$TRASH"
        mkdir -p "$BENCH_DIR/work"
    fi

    # a private copy of bkfs, so that a rebuild during the run cannot swap it
    if [[ " ${TOOL_LIST[*]} " == *" bkfs "* ]]; then
        cp "$BKFS" "$BENCH_DIR/work/bkfs"
        BKFS_SOURCE=$BKFS
        BKFS="$BENCH_DIR/work/bkfs"
    fi

    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    OUT="$BENCH_DIR/results/$stamp"
    LOGS="$OUT/logs"
    RESULTS="$OUT/results.tsv"
    mkdir -p "$LOGS"
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, Linux $(uname -r), $(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 }') on $(df "$BENCH_DIR" | awk 'NR == 2 { print $1 }')"
        echo "command: tools/bench-store.sh $*"
        echo "runs: $RUNS (medians)"
        versions
        for ds in "${DATASETS[@]}"; do
            echo "dataset $ds: $(tree_sig "$BENCH_DIR/$ds")"
        done
        echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    } > "$OUT/header.txt"
    cat "$OUT/header.txt" >&2

    for ds in "${DATASETS[@]}"; do
        for ((r = 1; r <= RUNS; r++)); do
            check_space "$ds"
            one_run "$ds" "$r"
        done
    done
    echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/header.txt"

    python3 "$HERE/bench-table.py" "$OUT" | tee "$OUT/table.txt"

    if ((KEEP == 0)); then
        mv "$BENCH_DIR/work" "$BENCH_DIR/trash.$$.work"
        clean_leftovers
    fi
    log "results in $OUT (table.txt, table.md, results.tsv, logs/)"
}

main "$@"
