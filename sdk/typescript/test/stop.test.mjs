import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client } from "../dist/index.js";
import { eventually, useServer } from "./helpers.mjs";

const server = useServer();

test("a graceful stop releases a task its handler did not finish within the grace period", async () => {
  const client = new Client(server.url);
  const seen = [];
  const agent = new Agent("stopper", { url: server.url, claimWaitMs: 300, shutdownGraceMs: 300, logger: null });
  agent.task("slow", (_input, ctx) => {
    seen.push(ctx);
    return new Promise((_ok, fail) => {
      ctx.signal.addEventListener("abort", () => fail(ctx.signal.reason), { once: true });
    });
  });
  const { task } = await client.submitTask({ key: "slow", capabilities: ["slow"] });
  const running = agent.run();
  await eventually(async () => (await client.getTask(task)).state === "executing", { what: "executing" });
  const started = Date.now();
  await agent.stop();
  await running;

  assert.ok(Date.now() - started >= 300, "the handler had its grace period");
  assert.equal(seen[0].cancelReason, "agent_stopping");
  const view = await client.getTask(task);
  assert.equal(view.state, "pending");
  assert.equal(view.attempt, 1);
});

test("heartbeats keep a task alive past its heartbeat deadline", async () => {
  const client = new Client(server.url);
  const agent = new Agent("beater", { url: server.url, claimWaitMs: 300, logger: null });
  agent.task("long", async (_input, ctx) => {
    await new Promise((ok) => setTimeout(ok, 2500));
    return { aborted: ctx.signal.aborted };
  });
  const { workflow, task } = await client.submitTask({
    key: "long",
    capabilities: ["long"],
    timeouts: { heartbeat_ms: 900 },
    retry: { max_attempts: 1 },
  });
  const running = agent.run();
  try {
    const view = await client.waitWorkflow(workflow, { timeoutMs: 15_000 });
    assert.equal(view.status, "completed");
  } finally {
    await agent.stop();
    await running;
  }
  const done = await client.getTask(task);
  assert.equal(done.attempt, 1);
  assert.deepEqual(done.result, { aborted: false });
});
