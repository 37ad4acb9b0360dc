"""procrastinate on PostgreSQL: schema, bulk enqueue and a worker, one command each.

    python procrastinate_peer.py setup
    python procrastinate_peer.py enqueue JOBS         # batch_defer_async, 500 jobs a call
    python procrastinate_peer.py work CONCURRENCY     # one worker process

The connection pool is set to 10 connections, like Docket's DB_POOL_SIZE default (procrastinate's
own default is psycopg_pool's 4). Everything else is procrastinate's default: LISTEN/NOTIFY on,
jobs kept after completion (delete_jobs="never").
"""

import asyncio
import os
import sys
import time

import procrastinate

from record import mark_ready, print_enqueue_times, record

BATCH = 500

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ["PEER_DATABASE_URL"], min_size=10, max_size=10
    )
)


@app.task(name="noop")
async def noop(index, enqueued_at):
    record("procrastinate", index, enqueued_at, time.time())


async def main(command, argument):
    async with app.open_async():
        if command == "setup":
            await app.schema_manager.apply_schema_async()
        elif command == "enqueue":
            jobs = int(argument)
            started = time.time()
            for first in range(0, jobs, BATCH):
                await noop.batch_defer_async(
                    *({"index": i, "enqueued_at": time.time()} for i in range(first, min(first + BATCH, jobs)))
                )
            print_enqueue_times(started, time.time())
        elif command == "work":
            mark_ready("procrastinate")
            await app.run_worker_async(concurrency=int(argument), name=f"bench-{os.getpid()}")
        else:
            sys.exit("usage: procrastinate_peer.py setup | enqueue JOBS | work CONCURRENCY")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
