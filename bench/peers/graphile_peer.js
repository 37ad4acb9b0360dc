// graphile-worker on PostgreSQL: migrations, bulk enqueue and a worker, one command each.
//
//   node graphile_peer.js setup
//   node graphile_peer.js enqueue JOBS        # WorkerUtils.addJobs, 500 jobs a call
//   node graphile_peer.js work CONCURRENCY    # one worker process, `concurrency` jobs at once
//
// graphile-worker's defaults otherwise: pool of 10 connections, LISTEN/NOTIFY with a 2 s poll
// fallback, one job fetched per free slot (the optional localQueue batch fetching is off),
// completed jobs deleted.
"use strict";
const { makeWorkerUtils, run } = require("graphile-worker");
const { now, record, markReady, printEnqueueTimes, onStop } = require("./record");

const BATCH = 500;
const connectionString = process.env.PEER_DATABASE_URL;
const [command, argument] = process.argv.slice(2);

async function main() {
  if (command === "setup" || command === "enqueue") {
    const utils = await makeWorkerUtils({ connectionString });
    try {
      if (command === "setup") {
        await utils.migrate();
      } else {
        const jobs = Number(argument);
        const started = now();
        for (let first = 0; first < jobs; first += BATCH) {
          const batch = [];
          for (let i = first; i < Math.min(first + BATCH, jobs); i++) {
            batch.push({ identifier: "noop", payload: { index: i, enqueuedAt: now() } });
          }
          await utils.addJobs(batch);
        }
        printEnqueueTimes(started, now());
      }
    } finally {
      await utils.release();
    }
  } else if (command === "work") {
    const runner = await run({
      connectionString,
      concurrency: Number(argument),
      noHandleSignals: true,
      taskList: {
        noop: async (payload) => record("graphile", payload.index, payload.enqueuedAt, now()),
      },
    });
    onStop(() => runner.stop());
    markReady("graphile");
    await runner.promise;
  } else {
    throw new Error("usage: graphile_peer.js setup | enqueue JOBS | work CONCURRENCY");
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
