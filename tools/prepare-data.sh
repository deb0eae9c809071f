#!/usr/bin/env bash
# Prepare the benchmark datasets for tools/bench-store.sh.
#
# usage: tools/prepare-data.sh [linux|small|blob|all]    (default: all)
#
# Makes, under ${BKFS_BENCH_DIR:-/var/tmp/bkfs-bench}:
#   linux/            the kernel source tree from Debian's linux-source package
#                     (/usr/src/linux-source-*.tar.xz, the newest one)
#   small/            100,000 synthetic files of 0-16 KiB in 1,000 directories,
#                     deterministic (tools/gen-data.py, fixed seed)
#   extra/added-50M.bin  the semi-compressible 50 MiB file that the benchmark
#                     adds to a dataset before its third backup
#
# Idempotent: a dataset whose stamp file (.NAME.stamp) matches what would be
# built is left alone.  Each dataset is built under NAME.tmp and renamed into
# place, so an interrupted run never leaves a half-built NAME/.  Trees are never
# deleted here except a stale NAME.tmp or an outdated NAME (big deletions make
# file creation on this machine's journal-less ext4 slow for minutes afterwards).
set -euo pipefail

BENCH_DIR=${BKFS_BENCH_DIR:-/var/tmp/bkfs-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
GEN="$HERE/gen-data.py"
SMALL_FILES=${BKFS_BENCH_SMALL_FILES:-100000}   # fewer only to test the scripts
SMALL_SEED=20261122
BLOB_MIB=50
BLOB_SEED=50

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }

log() { printf '%s prepare-data: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# stamp_ok NAME WANT: true when NAME/ exists and its stamp says WANT.
stamp_ok() {
    [[ -d "$BENCH_DIR/$1" && -f "$BENCH_DIR/.$1.stamp" ]] &&
        [[ "$(cat "$BENCH_DIR/.$1.stamp")" == "$2" ]]
}

# install_tree NAME WANT: move NAME.tmp into place as NAME and write the stamp.
install_tree() {
    local name=$1 want=$2
    if [[ -e "$BENCH_DIR/$name" ]]; then
        log "replacing outdated $name/"
        mv "$BENCH_DIR/$name" "$BENCH_DIR/$name.old.$$"
        rm -rf "$BENCH_DIR/$name.old.$$"
    fi
    mv "$BENCH_DIR/$name.tmp" "$BENCH_DIR/$name"
    printf '%s\n' "$want" > "$BENCH_DIR/.$name.stamp"
}

summary() {
    local n b
    n=$(find "$BENCH_DIR/$1" -type f | wc -l)
    b=$(du -sb "$BENCH_DIR/$1" | cut -f1)
    log "$1/: $n files, $b bytes (du -sb)"
}

prepare_linux() {
    local tarball want
    tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$tarball" ]]; then
        echo "prepare-data: no /usr/src/linux-source-*.tar.xz; run: apt-get install linux-source" >&2
        exit 1
    fi
    want="$(basename "$tarball") $(stat -c '%s %Y' "$tarball")"
    if stamp_ok linux "$want"; then
        log "linux/ is up to date ($want)"
        return
    fi
    rm -rf "$BENCH_DIR/linux.tmp"
    mkdir -p "$BENCH_DIR/linux.tmp"
    log "extracting $tarball into linux/ (about a minute)"
    tar -xJf "$tarball" -C "$BENCH_DIR/linux.tmp" --strip-components=1
    install_tree linux "$want"
    summary linux
}

prepare_small() {
    local want="gen-data.py small files=$SMALL_FILES seed=$SMALL_SEED v1"
    if stamp_ok small "$want"; then
        log "small/ is up to date ($want)"
        return
    fi
    rm -rf "$BENCH_DIR/small.tmp"
    log "generating small/ ($SMALL_FILES files)"
    python3 "$GEN" small "$BENCH_DIR/small.tmp" --files "$SMALL_FILES" --seed "$SMALL_SEED"
    install_tree small "$want"
    summary small
}

prepare_blob() {
    local f="$BENCH_DIR/extra/added-50M.bin"
    local want="gen-data.py blob mib=$BLOB_MIB seed=$BLOB_SEED v1"
    if [[ -f "$f" && -f "$BENCH_DIR/.blob.stamp" && "$(cat "$BENCH_DIR/.blob.stamp")" == "$want" ]]; then
        log "extra/added-50M.bin is up to date"
        return
    fi
    mkdir -p "$BENCH_DIR/extra"
    python3 "$GEN" blob "$f" --mib "$BLOB_MIB" --seed "$BLOB_SEED"
    printf '%s\n' "$want" > "$BENCH_DIR/.blob.stamp"
}

main() {
    local what=${1:-all}
    case "$what" in
        -h|--help) usage; exit 0 ;;
        linux|small|blob|all) ;;
        *) usage >&2; exit 2 ;;
    esac
    mkdir -p "$BENCH_DIR"
    case "$what" in
        linux) prepare_linux ;;
        small) prepare_small ;;
        blob) prepare_blob ;;
        all) prepare_blob; prepare_small; prepare_linux ;;
    esac
}

main "$@"
