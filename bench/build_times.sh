#!/usr/bin/env bash
# Build-time figures for a checkout (issue 20 asks for them before and after the workspace split):
# a clean `cargo build`, then `cargo test --workspace --no-run`, then that again after touching one
# console page, one queue file and one policy file. Wipes and uses TARGET_DIR.
#
#   bench/build_times.sh TREE TARGET_DIR CONSOLE_PAGE QUEUE_FILE POLICY_FILE
#   bench/build_times.sh . /tmp/bt src/console/pages/supervise.rs src/queue/quota.rs \
#       crates/docket-rules/src/policy/engine.rs
#
# For a tree before the split (commit 27482e2): `git worktree add /tmp/before 27482e2` and the
# policy file `src/policy/engine.rs`. Needs bc.
set -euo pipefail
[[ $# -eq 5 ]] || { sed -n '2,12p' "$0" >&2; exit 2; }
cd "$1"
export CARGO_TARGET_DIR="$2" CARGO_TERM_COLOR=never
rm -rf "$CARGO_TARGET_DIR"
took() {
    local start
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    echo "$(date +%s.%N) - $start" | bc
}
echo "clean cargo build: $(took cargo build --locked) s"
echo "cargo test --no-run after it: $(took cargo test --workspace --locked --no-run) s"
for file in "$3" "$4" "$5"; do
    touch "$file"
    echo "touch $file, cargo test --no-run: $(took cargo test --workspace --locked --no-run) s"
done
