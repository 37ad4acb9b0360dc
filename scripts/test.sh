#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and all tests on SQLite and PostgreSQL (+ Redis).
# Installs what is missing (redis-server, PostgreSQL 15, Chromium, ChromaDB, moto, the contract
# tools) when it can; the tests start their own throwaway servers (and browsers) on free loopback
# ports, so nothing needs to be running beforehand.
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
# Headless Chromium and its WebDriver for the console's browser tests (tests/console).
if ! command -v promtool >/dev/null; then
  echo "==> installing promtool (Debian's prometheus package) for the alert rule checks"
  apt_install prometheus
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "==> installing Chromium and chromedriver"
  apt_install chromium chromium-driver
fi

# ChromaDB for the knowledge::chroma tests, from PyPI into its own virtualenv (kept between runs;
# a global pip install would upgrade dozens of the machine's Python packages). The tests look for
# CHROMA_BIN, then `chroma` on PATH, then this virtualenv.
CHROMADB_VERSION=1.5.9
chroma_works() { "$1" run --help >/dev/null 2>&1; }
if [ -z "${CHROMA_BIN:-}" ] && ! { command -v chroma >/dev/null && chroma_works chroma; }; then
  chroma_venv="$HOME/.cache/docket/chromadb-$CHROMADB_VERSION"
  if ! chroma_works "$chroma_venv/bin/chroma"; then
    echo "==> installing ChromaDB $CHROMADB_VERSION"
    rm -rf "$chroma_venv"
    if ! { python3 -m venv "$chroma_venv" &&
      "$chroma_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore "chromadb==$CHROMADB_VERSION" &&
      chroma_works "$chroma_venv/bin/chroma"; }; then
      rm -rf "$chroma_venv"
      case "${CI:-}" in
        "" | 0 | false) echo "scripts/test.sh: could not install ChromaDB; its tests will skip" >&2 ;;
        *) echo "scripts/test.sh: could not install ChromaDB" >&2; exit 1 ;;
      esac
    fi
  fi
  if [ -x "$chroma_venv/bin/chroma" ]; then export CHROMA_BIN="$chroma_venv/bin/chroma"; fi
fi

# moto for the objects S3 test (an S3-compatible server), likewise in its own virtualenv. The test
# looks for MOTO_SERVER_BIN, then `moto_server` on PATH, then this virtualenv.
MOTO_VERSION=5.2.5
moto_works() { "$1" --help >/dev/null 2>&1; }
if [ -z "${MOTO_SERVER_BIN:-}" ] && ! { command -v moto_server >/dev/null && moto_works moto_server; }; then
  moto_venv="$HOME/.cache/docket/moto-$MOTO_VERSION"
  if ! moto_works "$moto_venv/bin/moto_server"; then
    echo "==> installing moto $MOTO_VERSION"
    rm -rf "$moto_venv"
    if ! { python3 -m venv "$moto_venv" &&
      "$moto_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore "moto[server]==$MOTO_VERSION" &&
      moto_works "$moto_venv/bin/moto_server"; }; then
      rm -rf "$moto_venv"
      case "${CI:-}" in
        "" | 0 | false) echo "scripts/test.sh: could not install moto; its test will skip" >&2 ;;
        *) echo "scripts/test.sh: could not install moto" >&2; exit 1 ;;
      esac
    fi
  fi
  if [ -x "$moto_venv/bin/moto_server" ]; then export MOTO_SERVER_BIN="$moto_venv/bin/moto_server"; fi
fi

# The contract tests' independent tools (an OpenAPI validator, a client generator, python-dateutil
# for the schedule differential test), pinned in tests/contract/requirements.txt, in a virtualenv
# named after that file's hash. The tests look for CONTRACT_TOOLS, then this virtualenv.
contract_hash=$(sha256sum tests/contract/requirements.txt | cut -c1-12)
contract_venv="$HOME/.cache/docket/contract-tools-$contract_hash"
if [ -z "${CONTRACT_TOOLS:-}" ] && [ ! -x "$contract_venv/bin/openapi-python-client" ]; then
  echo "==> installing the contract tools"
  rm -rf "$contract_venv"
  if ! { python3 -m venv "$contract_venv" &&
    "$contract_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --root-user-action=ignore -r tests/contract/requirements.txt; }; then
    rm -rf "$contract_venv"
    case "${CI:-}" in
      "" | 0 | false) echo "scripts/test.sh: could not install the contract tools; their tests will skip" >&2 ;;
      *) echo "scripts/test.sh: could not install the contract tools" >&2; exit 1 ;;
    esac
  fi
fi
if [ -z "${CONTRACT_TOOLS:-}" ] && [ -x "$contract_venv/bin/openapi-python-client" ]; then
  export CONTRACT_TOOLS="$contract_venv"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
# The crates split out of docket must keep their modules free of import cycles (docket itself
# still has them; issue 20 removes them as it splits the rest).
echo "==> module import cycles"
python3 scripts/check_module_cycles.py crates/*/
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> fuzz targets compile"
cargo check --manifest-path fuzz/Cargo.toml --bins --locked
echo "==> cargo test"
cargo test --workspace --locked "$@"
