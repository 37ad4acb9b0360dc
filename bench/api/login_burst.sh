#!/usr/bin/env bash
# Memory under a burst of bad sign-ins: starts `docket all` on a scratch SQLite database, fires
# BURST (default 200) parallel logins with unknown emails and reports how they were answered and
# the process's peak RSS (VmHWM in /proc/PID/status). Each Argon2 check needs 19 MiB; unbounded,
# 100 of them took RSS from 41 MB to 2 GB. Builds nothing: uses $DOCKET or target/release/docket.
# Needs curl and python3.
#
#   bench/api/login_burst.sh                 # 200 logins from 200 addresses
#   ADDRESSES=1 bench/api/login_burst.sh     # 200 logins from one address
#   BURST=500 PASSWORD_HASH_CONCURRENCY=4 bench/api/login_burst.sh
#
# By default every login claims its own client address (X-Forwarded-For 10.x.y.z, believed because
# TRUSTED_PROXIES=127.0.0.1), as from a botnet: LOGIN_FAILURES_PER_IP does not help then, and only
# the bound on concurrent hashing (PASSWORD_HASH_CONCURRENCY) keeps memory down. With ADDRESSES=1
# they all come from one address, and all but LOGIN_FAILURES_PER_IP (20) are refused before hashing.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKET=${DOCKET:-target/release/docket}
[[ -x "$DOCKET" ]] || { echo "no $DOCKET: run cargo build --release or set DOCKET" >&2; exit 2; }
BURST=${BURST:-200}
ADDRESSES=${ADDRESSES:-$BURST}
export TRUSTED_PROXIES=127.0.0.1

work=$(mktemp -d -t docket-login-burst-XXXXXX)
source bench/api/lib.sh
cleanup() { stop_docket; rm -rf "$work"; }
trap cleanup EXIT

port=$(free_port)
base="http://127.0.0.1:$port"
export DATA_DIR="$work/data" DATABASE_URL="sqlite://$work/data/docket.db" PORT="$port" HOST=127.0.0.1
export LOG_LEVEL=${LOG_LEVEL:-warn}
mkdir -p "$DATA_DIR"
"$DOCKET" all >"$work/docket.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    curl -sf "$base/health/ready" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "docket exited; log:" >&2; cat "$work/docket.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "$base/health/ready" >/dev/null || { echo "docket not ready" >&2; exit 1; }
sleep 1
idle=$(vm "$pid" VmRSS)

start=$(date +%s.%N)
# One line per login: its number and the address it claims.
for i in $(seq 0 $((BURST - 1))); do
    a=$((i % ADDRESSES))
    echo "$i 10.$((a / 65536 % 256)).$((a / 256 % 256)).$((a % 256))"
done | xargs -P "$BURST" -L1 sh -c 'curl -s -o /dev/null -w "%{http_code}\n" --max-time 60 \
    -H "content-type: application/json" -H "x-forwarded-for: $2" \
    --data "{\"email\":\"nobody$1@example.com\",\"password\":\"not the password, long enough\"}" \
    "$0/api/v1/auth/login"' "$base" >"$work/statuses"
elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")

peak=$(vm "$pid" VmHWM)
after=$(vm "$pid" VmRSS)
echo "| burst | addresses | statuses | seconds | idle RSS MiB | peak RSS MiB (VmHWM) | RSS after MiB |"
echo "|---|---|---|---|---|---|---|"
printf '| %s | %s | %s | %s | %.1f | %.1f | %.1f |\n' "$BURST" "$ADDRESSES" \
    "$(sort "$work/statuses" | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }')" \
    "$elapsed" "$idle" "$peak" "$after"
