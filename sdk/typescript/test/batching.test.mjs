// Reports in batches: the low-level `agent.reports()` (`POST /v1/reports`), and the agent's
// `batchReports` (on by default) against the single report endpoints (`batchReports: false`).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { BATCH_BYTES_MAX } from "../dist/batch.js";
import { Agent, Client, Conflict, InvalidRequest, REPORTS_PER_BATCH_MAX } from "../dist/index.js";
import { useServer, withAgent } from "./helpers.mjs";

const server = useServer();
const REPORT_KINDS = ["started", "heartbeat", "succeeded", "failed", "released"];

/** A new agent (registered by hand) and `count` tasks it claimed and started, in order. */
async function claimStarted(client, capability, count) {
  const agent = await client.http.json({
    method: "POST",
    path: "/v1/agents",
    body: { name: `batcher-${capability}`, capabilities: [capability], concurrency: count },
  });
  const ids = [];
  for (let i = 0; i < count; i++) ids.push((await client.submitTask({ key: `t${i}`, capabilities: [capability] })).task);
  const { tasks } = await client.http.json({
    method: "POST",
    path: `/v1/agents/${agent.id}/claim`,
    body: { max: count, wait_ms: 5_000, start: true },
  });
  assert.deepEqual(tasks.map((t) => t.task).sort(), [...ids].sort());
  return { agent: agent.id, claimed: ids.map((id) => tasks.find((t) => t.task === id)) };
}

test("a batch answers each report in order, and a stale one alone", async () => {
  const client = new Client(server.url);
  const { agent, claimed } = await claimStarted(client, `low-${randomUUID()}`, 3);
  const [a, b, c] = claimed;
  const sender = new Agent("sender", { url: server.url, logger: null });

  const outcomes = await sender.reports([
    { report: "heartbeat", task: a.task, agent, token: a.token, progress: { pct: 50 }, usage: { usd: 0.5 } },
    { report: "succeeded", task: b.task, agent, token: b.token, result: { b: 1 } },
    { report: "succeeded", task: c.task, agent, token: c.token + 1, result: { c: 1 } },
    { report: "succeeded", task: a.task, agent, token: a.token, result: { a: 1 }, usage: { usd: 1 } },
  ]);

  assert.equal(outcomes.length, 4);
  const [beat, bDone, stale, aDone] = outcomes;
  assert.deepEqual([beat.task, beat.state, beat.cancelled], [a.task, "executing", false]);
  assert.equal(bDone.state, "completed");
  assert.ok(stale instanceof Conflict, "the error its own report would have thrown");
  assert.deepEqual([stale.status, stale.code, stale.field], [409, "stale_lease", "reports[2]"]);
  assert.deepEqual([aDone.task, aDone.state], [a.task, "completed"], "applied after its heartbeat");

  assert.equal((await client.getTask(c.task)).state, "executing", "the stale report changed nothing");
  assert.deepEqual((await client.getTask(b.task)).result, { b: 1 });
  assert.deepEqual((await client.getTask(a.task)).result, { a: 1 });
  const history = (await client.taskHistory(a.task)).map((h) => h.event);
  assert.deepEqual(history.slice(-2), ["heartbeat", "execution_succeeded"]);
});

test("a batch that is not one is refused whole", async () => {
  const client = new Client(server.url);
  const { agent, claimed } = await claimStarted(client, `bad-${randomUUID()}`, 1);
  const [a] = claimed;
  const sender = new Agent("sender", { url: server.url, logger: null });
  const fine = { report: "succeeded", task: a.task, agent, token: a.token, result: { ok: true } };

  await assert.rejects(sender.reports([]), (err) => err instanceof InvalidRequest && err.field === "reports");
  await assert.rejects(
    sender.reports(Array(REPORTS_PER_BATCH_MAX + 1).fill(fine)),
    (err) => err instanceof InvalidRequest && err.field === "reports",
  );
  await assert.rejects(
    sender.reports([fine, { ...fine, report: "finished" }]),
    (err) => err instanceof InvalidRequest && err.field === "reports[1].report",
  );
  assert.equal((await client.getTask(a.task)).state, "executing", "no report of a refused batch applied");
});

/** A fetch that keeps every request's path and JSON body, and its response's status. */
function recordingFetch() {
  const requests = [];
  const record = async (url, init) => {
    const body = typeof init?.body === "string" ? JSON.parse(init.body) : undefined;
    const request = { path: new URL(url).pathname, body, status: undefined };
    requests.push(request);
    const response = await fetch(url, init);
    request.status = response.status;
    return response;
  };
  return { requests, fetch: record };
}

const singleReports = (requests) =>
  requests.filter((r) => r.path.startsWith("/v1/tasks/") && REPORT_KINDS.includes(r.path.split("/").at(-1)));
const batches = (requests) => requests.filter((r) => r.path === "/v1/reports").map((r) => r.body.reports);

/** Runs `count` tasks (every fifth fails for good) through an agent made with `options`. */
async function runMany(count, options) {
  const client = new Client(server.url);
  const capability = `many-${randomUUID()}`;
  const { requests, fetch } = recordingFetch();
  const agent = new Agent("many", { url: server.url, claimWaitMs: 200, concurrency: 6, logger: null, fetch, ...options });
  agent.task(capability, async (input, ctx) => {
    ctx.progress({ got: input });
    if (input % 5 === 0) throw Object.assign(new Error("a fifth fail"), { name: "Fifth" });
    return { double: input * 2 };
  });
  const specs = Array.from({ length: count }, (_, i) => ({
    key: `t${i}`,
    capabilities: [capability],
    input: i,
    retry: { max_attempts: 1 },
  }));
  const { workflow, tasks } = await client.submitWorkflow(specs);
  await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 30_000 }));
  for (let i = 0; i < count; i++) {
    const view = await client.getTask(tasks[`t${i}`]);
    const history = (await client.taskHistory(view.id)).map((h) => h.event);
    assert.deepEqual(history.slice(0, 3), ["submitted", "agent_assigned", "execution_started"]);
    assert.equal(history.filter((e) => e === "execution_started").length, 1);
    if (i % 5 === 0) {
      assert.equal(view.state, "failed");
      assert.equal(history.at(-1), "execution_failed");
    } else {
      assert.equal(view.state, "completed");
      assert.equal(history.at(-1), "execution_succeeded");
      assert.deepEqual(view.result, { double: i * 2 });
    }
  }
  return { ids: Object.values(tasks).sort(), requests };
}

test("an agent sends its reports in batches, no report on its own", async () => {
  for (const startOnClaim of [true, false]) {
    const { ids, requests } = await runMany(24, { startOnClaim });
    assert.deepEqual(singleReports(requests), [], "no single report endpoint");
    const sent = batches(requests);
    assert.ok(sent.length > 0 && sent.every((b) => b.length >= 1 && b.length <= REPORTS_PER_BATCH_MAX));
    const items = sent.flat();
    const of = (kind) => items.filter((r) => r.report === kind).map((r) => r.task).sort();
    assert.deepEqual([...of("succeeded"), ...of("failed")].sort(), ids, "one outcome per task");
    assert.deepEqual(of("started"), startOnClaim ? [] : ids);
  }
});

test("with batchReports false, each report is its own request", async () => {
  const { ids, requests } = await runMany(6, { batchReports: false, startOnClaim: false });
  assert.deepEqual(batches(requests), []);
  const kinds = singleReports(requests).map((r) => r.path.split("/").at(-1));
  assert.equal(kinds.filter((k) => k === "started").length, ids.length);
  assert.equal(kinds.filter((k) => k === "succeeded" || k === "failed").length, ids.length);
});

test("large results are batched within the byte cap: no batch refused whole (413)", async () => {
  // About 600 KB of JSON per result: 14 of them in one request would pass the server's 8 MiB
  // body limit, and an agent of concurrency 16 has that many to report at once.
  const count = 32;
  const result = (i) => ({ i, blob: i.toString(16).padStart(600_000, "z") });
  const client = new Client(server.url);
  const capability = `large-${randomUUID()}`;
  const { requests, fetch } = recordingFetch();
  const agent = new Agent("large", { url: server.url, claimWaitMs: 200, concurrency: 16, logger: null, fetch });
  agent.task(capability, async (input) => {
    // Held a while, so that a round's results are reported together.
    await new Promise((resolve) => setTimeout(resolve, 500));
    return result(input);
  });
  const specs = Array.from({ length: count }, (_, i) => ({ key: `t${i}`, capabilities: [capability], input: i }));
  const { workflow, tasks } = await client.submitWorkflow(specs);
  const ended = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 60_000 }));

  assert.equal(ended.status, "completed");
  for (const id of Object.values(tasks)) assert.equal((await client.getTask(id)).state, "completed", "no result refused");
  assert.deepEqual((await client.getTask(tasks.t7)).result, result(7), "stored intact");
  const statuses = {};
  for (const r of requests) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  assert.equal(statuses[413], undefined, JSON.stringify(statuses));
  assert.ok(statuses[200] > 0);
  const sent = batches(requests);
  const bytes = (b) => b.reduce((sum, r) => sum + Buffer.byteLength(JSON.stringify(r)), 0);
  assert.ok(Math.max(...sent.map(bytes)) <= BATCH_BYTES_MAX, "within the cap");
  const succeeded = sent.flat().filter((r) => r.report === "succeeded");
  assert.deepEqual(succeeded.map((r) => r.task).sort(), Object.values(tasks).sort());
  assert.equal(Math.max(...sent.map((b) => b.filter((r) => r.report === "succeeded").length)), 1);
});
