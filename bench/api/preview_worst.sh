#!/usr/bin/env bash
# The review's CPU case end to end: `POST /api/v1/tasks/preview` with DTSTART 380 days back and
# FREQ=SECONDLY (and FREQ=MINUTELY), RUNS times each, against one `docket all` on a scratch
# SQLite database; prints the status and the time of every request. Builds nothing: uses $DOCKET
# or target/release/docket (point DOCKET at an older build to compare). Needs curl and python3.
#
#   bench/api/preview_worst.sh
#   RUNS=10 DOCKET=/path/to/old/docket bench/api/preview_worst.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKET=${DOCKET:-target/release/docket}
[[ -x "$DOCKET" ]] || { echo "no $DOCKET: run cargo build --release or set DOCKET" >&2; exit 2; }
RUNS=${RUNS:-5}

work=$(mktemp -d -t docket-preview-XXXXXX)
source bench/api/lib.sh
cleanup() { stop_docket; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/data"
start_docket "sqlite://$work/data/docket.db?mode=rwc"
start=$(date -u -d '380 days ago' +%Y%m%dT%H%M%SZ)
for freq in SECONDLY MINUTELY; do
    body="{\"schedule_kind\":\"rrule\",\"schedule_expr\":\"DTSTART:$start\\nRRULE:FREQ=$freq\"}"
    for run in $(seq "$RUNS"); do
        curl -sS -o /dev/null -X POST "$base/api/v1/tasks/preview" -H 'content-type: application/json' \
            -H "authorization: Bearer $token" --data "$body" --max-time 600 \
            -w "FREQ=$freq from 380 days back, run $run: %{http_code} in %{time_total} s\n"
    done
done
