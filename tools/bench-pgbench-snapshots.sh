#!/usr/bin/env bash
# Application-consistent snapshots of PostgreSQL under pgbench, through a bkfs mount:
# the cluster's data directory lives on the mount, a profile quiesces it with the postgresql
# plug-in, and a snapshot is taken every few seconds while pgbench writes. For each snapshot:
# the frozen window (first plug-in frozen to last thawed) and the barrier, from
# .control/snapshot; then the snapshot is restored, started as a second server, and checked
# with pg_amcheck. Prints one line per snapshot and a summary (medians, maxima, restored
# snapshots that started and passed).
#
#   tools/bench-pgbench-snapshots.sh [-n SNAPSHOTS] [-c CLIENTS] [-m MODE] [-i SECONDS]
#
#   -n SNAPSHOTS  how many snapshots (default 10)
#   -c CLIENTS    pgbench clients (default 8)
#   -m MODE       checkpoint | backup_api (default checkpoint)
#   -i SECONDS    between snapshots (default 3)
# Needs root, /dev/fuse, postgresql (tools/packages-bench.txt). Uses target/release/bkfs (built
# if missing; BKFS=path overrides). Targets (issue 5): frozen window < 1 s, barrier < 10 ms,
# every restored snapshot starts and passes pg_amcheck.
set -euo pipefail

N=10
CLIENTS=8
MODE=checkpoint
INTERVAL=3
while getopts "n:c:m:i:" o; do
    case $o in
        n) N=$OPTARG ;;
        c) CLIENTS=$OPTARG ;;
        m) MODE=$OPTARG ;;
        i) INTERVAL=$OPTARG ;;
        *) sed -n '2,18p' "$0"; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BKFS=${BKFS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/bkfs}
[ -x "$BKFS" ] || (cd "$ROOT" && cargo build --release --bin bkfs)
PGBIN=$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "$0: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/bkfs-pgbench.XXXXXX)
SRC=$WORK/src
MNT=$WORK/mnt
PROF=$WORK/profile
SOCK=$WORK/sock
mkdir -p "$SRC" "$MNT" "$PROF" "$SOCK" "$WORK/restore"
chmod 755 "$WORK" "$PROF"
chown postgres: "$SOCK"
PORT=$((20000 + RANDOM % 20000))
RPORT=$((PORT + 1))
pg() { runuser -u postgres -- "$@"; }
BENCH=
cleanup() {
    [ -n "$BENCH" ] && kill "$BENCH" 2>/dev/null || true
    pg "$PGBIN/pg_ctl" -D "$MNT/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    pg "$PGBIN/pg_ctl" -D "$WORK/restore/pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

CONN="host=$SOCK port=$PORT dbname=postgres user=postgres"
cat > "$PROF/profile.toml" <<EOT
require = "app"

[[app]]
name = "db"
plugin = "postgresql"
mode = "$MODE"
user = "postgres"
connect = "$CONN"
psql = "$PGBIN/psql"
EOT
chmod 644 "$PROF/profile.toml"

"$BKFS" mount "$SRC" "$MNT" -o "profile=$PROF/profile.toml"
mkdir "$MNT/pgdata"
chown postgres: "$MNT/pgdata"
pg "$PGBIN/initdb" -A trust -U postgres -D "$MNT/pgdata" >/dev/null
pg "$PGBIN/pg_ctl" -D "$MNT/pgdata" -l "$SOCK/pg.log" -w \
    -o "-p $PORT -k $SOCK -c listen_addresses=''" start >/dev/null
pg "$PGBIN/pgbench" -q -i -s 10 "$CONN" >/dev/null 2>&1
pg "$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T 100000 "$CONN" >/dev/null 2>&1 &
BENCH=$!
sleep 2

field() { sed -n "s/^$1: //p" "$MNT/.control/snapshot" | head -1; }
wait_sealed() {
    while :; do
        case $(field state) in
            sealed) return 0 ;;
            failed|interrupted) return 1 ;;
        esac
        sleep 0.05
    done
}

: > "$WORK/frozen"; : > "$WORK/barrier"
ok=0
for i in $(seq "$N"); do
    name=pg$i
    if ! echo "$name" > "$MNT/.control/snapshot"; then
        echo "$name: refused: $(field error)"
        continue
    fi
    frozen=$(field frozen_ms); barrier=$(field barrier_ms); cons=$(field consistency)
    echo "$frozen" >> "$WORK/frozen"; echo "$barrier" >> "$WORK/barrier"
    wait_sealed || { echo "$name: copy failed: $(field error)"; continue; }
    secs=$(field seconds)
    # Restore, start as a second server, check.
    rm -rf "$WORK/restore/pgdata"
    "$BKFS" restore "$name:pgdata" "$WORK/restore/pgdata" --store "$SRC/.bkfs" >/dev/null
    rm -f "$WORK/restore/pgdata/postmaster.pid"
    verdict=FAILED
    if pg "$PGBIN/pg_ctl" -D "$WORK/restore/pgdata" -l "$SOCK/restore.log" -w -t 120 \
        -o "-p $RPORT -k $SOCK -c listen_addresses=''" start >/dev/null 2>&1; then
        if pg "$PGBIN/pg_amcheck" -h "$SOCK" -p "$RPORT" -U postgres --all --install-missing --heapallindexed \
            >"$WORK/amcheck.log" 2>&1; then
            rows=$(pg "$PGBIN/psql" -h "$SOCK" -p "$RPORT" -U postgres -Atc \
                "select count(*) from pgbench_accounts" postgres)
            [ "$rows" = 1000000 ] && verdict=passed
        fi
        pg "$PGBIN/pg_ctl" -D "$WORK/restore/pgdata" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [ "$verdict" = passed ] && ok=$((ok + 1))
    printf '%s: %s, frozen %s ms, barrier %s ms, copy %s s, restored: started and pg_amcheck %s\n' \
        "$name" "$cons" "$frozen" "$barrier" "$secs" "$verdict"
    sleep "$INTERVAL"
done

med() { sort -n "$1" | awk '{v[NR]=$1} END {printf "median %.1f ms, max %.1f ms", v[int((NR+1)/2)], v[NR]}'; }
echo
echo "PostgreSQL under pgbench -c $CLIENTS, mode $MODE, $N snapshots through a bkfs mount:"
echo "  frozen window: $(med "$WORK/frozen")   (target < 1000 ms)"
echo "  barrier:       $(med "$WORK/barrier")   (target < 10 ms)"
echo "  restored snapshots that started and passed pg_amcheck: $ok/$N"
