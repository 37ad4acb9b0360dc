#!/usr/bin/env bash
# Property-based API test with Schemathesis against one `docket all` process on a scratch SQLite
# database (or $DATABASE_URL), signed in as an MFA-enrolled admin so that authenticated operations
# run, not just their 401s. Builds nothing: uses $DOCKET or target/release/docket. Installs
# Schemathesis from PyPI into ~/.cache/docket/schemathesis-<version> on first use.
#
#   bench/api/schemathesis.sh                      # 25 examples per operation
#   MAX_EXAMPLES=100 bench/api/schemathesis.sh --seed 1    # extra arguments go to `schemathesis run`
#
# Two runs over the same server:
#   1. not_a_server_error: any 5xx (or a dropped connection) is a bug; decides the exit status.
#   2. response conformance (response_schema, status_code, content_type): reported, not fatal.
# Reports (JUnit XML, NDJSON) and the server log go to the directory printed at the end.
#
# Operations left out because they would end the run's own session or lock it out, or never end:
# POST /auth/logout, DELETE /auth/sessions/{id}, POST /auth/mfa/disable, POST /users/me/password,
# PATCH /tenants/{id} (IP allow-list), PATCH and DELETE /users/{id} (the fuzzer finds the admin's own
# id in GET /users; a new password or status ends its sessions), GET /events/stream (server-sent events).
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKET=${DOCKET:-target/release/docket}
[[ -x "$DOCKET" ]] || { echo "no $DOCKET: run cargo build --release or set DOCKET" >&2; exit 2; }
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-25}

venv="$HOME/.cache/docket/schemathesis-$SCHEMATHESIS_VERSION"
st="$venv/bin/schemathesis"
if ! "$st" --version >/dev/null 2>&1; then
    echo "==> installing Schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "schemathesis==$SCHEMATHESIS_VERSION"
fi

database_url=${DATABASE_URL:-}
work=$(mktemp -d -t docket-schemathesis-XXXXXX)
source bench/api/lib.sh
trap stop_docket EXIT
export ACCESS_TOKEN_EXPIRE_MINUTES=600 SESSION_TIMEOUT_MINUTES=600
start_docket "${database_url:-sqlite://$work/docket-data/docket.db}" docket
echo "==> docket all on $base (log: $work/docket.log)" >&2

common=(
    "$base/api/v1/openapi.json"
    -H "Authorization: Bearer $token"
    --max-examples "$MAX_EXAMPLES"
    --request-timeout 30
    --exclude-path /api/v1/auth/logout
    --exclude-path /api/v1/auth/sessions/{id}
    --exclude-path /api/v1/auth/mfa/disable
    --exclude-path /api/v1/users/me/password
    --exclude-path /api/v1/events/stream
    --exclude-operation-id update_tenant
    --exclude-operation-id update_user
    --exclude-operation-id delete_user
    --no-color
)

# Schemathesis keeps a cache in ./.schemathesis: run it from the scratch directory.
cd "$work"
status=0
echo "==> run 1: not_a_server_error" >&2
"$st" run "${common[@]}" --checks not_a_server_error \
    --report junit,ndjson --report-dir "$work/server-errors" "$@" | tee "$work/server-errors.txt" || status=$?
echo "==> run 2: response_schema_conformance, status_code_conformance, content_type_conformance" >&2
conformance=0
"$st" run "${common[@]}" \
    --checks response_schema_conformance,status_code_conformance,content_type_conformance \
    --report junit,ndjson --report-dir "$work/conformance" "$@" | tee "$work/conformance.txt" || conformance=$?

me=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/api/v1/auth/me")
echo
echo "token still valid after the runs (GET /auth/me): HTTP $me"
echo "not_a_server_error run: exit $status (0 = no 5xx); conformance run: exit $conformance (informational)"
echo "reports and server log: $work"
exit $status
