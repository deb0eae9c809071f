#!/usr/bin/env bash
# Installs what the conformance tests (tests/conformance, docs/CONFORMANCE.md) and
# tools/soak-fsx.sh need, as root; idempotent and quiet when all is there already:
#   - pjdfstest and fsx from crates.io, pinned, with their own Cargo.lock (`cargo install
#     --locked`), into ${CARGO_HOME:-~/.cargo}/bin; skipped when that version is installed;
#   - the dummy users pjdfstest switches to, `tests` and `pjdfstest`, each with a group of its
#     own name (tests/conformance/pjdfstest.toml names them).
# tools/test.sh runs it; the test target reads the versions from here.
set -euo pipefail

PJDFSTEST_VERSION=0.2.2
FSX_VERSION=0.3.2

if [ "$(id -u)" -ne 0 ]; then
    echo "$0: needs root (it adds users)" >&2
    exit 1
fi

bindir="${CARGO_HOME:-$HOME/.cargo}/bin"
install_crate() { # NAME VERSION
    local have
    have=$("$bindir/$1" --version 2>/dev/null || true)
    if [ "$have" != "$1 $2" ]; then
        echo "installing $1 $2 (cargo install --locked)"
        cargo install --quiet --locked "$1" --version "$2"
    fi
}
install_crate pjdfstest "$PJDFSTEST_VERSION"
install_crate fsx "$FSX_VERSION"

for u in tests pjdfstest; do
    getent group "$u" >/dev/null || groupadd --system "$u"
    if ! id -u "$u" >/dev/null 2>&1; then
        useradd --system --gid "$u" --no-create-home --home-dir / \
            --shell /usr/sbin/nologin --comment "pjdfstest dummy user" "$u"
    fi
    if [ "$(id -gn "$u")" != "$u" ]; then
        echo "$0: user $u exists, but its primary group is $(id -gn "$u"), not $u (pjdfstest needs $u:$u)" >&2
        exit 1
    fi
done
