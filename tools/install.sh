#!/usr/bin/env bash
# Build bkfs in release mode and install it: the binary to /usr/local/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
install -m 0755 target/release/bkfs /usr/local/bin/bkfs
echo "installed /usr/local/bin/bkfs"
