"""Shared by the Python peers: the no-op job's record and the enqueue timing line.

Each worker process appends one line per job to its own file, `<dir>/<peer>-<pid>.txt`:
`<job number> <enqueued at> <started at> <finished at>` (Unix seconds). One unbuffered O_APPEND
write per line keeps lines whole even when threads of one process write at once, and lets
run.sh count finished jobs while the workers run.
"""

import json
import os
import time

_fds = {}


def record(peer, index, enqueued_at, started_at):
    # Opened lazily and per pid: prefork pools fork after import.
    pid = os.getpid()
    fd = _fds.get(pid)
    if fd is None:
        path = os.path.join(os.environ["PEER_OUT"], f"{peer}-{pid}.txt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fds[pid] = fd
    line = f"{index} {enqueued_at:.6f} {started_at:.6f} {time.time():.6f}\n"
    os.write(fd, line.encode())


def mark_ready(peer):
    path = os.path.join(os.environ["PEER_OUT"], f"ready-{peer}-{os.getpid()}")
    with open(path, "w"):
        pass


def print_enqueue_times(started, finished):
    print(json.dumps({"enqueue_started": started, "enqueue_finished": finished}))
