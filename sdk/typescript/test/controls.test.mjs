import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client, TaskAbortedError } from "../dist/index.js";
import { deferred, eventually, useServer, withAgent } from "./helpers.mjs";

const server = useServer();

/** An agent whose handler waits for its signal, then says why it was aborted. */
function waitingAgent(capability, seen) {
  const agent = new Agent(`waiter-${capability}`, {
    url: server.url,
    claimWaitMs: 300,
    heartbeatMaxIntervalMs: 200,
    logger: null,
  });
  agent.task(capability, (input, ctx) => {
    seen.push(ctx);
    if (input?.quick) return { done: true };
    return new Promise((_ok, fail) => {
      ctx.signal.addEventListener("abort", () => fail(ctx.signal.reason), { once: true });
    });
  });
  return agent;
}

test("an operator cancel aborts the handler's signal with task_cancelled", async () => {
  const client = new Client(server.url);
  const seen = [];
  const agent = waitingAgent("cancellable", seen);
  const { task } = await client.submitTask({ key: "long", capabilities: ["cancellable"] });
  await withAgent(agent, async () => {
    await eventually(async () => (await client.getTask(task)).state === "executing", { what: "executing" });
    await client.cancelTask(task, "no longer needed");
    await eventually(() => seen[0]?.signal.aborted, { what: "the handler's signal" });
  });
  assert.ok(seen[0].signal.reason instanceof TaskAbortedError);
  assert.equal(seen[0].cancelReason, "task_cancelled");
  assert.equal((await client.getTask(task)).state, "cancelled");
  const audit = await client.audit({ action: "cancel" });
  assert.ok(audit.entries.some((e) => e.task === task && e.reason === "no longer needed"));
});

test("pausing a running task now takes it back (task_paused); resumed, it runs again", async () => {
  const client = new Client(server.url);
  const seen = [];
  const agent = waitingAgent("pausable", seen);
  const { task, workflow } = await client.submitTask({ key: "p", capabilities: ["pausable"], input: {} });
  await withAgent(agent, async () => {
    await eventually(async () => (await client.getTask(task)).state === "executing", { what: "executing" });
    await client.pauseTask(task, "hold on", { now: true });
    await eventually(() => seen[0]?.signal.aborted, { what: "the handler's signal" });
    assert.equal(seen[0].cancelReason, "task_paused");
    await client.rerunTask(task, "dry run", { dryRun: true });
    await client.resumeTask(task, "go", {});
    await eventually(() => seen.length === 2, { what: "a second run" });
    await client.cancelWorkflow(workflow, "done with it");
  });
});

test("skip, fail, retry, rerun, workflow pause and resume, and signals", async () => {
  const client = new Client(server.url);
  const created = await client.submitWorkflow([
    { key: "a", capabilities: ["nobody"] },
    { key: "b", capabilities: ["nobody"] },
    { key: "gate", wait_for: { signal: "approve" } },
  ]);
  const { a, b, gate } = created.tasks;
  await client.pauseWorkflow(created.workflow, "freeze");
  assert.ok((await client.getWorkflow(created.workflow)).paused);
  const resumed = await client.resumeWorkflow(created.workflow, "thaw");
  assert.equal(resumed.workflow, created.workflow);

  await client.skipTask(a, "done by hand", { by: "hand" });
  assert.deepEqual((await client.getTask(a)).result, { by: "hand" });
  await client.failTask(b, "broken", { kind: "manual" });
  const failed = await client.getTask(b);
  assert.equal(failed.state, "failed");
  assert.equal(failed.errors.at(-1).kind, "manual");
  await client.retryTask(b);
  assert.notEqual((await client.getTask(b)).state, "failed");
  await client.skipTask(b, "done by hand", { by: "hand" });

  const sent = await client.signal(created.workflow, "approve", { ok: true }, { by: "reviewer" });
  assert.ok(sent.created);
  await eventually(async () => (await client.getTask(gate)).state === "completed", { what: "the gate" });
  const view = await client.waitWorkflow(created.workflow, { timeoutMs: 5000 });
  assert.equal(view.status, "completed");

  const rerun = await client.rerunTask(a, "again", { dryRun: true });
  assert.ok(rerun);
  assert.throws(() => client.signal(created.workflow, "x", { a: 1 }, { reject: "no" }), TypeError);
});

test("a handler that finishes in time is reported even when the agent is told to stop", async () => {
  const client = new Client(server.url);
  const gate = deferred();
  const agent = new Agent("graceful", { url: server.url, claimWaitMs: 300, shutdownGraceMs: 10_000, logger: null });
  agent.task("finish", async () => {
    await gate.promise;
    return { finished: true };
  });
  const { task } = await client.submitTask({ key: "f", capabilities: ["finish"] });
  const running = agent.run();
  await eventually(async () => (await client.getTask(task)).state === "executing", { what: "executing" });
  const stopped = agent.stop();
  setTimeout(() => gate.resolve(), 200);
  await stopped;
  await running;
  const view = await client.getTask(task);
  assert.equal(view.state, "completed");
  assert.deepEqual(view.result, { finished: true });
});
