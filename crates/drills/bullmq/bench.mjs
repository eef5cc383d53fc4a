// BullMQ on Redis, measured the way `holdfast bench queue` measures Holdfast:
// `--concurrency` producers each add no-op jobs one at a time, then one Worker
// at the same concurrency processes them until every job is done. Prints one
// JSON line on stdout; anything else goes to stderr.
//
// Usage: node bench.mjs --jobs 20000 --concurrency 16 [--redis-url redis://127.0.0.1:6379]
// The Redis URL may come from REDIS_URL instead, which keeps a password out
// of the process list.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const { values } = parseArgs({
  options: {
    jobs: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '16' },
    'redis-url': { type: 'string', default: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
    'timeout-s': { type: 'string', default: '300' },
  },
});
const jobs = positive('jobs', values.jobs);
const concurrency = positive('concurrency', values.concurrency);
const timeoutMs = positive('timeout-s', values['timeout-s']) * 1000;

function positive(name, raw) {
  const n = Number.parseInt(raw, 10);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new Error(`--${name} must be a positive integer, got ${raw}`);
  }
  return n;
}

// BullMQ 6 leaves the Redis driver to the caller, and in an ES module it
// cannot load ioredis by itself, so the connection is built here. Workers
// duplicate it for their blocking commands.
const connection = new IORedis(values['redis-url'], { maxRetriesPerRequest: null });
// A fresh queue per run, so leftovers of an earlier run can never be counted.
const name = `holdfast-bench-${process.pid}-${Date.now()}`;
const queue = new Queue(name, { connection });

async function redisFacts() {
  const info = await connection.info('server');
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  // CONFIG may be disabled on a managed Redis; the figures stand without it.
  const setting = async (key) => {
    try {
      const reply = await connection.config('GET', key);
      return reply[1] ?? null;
    } catch {
      return null;
    }
  };
  return { version, appendonly: await setting('appendonly'), appendfsync: await setting('appendfsync') };
}

async function enqueue() {
  let next = 0;
  const started = performance.now();
  const producer = async () => {
    while (next < jobs) {
      const n = next++;
      // removeOnComplete: a completed job leaves Redis, as a completed job
      // leaves Holdfast's table.
      await queue.add('noop', { n }, { removeOnComplete: true, removeOnFail: false });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, producer));
  return (performance.now() - started) / 1000;
}

async function processAll() {
  const seen = new Set();
  let completed = 0;
  let duplicates = 0;
  let finish;
  const allDone = new Promise((resolve) => {
    finish = resolve;
  });
  const worker = new Worker(
    name,
    async (job) => {
      if (seen.has(job.id)) {
        duplicates += 1;
      }
      seen.add(job.id);
    },
    { connection, concurrency, autorun: false },
  );
  worker.on('completed', () => {
    completed += 1;
    if (completed >= jobs) {
      finish();
    }
  });
  worker.on('failed', (job, error) => {
    process.stderr.write(`job ${job?.id} failed: ${error}\n`);
  });
  const started = performance.now();
  const running = worker.run();
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const outcome = await Promise.race([allDone, timedOut]);
  const seconds = (performance.now() - started) / 1000;
  clearTimeout(timer);
  await worker.close();
  await running;
  return { seconds, completed, distinct: seen.size, duplicates, timedOut: outcome === 'timeout' };
}

async function main() {
  const bullmqVersion = JSON.parse(
    readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url), 'utf8'),
  ).version;
  const redis = await redisFacts();
  const enqueueSeconds = await enqueue();
  const processed = await processAll();
  const left = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed');
  const leftover = Object.values(left).reduce((sum, n) => sum + n, 0);
  console.log(
    JSON.stringify({
      jobs,
      concurrency,
      bullmq_version: bullmqVersion,
      redis_version: redis.version,
      appendonly: redis.appendonly,
      appendfsync: redis.appendfsync,
      enqueue_seconds: enqueueSeconds,
      enqueue_jobs_per_s: jobs / enqueueSeconds,
      process_seconds: processed.seconds,
      processed_jobs_per_s: processed.completed / processed.seconds,
      completed: processed.completed,
      distinct_processed: processed.distinct,
      duplicates: processed.duplicates,
      left_in_queue: leftover,
      timed_out: processed.timedOut,
    }),
  );
}

try {
  await main();
} finally {
  // The queue is this run's alone; remove every key it made, whatever
  // happened above.
  await queue.obliterate({ force: true }).catch((error) => {
    process.stderr.write(`obliterating ${name}: ${error}\n`);
  });
  await queue.close();
  await connection.quit();
}
