// Claims that start their tasks (`start` in the claim's body, the agent's `startOnClaim`): the
// task comes back executing and the agent sends no `started` report.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client } from "../dist/index.js";
import { useServer, withAgent } from "./helpers.mjs";

const server = useServer();

/** A fetch that keeps every request's path and body, and the tasks of every claim's answer. */
function recordingFetch() {
  const seen = { requests: [], claimed: [] };
  const record = async (url, init) => {
    const path = new URL(url).pathname;
    seen.requests.push({ path, body: typeof init?.body === "string" ? JSON.parse(init.body) : undefined });
    const response = await fetch(url, init);
    if (path.endsWith("/claim") && response.ok) seen.claimed.push(...(await response.clone().json()).tasks);
    return response;
  };
  return { seen, fetch: record };
}

/** Runs three tasks with an agent made with `options`; what it sent and what each handler saw. */
async function runThree(client, capability, options) {
  const { seen, fetch } = recordingFetch();
  const agent = new Agent(capability, { url: server.url, claimWaitMs: 300, logger: null, fetch, ...options });
  const views = new Map();
  agent.task(capability, async (_input, ctx) => {
    views.set(ctx.taskId, await client.getTask(ctx.taskId));
    return { key: ctx.key };
  });
  const { workflow, tasks } = await client.submitWorkflow(
    ["a", "b", "c"].map((key) => ({ key, capabilities: [capability] })),
  );
  const done = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(done.status, "completed");
  const ids = Object.values(tasks);
  for (const id of ids) {
    const history = await client.taskHistory(id);
    const starts = history.filter((h) => h.event === "execution_started");
    assert.deepEqual(
      starts.map((h) => h.actor),
      [{ actor: "agent", agent: agent.id }],
      "one start, by the agent",
    );
  }
  const claims = seen.requests.filter((r) => r.path.endsWith("/claim"));
  // Batched (the default) or each on its own.
  const startedReports = [
    ...seen.requests.filter((r) => r.path.endsWith("/started")).map((r) => r.path.split("/")[3]),
    ...seen.requests
      .filter((r) => r.path === "/v1/reports")
      .flatMap((r) => r.body.reports.filter((item) => item.report === "started").map((item) => item.task)),
  ];
  return { ids, views, claims, claimed: seen.claimed, startedReports };
}

test("an agent's claims start its tasks: executing at once, and no started report", async () => {
  const client = new Client(server.url);
  const { ids, views, claims, claimed, startedReports } = await runThree(client, "starts-on-claim", { startOnClaim: true });

  assert.ok(claims.length > 0 && claims.every((c) => c.body.start === true), "claims ask to start");
  assert.deepEqual(claimed.map((c) => c.task).sort(), [...ids].sort());
  assert.deepEqual(startedReports, []);
  for (const c of claimed) {
    const view = views.get(c.task);
    assert.equal(c.started, true);
    assert.equal(view.state, "executing");
    assert.deepEqual(
      view.history.map((h) => h.event),
      ["submitted", "agent_assigned", "execution_started"],
    );
    assert.equal(c.version, view.version);
    assert.equal(typeof c.deadlines.start_to_close, "number", "the start's deadlines are running");
  }
});

test("with startOnClaim false, the agent reports each task started", async () => {
  const client = new Client(server.url);
  const { ids, claims, claimed, startedReports } = await runThree(client, "reports-started", {
    startOnClaim: false,
  });

  assert.ok(claims.every((c) => c.body.start === false));
  assert.ok(claimed.every((c) => !c.started));
  assert.deepEqual([...startedReports].sort(), [...ids].sort());
});
