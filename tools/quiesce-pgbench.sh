#!/usr/bin/env bash
# Frozen window of the postgresql plug-in under pgbench, without a mount:
# starts a throwaway PostgreSQL cluster, runs pgbench against it, and runs
# `bkfs quiesce --dry-run` ROUNDS times in each mode (checkpoint, backup_api),
# printing each run's frozen window (first freeze started to last thaw ended)
# and per-phase timings, then the median and maximum per mode.
#
#   tools/quiesce-pgbench.sh [ROUNDS] [CLIENTS]     (root; default 10 rounds, 8 clients)
#
# The snapshot's own window adds the write barrier (measured by the mount).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-10}
clients=${2:-8}
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (the cluster runs as postgres)" >&2; exit 1; }
bin=$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "$0: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }
bkfs=${BKFS_BIN:-${CARGO_TARGET_DIR:-target}/debug/bkfs}
[ -x "$bkfs" ] || cargo build -q
command -v jq >/dev/null || { echo "$0: needs jq" >&2; exit 1; }

dir=$(mktemp -d)
prof=$(mktemp -d)   # root's, as a profile's directory must be
chmod 755 "$dir" "$prof"
chown postgres: "$dir"
port=$((20000 + RANDOM % 20000))
pg() { runuser -u postgres -- "$@"; }
cleanup() {
    if [ -n "${bench:-}" ]; then kill "$bench" 2>/dev/null || true; fi
    pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" "$prof"
}
trap cleanup EXIT

pg "$bin/initdb" -A trust -U postgres -D "$dir/data" >/dev/null
pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=''" start >/dev/null
conn="host=$dir port=$port dbname=postgres user=postgres"
pg "$bin/pgbench" -q -i -s 10 "$conn" >/dev/null 2>&1
pg "$bin/pgbench" -n -c "$clients" -j 2 -T 100000 "$conn" >/dev/null 2>&1 &
bench=$!
sleep 2

for mode in checkpoint backup_api; do
    cat > "$prof/profile.toml" <<EOT
[[app]]
name = "db"
plugin = "postgresql"
mode = "$mode"
user = "postgres"
connect = "$conn"
psql = "$bin/psql"
EOT
    chmod 644 "$prof/profile.toml"
    : > "$prof/$mode.ms"
    for i in $(seq "$rounds"); do
        out=$("$bkfs" quiesce --profile "$prof/profile.toml" --dry-run --json --marker "$prof/frozen.json")
        ms=$(jq -r '.outcome.frozen_ms' <<<"$out")
        echo "$ms" >> "$prof/$mode.ms"
        jq -r --arg m "$mode" --arg i "$i" \
            '"\($m) \($i): frozen \(.outcome.frozen_ms) ms" + (.apps[0] | " (prepare \(.timings_ms.prepare), freeze \(.timings_ms.freeze), thaw \(.timings_ms.thaw) ms), lsn \(.positions.lsn)")' <<<"$out"
        sleep 1
    done
    sort -n "$prof/$mode.ms" | awk -v m="$mode" '{ v[NR] = $1 } END { printf "%s: frozen window median %.1f ms, max %.1f ms over %d runs\n", m, v[int((NR + 1) / 2)], v[NR], NR }'
done
