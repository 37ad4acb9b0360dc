#!/usr/bin/env bash
# Full-size crash test: `docket bench chaos` (20,000 jobs on 4 worker processes, then 2 scheduler
# processes with 100 tasks firing every second; one process SIGKILLed a second; PostgreSQL restarted
# once per part, down for 2 s) against a throwaway PostgreSQL cluster. The cluster is the script's
# own, so restarting it disturbs nothing else. Arguments go to `docket bench chaos`, e.g.
#
#   bench/chaos/run.sh                                   # builds target/release/docket first
#   DOCKET=target/debug/docket bench/chaos/run.sh --jobs 2000 --scheduler-seconds 10
#
# Prints the table and exits with its verdict (0 pass, 1 an invariant broke). On failure the
# processes' logs and the PostgreSQL log are kept and their directory is printed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -z "${DOCKET:-}" ]]; then
    cargo build --release --quiet
    DOCKET=target/release/docket
fi
pg_bin=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [[ ! -x "$pg_bin/initdb" ]]; then
    echo "no PostgreSQL binaries under /usr/lib/postgresql; set PG_BIN" >&2
    exit 2
fi

work=$(mktemp -d -t docket-chaos-XXXXXX)
chmod 755 "$work"
# PostgreSQL refuses to run as root.
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
    as_pg=(runuser -u postgres --)
    chown postgres: "$work"
fi
# A port nothing listens on (bash's /dev/tcp connects; failure means free).
port=
for _ in $(seq 100); do
    candidate=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[[ -n "$port" ]] || { echo "no free port" >&2; exit 2; }

# fsync=off only skips flushing to disk (this host does not crash); commits still wait for the WAL
# (synchronous_commit stays on), so what PostgreSQL acknowledged survives its restart.
options="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work -c max_connections=200 -c fsync=off"
pg_ctl=("${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" -l "$work/postgres.log")

status=1
cleanup() {
    "${pg_ctl[@]}" -m immediate stop >/dev/null 2>&1 || true
    if [[ $status -eq 0 ]]; then
        rm -rf "$work"
    else
        echo "logs kept in $work" >&2
    fi
}
trap cleanup EXIT

"${as_pg[@]}" "$pg_bin/initdb" -D "$work/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
"${pg_ctl[@]}" -o "$options" -w start >/dev/null

# A fast shutdown (clients are disconnected), 2 s without a database, then a start that waits
# until connections are accepted again.
printf -v restart '%q ' "${pg_ctl[@]}"
restart="$restart -m fast -w stop && sleep 2 && $restart -o '$options' -w start"

mkdir -p "$work/docket"
set +e
DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" DATA_DIR="$work/docket" \
    "$DOCKET" bench chaos --restart-postgres "$restart" --logs "$work/logs" "$@"
status=$?
set -e
exit $status
