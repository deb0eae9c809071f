#!/usr/bin/env bash
# Run bkfs's test suite: installs what the tests need (Debian packages, as
# root), then `cargo test` with the `failpoints` feature (the crash and fault
# tests arm failpoints of src/os/fail.rs in the bkfs they run; a release build
# has none). Tests mount FUSE filesystems, so they need root and /dev/fuse;
# with CI=true a missing /dev/fuse fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test.sh: the tests need root (they mount filesystems and set owners)" >&2
    exit 1
fi

# Packages the tests use, one per line, in .ci/packages.txt.
mapfile -t wanted < <(cat .ci/packages.txt | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
missing=()
for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pjdfstest, fsx and pjdfstest's dummy users, for tests/conformance.
bash tools/install-conformance-tools.sh

if [ ! -c /dev/fuse ]; then
    if [ "${CI:-}" = true ]; then
        echo "tools/test.sh: /dev/fuse is missing; CI requires it" >&2
        exit 1
    fi
    echo "tools/test.sh: warning: /dev/fuse is missing; mount tests will skip" >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets --features failpoints --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
