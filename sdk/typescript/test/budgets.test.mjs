import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client, Conflict } from "../dist/index.js";
import { eventually, useServer, withAgent } from "./helpers.mjs";

const server = useServer();

test("usage counts against a budget that pauses the workflow until the budget is raised", async () => {
  const client = new Client(server.url);
  const runs = [];
  const agent = new Agent("spender", { url: server.url, claimWaitMs: 300, heartbeatMaxIntervalMs: 200, logger: null });
  agent.task("spend", (_input, ctx) => {
    runs.push(ctx);
    if (runs.length > 1) {
      ctx.reportUsage({ tokens: 10, usd: 0.25 });
      return { spent: true };
    }
    ctx.reportUsage({ tokens: 100, usd: 0.75 });
    ctx.reportUsage({ usd: 0.5 });
    ctx.progress({ step: "expensive call done" });
    return new Promise((_ok, fail) => {
      ctx.signal.addEventListener("abort", () => fail(ctx.signal.reason), { once: true });
    });
  });
  const created = await client.submitWorkflow([{ key: "work", capabilities: ["spend"] }], {
    labels: { tenant: "acme" },
    budgets: { usd: { limit: 1 }, tokens: 10_000 },
  });

  await withAgent(agent, async () => {
    await eventually(() => runs[0]?.signal.aborted, { what: "the budget to take the task back" });
    assert.equal(runs[0].cancelReason, "task_paused");
    assert.deepEqual(runs[0].usage, { tokens: 100, usd: 1.25 });
    const paused = await client.getWorkflow(created.workflow);
    assert.ok(paused.paused);
    assert.equal(paused.usage.usd, 1.25);
    assert.deepEqual(paused.budgets.usd, { limit: 1, policy: "pause" });

    const refused = await client.resumeWorkflow(created.workflow, "keep going").catch((e) => e);
    assert.ok(refused instanceof Conflict, String(refused));
    assert.equal(refused.code, "budget_reached");

    const raised = await client.setBudgets(created.workflow, "more money", { usd: 5 });
    assert.equal(raised.budgets.usd.limit, 5);
    await client.resumeWorkflow(created.workflow, "keep going");
    const done = await client.waitWorkflow(created.workflow, { timeoutMs: 15_000 });
    assert.equal(done.status, "completed");
  });

  const view = await client.getWorkflow(created.workflow);
  assert.equal(view.usage.usd, 1.5);
  assert.equal(view.usage.tokens, 110);
  assert.deepEqual(await client.usage({ label: "tenant:acme" }), view.usage);
  assert.deepEqual(await client.usage({ label: "tenant:nobody" }), {});
});
