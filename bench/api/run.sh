#!/usr/bin/env bash
# HTTP load test of one `docket all` process with wrk: GET /health and an authenticated
# POST /api/v1/events (API key with events:write), on a scratch SQLite database and, when
# DATABASE_URL is set, also on that PostgreSQL (it must be a database the bench may write to).
# Builds nothing: uses $DOCKET or target/release/docket. Needs wrk (`apt-get install -y wrk`),
# curl and python3.
#
#   bench/api/run.sh
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench THREADS=2 CONNECTIONS=64 DURATION=30s bench/api/run.sh
#
# RATE_LIMIT_PER_MINUTE, API_KEY_RATE_LIMIT_PER_MINUTE and TENANT_RATE_LIMIT_PER_MINUTE are set to
# 100000000 for the server (the defaults, 600 per user, 1200 per key, 20000 per tenant,
# would turn almost every POST into a 429); override it to measure the limiter itself.
# wrk runs on the same host and shares its CPUs with the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKET=${DOCKET:-target/release/docket}
[[ -x "$DOCKET" ]] || { echo "no $DOCKET: run cargo build --release or set DOCKET" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }
THREADS=${THREADS:-2} CONNECTIONS=${CONNECTIONS:-64} DURATION=${DURATION:-30s}
postgres_url=${DATABASE_URL:-}
unset DATABASE_URL

work=$(mktemp -d -t docket-api-bench-XXXXXX)
source bench/api/lib.sh
cleanup() { stop_docket; if [[ ${keep:-0} == 1 ]]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT
keep=1

rows=()
# wrk_row LABEL BACKEND ARGS...: one table row from wrk --latency output.
wrk_row() {
    local label=$1 backend=$2 out
    shift 2
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@")
    echo "$out" >>"$work/wrk.log"
    local rps p50 p99 total errors
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    total=$(awk '/requests in/ { print $1 }' <<<"$out")
    errors=$(awk '/Non-2xx or 3xx responses:/ { n = $NF } /Socket errors:/ { s = $0 } END { print n + 0 (s ? " (" s ")" : "") }' <<<"$out")
    rows+=("$(printf '| %-8s | %-22s | %10s | %8s | %8s | %9s | %s |' "$backend" "$label" "$rps" "$p50" "$p99" "$total" "$errors")")
}

bench_backend() {
    local backend=$1 url=$2
    echo "== $backend: starting docket all and signing in" >&2
    start_docket "$url" "$backend"
    sleep 2
    local idle_rss
    idle_rss=$(vm "$pid" VmRSS)
    echo "== $backend: wrk GET /health" >&2
    wrk_row "GET /health" "$backend" "$base/health"
    echo "== $backend: wrk POST /api/v1/events" >&2
    DOCKET_API_KEY=$api_key wrk_row "POST /api/v1/events" "$backend" -s bench/api/post_event.lua "$base/api/v1/events"
    local loaded_rss peak_rss
    loaded_rss=$(vm "$pid" VmRSS)
    peak_rss=$(vm "$pid" VmHWM)
    rss+=("$(printf '| %-8s | %13.1f | %15.1f | %13.1f |' "$backend" "$idle_rss" "$loaded_rss" "$peak_rss")")
    stop_docket
}

rss=()
bench_backend sqlite "sqlite://$work/sqlite-data/docket.db"
if [[ -n "$postgres_url" ]]; then bench_backend postgres "$postgres_url"; fi

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, on the same host as the server ($(nproc) CPUs shared);"
echo "RATE_LIMIT_PER_MINUTE=$RATE_LIMIT_PER_MINUTE; $($DOCKET --version 2>/dev/null || echo docket)"
echo
echo "| backend  | request                | requests/s |      p50 |      p99 |  requests | non-2xx |"
echo "|----------|------------------------|-----------:|---------:|---------:|----------:|---------|"
printf '%s\n' "${rows[@]}"
echo
echo "| backend  | idle RSS, MiB | loaded RSS, MiB | peak RSS, MiB |"
echo "|----------|--------------:|----------------:|--------------:|"
printf '%s\n' "${rss[@]}"
echo "(idle: VmRSS 2 s after start and sign-in; loaded: VmRSS right after the POST run; peak: VmHWM)"
keep=0
