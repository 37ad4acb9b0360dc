"""Celery with a Redis broker: a no-op task and an enqueue command.

    python celery_peer.py enqueue JOBS     # prints {"enqueue_started": …, "enqueue_finished": …}
    celery -A celery_peer worker …         # run.sh starts the workers

Celery has no bulk publish: each job is one `apply_async` (one LPUSH) over one producer connection.
Results are off (`task_ignore_result`), so nothing is written back to Redis.
"""

import os
import sys
import time

from celery import Celery
from celery.signals import worker_ready

from record import mark_ready, print_enqueue_times, record

app = Celery("celery_peer", broker=os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(index, enqueued_at):
    record("celery", index, enqueued_at, time.time())


@worker_ready.connect
def _ready(**_):
    mark_ready("celery")


def enqueue(jobs):
    started = time.time()
    with app.producer_or_acquire() as producer:
        for index in range(jobs):
            noop.apply_async((index, time.time()), producer=producer)
    print_enqueue_times(started, time.time())


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue"]:
        enqueue(int(sys.argv[2]))
    else:
        sys.exit("usage: celery_peer.py enqueue JOBS")
