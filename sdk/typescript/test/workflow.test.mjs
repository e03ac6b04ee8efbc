import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client, NonRetryableError } from "../dist/index.js";
import { useServer, withAgent } from "./helpers.mjs";

const server = useServer();

test("an agent completes a workflow, each task seeing its dependencies' results", async () => {
  const client = new Client(server.url);
  const seen = [];
  const agent = new Agent("worker", { url: server.url, claimWaitMs: 500, logger: null });
  agent.task(null, async (input, ctx) => {
    seen.push({ key: ctx.key, attempt: ctx.attempt, workflow: ctx.workflowId, upstream: ctx.upstream });
    if (ctx.key === "plan") return { steps: input.n };
    return { total: ctx.upstream.plan.steps * 2 };
  });
  const tasks = [
    { key: "plan", input: { n: 21 } },
    { key: "write", depends_on: ["plan"] },
  ];
  const options = {
    name: "ts-sdk",
    idempotencyKey: "wf-1",
    labels: { team: "sdk" },
    outputs: { answer: { $from: "write", pointer: "/total" } },
  };
  const created = await client.submitWorkflow(tasks, options);
  assert.equal(created.created, true);
  const view = await withAgent(agent, () => client.waitWorkflow(created.workflow, { timeoutMs: 15_000 }));

  assert.equal(view.status, "completed");
  assert.deepEqual(view.result, { answer: 42 });
  assert.equal(view.counts.completed, 2);
  assert.deepEqual(
    seen.map((s) => s.key),
    ["plan", "write"],
  );
  assert.deepEqual(seen[1].upstream, { plan: { steps: 21 } });
  assert.equal(seen[0].workflow, created.workflow);
  assert.equal(seen[0].attempt, 1);
  const write = await client.getTask(created.tasks.write);
  assert.equal(write.state, "completed");
  assert.deepEqual(write.result, { total: 42 });

  const again = await client.submitWorkflow(tasks, options);
  assert.equal(again.created, false);
  assert.equal(again.workflow, created.workflow);

  const listed = await client.listWorkflows({ label: "team:sdk", status: "completed" });
  assert.deepEqual(
    listed.workflows.map((w) => w.id),
    [created.workflow],
  );
  assert.equal((await client.listWorkflows({ name: "nothing-like-it" })).workflows.length, 0);
  assert.equal((await client.listTasks({ workflow: created.workflow })).tasks.length, 2);
  const counts = await client.counts(created.workflow);
  assert.equal(counts.completed, 2);
  assert.equal(counts.total, 2);
});

test("a thrown error fails the attempt with its kind; a NonRetryableError fails the task for good", async () => {
  const client = new Client(server.url);
  const agent = new Agent("failing", { url: server.url, claimWaitMs: 500, logger: null });
  agent.task("flaky", (_input, ctx) => {
    if (ctx.attempt === 1) {
      const err = new Error("rate limited");
      err.kind = "rate_limit";
      throw err;
    }
    return undefined;
  });
  agent.task("doomed", () => {
    throw new NonRetryableError("bad input", { kind: "invalid_input" });
  });
  const flaky = await client.submitTask({
    key: "flaky",
    capabilities: ["flaky"],
    retry: { max_attempts: 3, initial_backoff_ms: 10 },
  });
  const doomed = await client.submitTask({ key: "doomed", capabilities: ["doomed"], retry: { max_attempts: 3 } });
  const [flakyView, doomedView] = await withAgent(agent, () =>
    Promise.all([
      client.waitWorkflow(flaky.workflow, { timeoutMs: 15_000 }),
      client.waitWorkflow(doomed.workflow, { timeoutMs: 15_000 }),
    ]),
  );

  assert.equal(flakyView.status, "completed");
  const flakyTask = await client.getTask(flaky.task);
  assert.deepEqual(flakyTask.result, {});
  assert.equal(flakyTask.attempt, 2);
  assert.equal(flakyTask.errors[0].kind, "rate_limit");
  assert.equal(flakyTask.errors[0].message, "rate limited");
  assert.equal(doomedView.status, "failed");
  const doomedTask = await client.getTask(doomed.task);
  assert.equal(doomedTask.attempt, 1);
  assert.equal(doomedTask.errors.at(-1).kind, "invalid_input");
  assert.equal(doomedTask.errors.at(-1).message, "bad input");
});

test("agents are listed a page at a time, by id", async () => {
  const client = new Client(server.url);
  const mine = new Set();
  for (let i = 0; i < 3; i++) {
    const body = { name: `pager-${i}`, capabilities: ["pager"] };
    const agent = await client.http.json({ method: "POST", path: "/v1/agents", body });
    mine.add(agent.id);
  }
  const seen = [];
  let after;
  for (;;) {
    const page = await client.listAgents({ after, limit: 2 });
    assert.ok(page.agents.length <= 2);
    seen.push(...page.agents);
    if (page.next === undefined || page.next === null) break;
    assert.equal(page.next, page.agents.at(-1).id);
    after = page.next;
  }
  const ids = seen.map((a) => a.id);
  assert.deepEqual(ids, [...ids].sort(), "by id");
  assert.equal(new Set(ids).size, ids.length, "each once");
  for (const id of mine) assert.ok(ids.includes(id));
  assert.ok(seen.filter((a) => mine.has(a.id)).every((a) => a.registered_by === "local"));
  const every = [];
  for await (const a of client.iterAgents(2)) every.push(a.id);
  assert.deepEqual(every, ids);
  assert.deepEqual(
    (await client.agents()).map((a) => a.id),
    ids,
  );
  await assert.rejects(client.listAgents({ limit: 0 }), (err) => err.status === 400 && err.field === "limit");
});
