# Shared by bench/api/run.sh and bench/api/schemathesis.sh (sourced, not run).
# start_docket DATABASE_URL: starts `docket all` on a free port with its own DATA_DIR under $work,
# waits for /health/ready, creates an admin, enrols it in TOTP MFA, signs in again with a code and
# creates an API key. Sets: pid, port, base, token (access token, MFA satisfied), api_key.
# Needs: $DOCKET, $work, python3, curl.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# RFC 6238 code (SHA-1, 6 digits, 30 s) for a base32 secret, with the standard library only.
totp_code() {
    python3 - "$1" <<'PY'
import base64, hmac, struct, sys, time
secret = sys.argv[1]
key = base64.b32decode(secret + "=" * (-len(secret) % 8))
mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), "sha1").digest()
off = mac[-1] & 15
print("%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1000000))
PY
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# curl_json METHOD PATH [BODY] with $auth as bearer (if set); prints the body, fails on >= 400.
curl_json() {
    local args=(-sS --fail-with-body -X "$1" "$base/api/v1$2" -H 'content-type: application/json')
    [[ -n "${auth:-}" ]] && args+=(-H "authorization: Bearer $auth")
    [[ $# -ge 3 ]] && args+=(--data "$3")
    curl "${args[@]}"
}

start_docket() {
    local database_url=$1 label=${2:-docket}
    port=$(free_port)
    base="http://127.0.0.1:$port"
    local data_dir="$work/$label-data"
    mkdir -p "$data_dir"
    export DATA_DIR="$data_dir" DATABASE_URL="$database_url" PORT="$port" HOST=127.0.0.1
    export LOG_LEVEL=${LOG_LEVEL:-warn} RATE_LIMIT_PER_MINUTE=${RATE_LIMIT_PER_MINUTE:-100000000}
    export API_KEY_RATE_LIMIT_PER_MINUTE=${API_KEY_RATE_LIMIT_PER_MINUTE:-100000000}
    export TENANT_RATE_LIMIT_PER_MINUTE=${TENANT_RATE_LIMIT_PER_MINUTE:-100000000}
    local email="bench-admin@example.com" password="bench passphrase, long enough 42"
    "$DOCKET" all >"$work/$label.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        curl -sf "$base/health/ready" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { echo "docket exited; log:" >&2; cat "$work/$label.log" >&2; return 1; }
        sleep 0.1
    done
    curl -sf "$base/health/ready" >/dev/null || { echo "docket not ready" >&2; return 1; }
    DOCKET_ADMIN_PASSWORD="$password" "$DOCKET" admin create --email "$email" --tenant bench \
        >>"$work/$label.log" 2>&1
    auth=
    local login
    login=$(curl_json POST /auth/login "{\"email\":\"$email\",\"password\":\"$password\"}")
    auth=$(json_field access_token <<<"$login")
    local secret
    secret=$(curl_json POST /auth/mfa/enrol | json_field secret)
    curl_json POST /auth/mfa/confirm "{\"code\":\"$(totp_code "$secret")\"}" >/dev/null
    # Confirming marks this session's MFA as satisfied, so the same access token now works.
    token=$auth
    api_key=$(curl_json POST /api-keys "{\"name\":\"bench\",\"scopes\":${API_KEY_SCOPES:-[\"events:write\"]}}" |
        json_field secret)
    auth=
}

stop_docket() {
    if [[ -n "${pid:-}" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
    fi
    pid=
}

vm() { awk -v k="$2:" '$1 == k { print $2 / 1024 }' "/proc/$1/status"; }  # MiB
