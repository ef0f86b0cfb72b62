// The graphile-worker peer: a task that POSTs one webhook with Node's fetch.
//
// Run by bench/systems.py with node from bench/.peers/graphile (where graphile-worker is
// installed):  node bench/peer_graphile.cjs   with the settings in the environment:
//   BENCH_PEER_DIR       folder holding node_modules/graphile-worker
//   DATABASE_URL         connection string
//   GW_CONCURRENCY       concurrent jobs (graphile-worker's `concurrency`)
//   GW_LOCAL_QUEUE       localQueue size (0: off)
//   GW_BATCH_DELAY_MS    completeJobBatchDelay / failJobBatchDelay (-1: off)
//   GW_MAX_POOL          pg pool size
//   GW_MIGRATE_ONLY      "1": install the schema and exit
// Each job's payload is {url, id, body} (see bench/producer.py). The task signs the body the way
// hookd does (Standard Webhooks v1, HMAC-SHA256 of "id.timestamp.body"), POSTs it with hookd's
// header set, never follows redirects, reads the response, and throws on a non-2xx answer.
// Prints "ready" once the runner has started; graphile-worker handles SIGTERM itself.
"use strict";

const path = require("node:path");
const crypto = require("node:crypto");

const peerDir = process.env.BENCH_PEER_DIR;
const { run, runMigrations } = require(path.join(peerDir, "node_modules", "graphile-worker"));

const SECRET = Buffer.from("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw7oKm6gcbmk4=", "base64");

const env = (name, fallback) =>
  process.env[name] === undefined ? fallback : Number(process.env[name]);

async function webhook(payload) {
  const msgId = `msg_peer_${payload.id}`;
  const ts = String(Math.floor(Date.now() / 1000));
  const mac = crypto
    .createHmac("sha256", SECRET)
    .update(`${msgId}.${ts}.`)
    .update(payload.body)
    .digest("base64");
  const resp = await fetch(payload.url, {
    method: "POST",
    body: payload.body,
    redirect: "manual",
    headers: {
      "Content-Type": "application/json",
      "User-Agent": "graphile-worker-bench",
      "webhook-id": msgId,
      "webhook-timestamp": ts,
      "webhook-signature": `v1,${mac}`,
    },
  });
  await resp.arrayBuffer();
  if (resp.status < 200 || resp.status >= 300) {
    throw new Error(`HTTP ${resp.status}`);
  }
}

async function main() {
  const connectionString = process.env.DATABASE_URL;
  const batchDelay = env("GW_BATCH_DELAY_MS", 0);
  const localQueue = env("GW_LOCAL_QUEUE", 0);
  const worker = {};
  if (localQueue > 0) worker.localQueue = { size: localQueue };
  if (batchDelay >= 0) {
    worker.completeJobBatchDelay = batchDelay;
    worker.failJobBatchDelay = batchDelay;
  }
  const options = {
    connectionString,
    concurrency: env("GW_CONCURRENCY", 10),
    maxPoolSize: env("GW_MAX_POOL", 10),
    pollInterval: 2000,
    noHandleSignals: false,
    taskList: { webhook },
    preset: { worker },
  };
  if (process.env.GW_MIGRATE_ONLY === "1") {
    await runMigrations({ connectionString });
    console.log("migrated");
    return;
  }
  const runner = await run(options);
  console.log("ready");
  await runner.promise;
}

main().catch((err) => {
  console.error("Error:", err);
  process.exit(1);
});
