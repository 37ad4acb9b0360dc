// pg-boss on PostgreSQL: schema and queue, bulk enqueue and a worker, one command each.
//
//   node pgboss_peer.js setup
//   node pgboss_peer.js enqueue JOBS         # boss.insert, 500 jobs a call
//   node pgboss_peer.js work CONCURRENCY     # one worker process: work() with batchSize CONCURRENCY
//
// pg-boss 10 has no teamSize: a worker fetches up to batchSize jobs, runs the handler on the array,
// completes them, and fetches again at once only if that took longer than the polling interval;
// otherwise it waits out the interval. pollingIntervalSeconds is set to 0.5, the smallest pg-boss
// accepts (its default is 2). Pool: pg-boss's default of 10 connections. Maintenance and cron
// scheduling are off in the workers and enqueuer (they do not touch this queue's jobs).
"use strict";
const PgBoss = require("pg-boss");
const { now, record, markReady, printEnqueueTimes, onStop } = require("./record");

const BATCH = 500;
const QUEUE = "noop";
const [command, argument] = process.argv.slice(2);

async function main() {
  const boss = new PgBoss({
    connectionString: process.env.PEER_DATABASE_URL,
    supervise: false,
    schedule: false,
    migrate: command === "setup",
  });
  boss.on("error", (e) => console.error(e));
  await boss.start();
  if (command === "setup") {
    await boss.createQueue(QUEUE);
    await boss.stop({ graceful: false, wait: true });
  } else if (command === "enqueue") {
    const jobs = Number(argument);
    const started = now();
    for (let first = 0; first < jobs; first += BATCH) {
      const batch = [];
      for (let i = first; i < Math.min(first + BATCH, jobs); i++) {
        batch.push({ name: QUEUE, data: { index: i, enqueuedAt: now() } });
      }
      await boss.insert(batch);
    }
    printEnqueueTimes(started, now());
    await boss.stop({ graceful: false, wait: true });
  } else if (command === "work") {
    await boss.work(
      QUEUE,
      { batchSize: Number(argument), pollingIntervalSeconds: 0.5 },
      async (jobs) => {
        const startedAt = now();
        for (const job of jobs) record("pgboss", job.data.index, job.data.enqueuedAt, startedAt);
      },
    );
    onStop(() => boss.stop({ graceful: true, wait: true, timeout: 10000 }));
    markReady("pgboss");
  } else {
    throw new Error("usage: pgboss_peer.js setup | enqueue JOBS | work CONCURRENCY");
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
