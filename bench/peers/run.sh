#!/usr/bin/env bash
# No-op job throughput and enqueue-to-start latency of Docket and the usual alternatives, one after
# the other on this machine, against one throwaway PostgreSQL 15 cluster and one throwaway Redis:
# Docket (SQLite and PostgreSQL), Celery (Redis broker), procrastinate, graphile-worker and pg-boss
# (PostgreSQL), plus pgbench and redis-benchmark as the ceilings. Prints one Markdown table.
#
#   bench/peers/run.sh                                   # 100,000 jobs per contender and mode
#   JOBS=2000 bench/peers/run.sh                         # a quick check
#   CONTENDERS="docket-postgres graphile" MODES=backlog bench/peers/run.sh
#
# Settings (environment): JOBS (100000), PROCS worker processes per contender (2), CONCURRENCY
# jobs at once per process (64), MODES ("backlog concurrent"), CONTENDERS (all of: pgbench
# redis-benchmark docket-sqlite docket-postgres celery graphile pgboss procrastinate), CELERY_POOL
# (threads), TIMEOUT seconds per run (1800), PG_OPTIONS extra postgres -c settings, PEERS_DIR
# scratch directory for the peers (~/.cache/docket/peers). Builds nothing: uses $DOCKET or
# target/release/docket. The methodology is in bench/README.md. Logs are kept (and their directory
# printed) when something failed or KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
here=$repo/bench/peers
DOCKET=${DOCKET:-target/release/docket}
JOBS=${JOBS:-100000} PROCS=${PROCS:-2} CONCURRENCY=${CONCURRENCY:-64} TIMEOUT=${TIMEOUT:-1800}
MODES=${MODES:-backlog concurrent}
CONTENDERS=${CONTENDERS:-pgbench redis-benchmark docket-sqlite docket-postgres celery graphile pgboss procrastinate}
CELERY_POOL=${CELERY_POOL:-threads}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-8} PGBENCH_SECONDS=${PGBENCH_SECONDS:-20}

# Pinned peers (Python 3.11, Node 20: graphile-worker 0.18 and pg-boss 11+ need Node 22).
PY_PINS="celery[redis]==5.7.0 kombu==5.7.0 redis==8.1.0 procrastinate==3.10.0 psycopg[binary]==3.3.9 psycopg-pool==3.3.3"
NPM_PINS="graphile-worker@0.17.3 pg-boss@10.4.2 pg@8.23.1"
PEERS_DIR=${PEERS_DIR:-$HOME/.cache/docket/peers}

case " $CONTENDERS " in *" docket-"*)
    [[ -x "$DOCKET" ]] || { echo "no $DOCKET: run cargo build --release or set DOCKET" >&2; exit 2; } ;;
esac
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
[[ -x "$pg_bin/initdb" ]] || { echo "no PostgreSQL 15 under $pg_bin; set PG_BIN" >&2; exit 2; }
for tool in python3 node npm redis-server redis-cli psql; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done

# The peers go into a scratch directory, installed again whenever the pins change.
install_peers() {
    local stamp="$PY_PINS | $NPM_PINS"
    if [[ -f "$PEERS_DIR/installed" && "$(cat "$PEERS_DIR/installed")" == "$stamp" ]]; then
        return
    fi
    echo "== installing peers into $PEERS_DIR" >&2
    rm -rf "$PEERS_DIR"
    mkdir -p "$PEERS_DIR"
    python3 -m venv "$PEERS_DIR/venv"
    # shellcheck disable=SC2086 # one argument per pin
    "$PEERS_DIR/venv/bin/pip" install --quiet --disable-pip-version-check $PY_PINS
    echo '{"private": true}' >"$PEERS_DIR/package.json"
    # shellcheck disable=SC2086
    (cd "$PEERS_DIR" && npm install --silent --no-audit --no-fund --save-exact $NPM_PINS)
    echo "$stamp" >"$PEERS_DIR/installed"
}
install_peers
python=$PEERS_DIR/venv/bin/python
export NODE_PATH=$PEERS_DIR/node_modules

work=$(mktemp -d -t docket-peers-XXXXXX)
chmod 755 "$work"
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
    as_pg=(runuser -u postgres --)
    chown postgres: "$work"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
redis_port=$(free_port)
pg_settings="-c max_connections=200${PG_OPTIONS:+ $PG_OPTIONS}"
pg_ctl=("${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pgdata" -l "$work/postgres.log")
redis_pid=
worker_pids=()
keep=${KEEP:-0}
cleanup() {
    local p
    for p in "${worker_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    [[ -n "$redis_pid" ]] && kill "$redis_pid" 2>/dev/null || true
    "${pg_ctl[@]}" -m immediate stop >/dev/null 2>&1 || true
    if [[ $keep == 1 ]]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port, logs in $work" >&2
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pgdata" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
"${pg_ctl[@]}" -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$work $pg_settings" -w start >/dev/null
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
pg_url() { echo "postgres://postgres@127.0.0.1:$pg_port/$1"; }
psql_admin() { PGOPTIONS=--client-min-messages=warning psql -X -q -v ON_ERROR_STOP=1 "$(pg_url postgres)" "$@"; }
# A fresh database per run, and a checkpoint so no run pays for the previous one's dirty pages.
fresh_database() {
    psql_admin -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" -c "CHECKPOINT"
}
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

load() { cut -d' ' -f1 /proc/loadavg; }
now() { date +%s.%N; }
# Each row also goes to stderr as soon as it is measured, so a run cut short still shows it.
rows=()
add_row() {
    rows+=("$1")
    echo "$1" >&2
}

# Commands for peer $1 (run in bench/peers; worker_command's $2 is the process number).
worker_command() {
    case $1 in
        celery) echo "$PEERS_DIR/venv/bin/celery" -A celery_peer worker --pool="$CELERY_POOL" \
            -c "$CONCURRENCY" -Q bench -n "w$2@%h" --without-gossip --without-mingle --without-heartbeat \
            --loglevel=WARNING ;;
        procrastinate) echo "$python" procrastinate_peer.py work "$CONCURRENCY" ;;
        graphile) echo node graphile_peer.js work "$CONCURRENCY" ;;
        pgboss) echo node pgboss_peer.js work "$CONCURRENCY" ;;
    esac
}
setup_command() {
    case $1 in
        procrastinate) echo "$python" procrastinate_peer.py setup ;;
        graphile) echo node graphile_peer.js setup ;;
        pgboss) echo node pgboss_peer.js setup ;;
    esac
}
enqueue_command() {
    case $1 in
        celery) echo "$python" celery_peer.py enqueue "$JOBS" ;;
        procrastinate) echo "$python" procrastinate_peer.py enqueue "$JOBS" ;;
        graphile) echo node graphile_peer.js enqueue "$JOBS" ;;
        pgboss) echo node pgboss_peer.js enqueue "$JOBS" ;;
    esac
}

start_workers() {
    local peer=$1 out=$2 i
    worker_pids=()
    for i in $(seq "$PROCS"); do
        # shellcheck disable=SC2046 # the command is split into words on purpose
        (cd "$here" && exec $(worker_command "$peer" "$i")) >"$out/worker-$i.log" 2>&1 &
        worker_pids+=($!)
    done
}

stop_workers() {
    local p deadline=$((SECONDS + 30))
    for p in "${worker_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${worker_pids[@]}"; do
        while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    worker_pids=()
}

workers_alive() {
    local p
    for p in "${worker_pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}

# Waits until JOBS records exist (finished jobs), a worker died, or TIMEOUT; prints why it stopped.
wait_for_jobs() {
    local out=$1 deadline=$((SECONDS + TIMEOUT)) done_jobs
    while :; do
        done_jobs=$(cat "$out"/*.txt 2>/dev/null | wc -l)
        ((done_jobs >= JOBS)) && { echo done; return; }
        workers_alive || { echo "a worker exited (see $out)"; return; }
        ((SECONDS < deadline)) || { echo "timed out after ${TIMEOUT} s"; return; }
        sleep 0.2
    done
}

wait_for_ready() {
    local out=$1 deadline=$((SECONDS + 120))
    while (($(find "$out" -name 'ready-*' | wc -l) < PROCS)); do
        workers_alive && ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# One peer in one mode: backlog (enqueue everything, then start the workers) or concurrent (start
# the workers, wait until they are up, then enqueue while they drain, like docket bench queue).
bench_peer() {
    local peer=$1 system=$2 backend=$3 mode=$4 notes=$5
    local out=$work/$peer-$mode
    local spawned status load_at_start
    mkdir -p "$out"
    export PEER_OUT=$out PEER_DATABASE_URL PEER_REDIS_URL="redis://127.0.0.1:$redis_port/0"
    PEER_DATABASE_URL=$(pg_url "${peer}_$mode")
    echo "== $system ($backend), $mode: $JOBS jobs, $PROCS × $CONCURRENCY" >&2
    if [[ $backend == redis ]]; then
        redis-cli -p "$redis_port" flushall >/dev/null
    else
        fresh_database "${peer}_$mode"
    fi
    if [[ $peer != celery ]]; then
        # shellcheck disable=SC2046
        (cd "$here" && $(setup_command "$peer")) >"$out/setup.log" 2>&1 ||
            return 1
    fi
    load_at_start=$(load)
    if [[ $mode == backlog ]]; then
        # shellcheck disable=SC2046
        (cd "$here" && $(enqueue_command "$peer")) >"$out/enqueue.json" 2>"$out/enqueue.log" || return 1
        spawned=$(now)
        start_workers "$peer" "$out"
    else
        spawned=$(now)
        start_workers "$peer" "$out"
        wait_for_ready "$out" || { stop_workers; return 1; }
        # shellcheck disable=SC2046
        (cd "$here" && $(enqueue_command "$peer")) >"$out/enqueue.json" 2>"$out/enqueue.log" ||
            { stop_workers; return 1; }
    fi
    status=$(wait_for_jobs "$out")
    stop_workers
    [[ $status == done ]] || { notes="$notes; **$status**"; keep=1; }
    add_row "$(python3 "$here/analyse.py" --system "$system" --backend "$backend" --jobs "$JOBS" \
        --mode "$mode" --dir "$out" --enqueue "$out/enqueue.json" --spawned "$spawned" \
        --notes "$notes; load $load_at_start at start")"
}

# `docket bench queue` enqueues in batches of 500 while its worker loops drain (PROCS loops in
# one process, each claiming up to WORKER_CONCURRENCY jobs at once): the concurrent mode. With
# `--enqueue-first` it enqueues everything before the loops start and counts from the first start:
# the backlog mode.
bench_docket() {
    local backend=$1 url=$2 mode=$3
    local out=$work/docket-$backend-$mode report load_at_start flag=()
    [[ $mode == backlog ]] && flag=(--enqueue-first)
    mkdir -p "$out"
    echo "== Docket ($backend, $mode): docket bench queue --jobs $JOBS --workers $PROCS ${flag[*]}" >&2
    [[ $backend == postgres ]] && fresh_database docket
    load_at_start=$(load)
    report=$(DATABASE_URL=$url DATA_DIR=$out WORKER_CONCURRENCY=$CONCURRENCY LOG_LEVEL=warn \
        "$DOCKET" bench queue --jobs "$JOBS" --workers "$PROCS" "${flag[@]}" 2>"$out/docket.log") || return 1
    echo "$report" >"$out/report.txt"
    field() { awk -v k="$1" '$0 ~ "^" k { print $(NF - 1) }' <<<"$report"; }
    add_row "$(printf '| Docket | %s | %s | %.2f | %s | %s ms | %s ms | %s (docket bench queue %s); %s s; %s × WORKER_CONCURRENCY=%s worker loops in one process; start = claim time; load %s at start |' \
        "$backend" "$JOBS" "$(python3 -c "print($JOBS / $(field 'enqueue rate'))")" \
        "$(printf "%.0f" "$(field 'processing rate')")" "$(printf "%.0f" "$(field 'enqueue-to-start p50')")" \
        "$(printf "%.0f" "$(field 'enqueue-to-start p99')")" "$mode" "${flag[*]}" "$(field 'wall time')" "$PROCS" "$CONCURRENCY" "$load_at_start")"
}

bench_pgbench() {
    local out=$work/pgbench mode tps latency
    mkdir -p "$out"
    echo "== pgbench: -c $PGBENCH_CLIENTS -j 2 -T $PGBENCH_SECONDS, -N then -S" >&2
    fresh_database pgbench
    pgbench -i -s 10 -q "$(pg_url pgbench)" >"$out/init.log" 2>&1 || return 1
    for mode in N S; do
        pgbench "-$mode" -c "$PGBENCH_CLIENTS" -j 2 -T "$PGBENCH_SECONDS" "$(pg_url pgbench)" \
            >"$out/$mode.log" 2>&1 || return 1
        tps=$(awk '/^tps = / { print $3 }' "$out/$mode.log")
        latency=$(awk '/^latency average = / { print $4 }' "$out/$mode.log")
        add_row "$(printf '| pgbench -%s (ceiling) | postgres | | | %s tx/s | | | %s; %s clients; latency average %s ms; load %s |' \
            "$mode" "$(printf "%.0f" "$tps")" \
            "$([[ $mode == N ]] && echo 'simple update: 3 statements + commit per transaction' || echo 'select only: 1 SELECT per transaction')" \
            "$PGBENCH_CLIENTS" "$latency" "$(load)")"
    done
}

bench_redis() {
    local out=$work/redis-benchmark line command rps
    mkdir -p "$out"
    echo "== redis-benchmark: LPUSH and RPOP, 8 clients" >&2
    redis-benchmark -p "$redis_port" -t lpush,rpop -n 200000 -c 8 -q >"$out/log" 2>&1 || return 1
    while read -r line; do
        command=${line%%:*}
        rps=$(awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "requests") print $i }' <<<"${line##*:}")
        add_row "$(printf '| redis-benchmark %s (ceiling) | redis | | | %s ops/s | | | 8 clients, no pipelining; load %s |' \
            "$command" "$(printf "%.0f" "$rps")" "$(load)")"
    done < <(tr '\r' '\n' <"$out/log" | grep -E '^(LPUSH|RPOP): [0-9.]+ requests per second')
}

failed() { add_row "| $1 | $2 | $JOBS | | | | | **failed**, logs in $work |"; keep=1; }

started_load=$(load)
for contender in $CONTENDERS; do
    case $contender in
        pgbench) bench_pgbench || failed pgbench postgres ;;
        redis-benchmark) bench_redis || failed redis-benchmark redis ;;
        docket-sqlite)
            for mode in $MODES; do
                bench_docket sqlite "sqlite://$work/docket-sqlite-$mode/docket.db" "$mode" || failed Docket sqlite
            done ;;
        docket-postgres)
            for mode in $MODES; do
                bench_docket postgres "$(pg_url docket)" "$mode" || failed Docket postgres
            done ;;
        celery | procrastinate | graphile | pgboss)
            for mode in $MODES; do
                case $contender in
                    celery) bench_peer celery "Celery 5.7.0" redis "$mode" \
                        "$PROCS × --pool=$CELERY_POOL -c $CONCURRENCY, prefetch ×4, ignore_result, early ack; enqueue: apply_async per job" ;;
                    procrastinate) bench_peer procrastinate "procrastinate 3.10.0" postgres "$mode" \
                        "$PROCS × concurrency=$CONCURRENCY, pool 10, LISTEN/NOTIFY; enqueue: batch_defer_async ×500" ;;
                    graphile) bench_peer graphile "graphile-worker 0.17.3" postgres "$mode" \
                        "$PROCS × concurrency=$CONCURRENCY, pool 10, LISTEN/NOTIFY, no localQueue; enqueue: addJobs ×500" ;;
                    pgboss) bench_peer pgboss "pg-boss 10.4.2" postgres "$mode" \
                        "$PROCS × work(batchSize=$CONCURRENCY, pollingIntervalSeconds=0.5), pool 10; enqueue: insert ×500" ;;
                esac || failed "$contender" "$mode"
            done ;;
        *) echo "unknown contender $contender" >&2; exit 2 ;;
    esac
done

echo
echo "$JOBS no-op jobs per run; $(nproc) CPUs (shared; load $started_load at start); PostgreSQL $("$pg_bin/postgres" --version | awk '{ print $3 }') ($pg_settings, otherwise defaults) and Redis $(redis-server --version | awk '{ print $3 }' | cut -d= -f2) on loopback;"
echo "each contender: $PROCS worker processes × $CONCURRENCY concurrent jobs; $($DOCKET --version 2>/dev/null || echo docket); $(python3 --version), Node $(node --version)"
echo
echo "| system | backend | jobs | enqueue s | throughput jobs/s | enqueue-to-start p50 | p99 | notes |"
echo "|---|---|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
