import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client, InvalidRequest, NotFound } from "../dist/index.js";
import { deferred, eventually, useServer, withAgent } from "./helpers.mjs";

const server = useServer();
const HOUR_MS = 3_600_000;

test("rate limits are set, listed, changed and deleted", async () => {
  const client = new Client(server.url);
  const created = await client.setLimit("openai", { units: 3000, perMs: 60_000 });
  assert.equal(created.key, "openai");
  assert.equal(created.units, 3000);
  assert.equal(created.per_ms, 60_000);
  assert.equal(created.available, 3000);
  assert.equal(created.parked, 0);

  const changed = await client.setLimit("openai", { units: 10, perMs: 1000 });
  assert.equal(changed.units, 10);
  assert.equal((await client.limit("openai")).per_ms, 1000);
  assert.deepEqual(
    (await client.limits()).map((l) => [l.key, l.units]),
    [["openai", 10]],
  );

  await client.deleteLimit("openai");
  assert.deepEqual(await client.limits(), []);
  for (const gone of [() => client.limit("openai"), () => client.deleteLimit("openai")]) {
    const err = await gone().then(() => assert.fail("found"), (e) => e);
    assert.ok(err instanceof NotFound, String(err));
    assert.equal(err.code, "limit_not_found");
  }
});

test("a bad limit, or a task naming an unknown one, is refused naming the field", async () => {
  const client = new Client(server.url);
  const units = await client.setLimit("bad", { units: 0, perMs: 1000 }).catch((e) => e);
  assert.ok(units instanceof InvalidRequest, String(units));
  assert.equal(units.status, 422);
  assert.equal(units.field, "units");
  const perMs = await client.setLimit("bad", { units: 1, perMs: 0 }).catch((e) => e);
  assert.equal(perMs.field, "per_ms");

  const unknown = await client.submitWorkflow([{ key: "a", rate: [{ key: "nowhere" }] }]).catch((e) => e);
  assert.ok(unknown instanceof InvalidRequest, String(unknown));
  assert.equal(unknown.field, "tasks[0].rate[0].key");
});

test("tasks beyond a rate limit wait, rate_limited, until the limit is deleted", async () => {
  const client = new Client(server.url);
  await client.setLimit("llm", { units: 2, perMs: HOUR_MS });
  const release = deferred();
  const ran = [];
  const agent = new Agent("rated", { url: server.url, concurrency: 3, claimWaitMs: 300, logger: null });
  agent.task("rated", async (_input, ctx) => {
    ran.push(ctx.key);
    await release.promise;
    return { ok: true };
  });
  const { workflow, tasks } = await client.submitWorkflow(
    ["a", "b", "c"].map((key) => ({ key, capabilities: ["rated"], rate: [{ key: "llm", units: 1 }] })),
  );

  await withAgent(agent, async () => {
    await eventually(() => ran.length === 2, { what: "two tasks to run" });
    const [heldBack] = Object.keys(tasks).filter((key) => !ran.includes(key));
    const view = await eventually(async () => {
      const task = await client.getTask(tasks[heldBack]);
      return task.waiting?.reason === "rate_limited" && task;
    }, { what: "the third task to wait for the limit" });
    assert.equal(view.state, "pending");
    assert.equal(view.waiting.limit, "llm");
    assert.equal(view.waiting.units, 1);
    assert.equal(view.waiting.available, 0);
    assert.ok(view.waiting.until > Date.now());
    const bucket = await client.limit("llm");
    assert.equal(bucket.available, 0);
    assert.equal(bucket.parked, 1);

    await client.deleteLimit("llm");
    await eventually(() => ran.length === 3, { what: "the third task to run" });
    release.resolve();
    const done = await client.waitWorkflow(workflow, { timeoutMs: 15_000 });
    assert.equal(done.status, "completed");
  });
});
