#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and all tests on SQLite and PostgreSQL (+ Redis).
# Installs what is missing (redis-server, PostgreSQL 15) when it can; the tests start their own
# throwaway servers on free loopback ports, so nothing needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests fail instead of skipping when a server they need is missing.
export CI="${CI:-true}"
# Build outside the checkout so a fresh clone on the same machine reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/docket/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "scripts/test.sh: need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_postgres() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN:-}" ]
}

if ! command -v redis-server >/dev/null; then
  echo "==> installing redis-server"
  apt_install redis-server
fi
if ! have_postgres; then
  echo "==> installing PostgreSQL"
  apt_install postgresql
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --locked "$@"
