// Shared by the Node peers: the no-op job's record, in the same format as record.py.
// Each worker process appends `<job number> <enqueued at> <started at> <finished at>` (Unix
// seconds) to `<dir>/<peer>-<pid>.txt` with one synchronous write per job, so run.sh can count
// finished jobs while the workers run.
"use strict";
const fs = require("fs");
const path = require("path");
const { performance } = require("perf_hooks");

// Milliseconds with a fractional part (Date.now() has whole milliseconds only).
const now = () => (performance.timeOrigin + performance.now()) / 1000;

let fd;
function record(peer, index, enqueuedAt, startedAt) {
  if (fd === undefined) {
    fd = fs.openSync(path.join(process.env.PEER_OUT, `${peer}-${process.pid}.txt`), "a");
  }
  fs.writeSync(fd, `${index} ${enqueuedAt.toFixed(6)} ${startedAt.toFixed(6)} ${now().toFixed(6)}\n`);
}

function markReady(peer) {
  fs.writeFileSync(path.join(process.env.PEER_OUT, `ready-${peer}-${process.pid}`), "");
}

function printEnqueueTimes(started, finished) {
  console.log(JSON.stringify({ enqueue_started: started, enqueue_finished: finished }));
}

// Runs `stop` once on SIGTERM or SIGINT, then exits.
function onStop(stop) {
  let stopping = false;
  const handler = async () => {
    if (stopping) return;
    stopping = true;
    await stop();
    process.exit(0);
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
}

module.exports = { now, record, markReady, printEnqueueTimes, onStop };
