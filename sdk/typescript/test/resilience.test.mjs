import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Agent, Client } from "../dist/index.js";
import { startServer } from "../scripts/server.mjs";
import { eventually, useServer, withAgent } from "./helpers.mjs";

const server = useServer();

/** A fetch that fails the first `count` requests whose path ends with `suffix`, as `how` says. */
function failingFetch(failures) {
  return async (url, init) => {
    const path = new URL(url).pathname;
    const rule = failures.find((f) => path.endsWith(f.suffix) && f.count > 0);
    if (rule) {
      rule.count -= 1;
      rule.seen = (rule.seen ?? 0) + 1;
      if (rule.how === "network") throw new TypeError("fetch failed");
      return new Response(JSON.stringify({ code: "unavailable", detail: "busy", status: 503 }), {
        status: 503,
        headers: { "content-type": "application/problem+json", "retry-after": "0.05" },
      });
    }
    return fetch(url, init);
  };
}

/** Runs one task with an agent whose fetch fails as `failures` say; checks it completed once. */
async function runThrough(failures, options) {
  const client = new Client(server.url);
  // Reports `started` itself (no start on claim), so that that report's retries are covered too.
  const agent = new Agent("unlucky", {
    url: server.url,
    claimWaitMs: 300,
    startOnClaim: false,
    logger: null,
    fetch: failingFetch(failures),
    ...options,
  });
  const capability = `retry-${randomUUID()}`;
  agent.task(capability, (input) => ({ echoed: input }));
  const { workflow, task } = await client.submitTask({ key: "r", capabilities: [capability], input: { n: 1 } });
  const view = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(view.status, "completed");
  const done = await client.getTask(task);
  assert.deepEqual(done.result, { echoed: { n: 1 } });
  assert.equal(done.attempt, 1);
  for (const rule of failures) assert.equal(rule.count, 0, `${rule.suffix} failed as planned`);
}

test("connection failures and 503s are tried again: registration, claims, reports", async () => {
  await runThrough(
    [
      { suffix: "/v1/agents", how: "network", count: 2 },
      { suffix: "/claim", how: "503", count: 2 },
      { suffix: "/started", how: "network", count: 1 },
      { suffix: "/succeeded", how: "503", count: 2 },
    ],
    { batchReports: false },
  );
});

test("a batch of reports that fails as a whole is tried again, report by report", async () => {
  await runThrough([
    { suffix: "/v1/reports", how: "network", count: 1 },
    { suffix: "/v1/reports", how: "503", count: 2 },
  ]);
});

/** A logger that keeps the agent's lines. */
function keptLog() {
  const lines = [];
  return { lines, logger: { info: (m) => lines.push(m), warn: (m) => lines.push(m) } };
}

test("an agent the server forgot registers again as a new agent and goes on under the new id", async () => {
  let baton = await startServer();
  const port = Number(new URL(baton.url).port);
  const { lines, logger } = keptLog();
  const agent = new Agent("forgotten", { url: baton.url, claimWaitMs: 200, logger });
  agent.task("recover", (_input, ctx) => ({ agent: ctx.agentId }));
  try {
    await withAgent(agent, async () => {
      const client = new Client(baton.url);
      const before = await client.submitTask({ key: "before", capabilities: ["recover"] });
      assert.equal((await client.waitWorkflow(before.workflow, { timeoutMs: 15_000 })).status, "completed");
      const old = agent.id;
      assert.deepEqual((await client.getTask(before.task)).result, { agent: old });
      await baton.stop();
      // Same address, empty store: the agent's claims fail to connect, then the new server
      // answers that it does not know the agent.
      baton = await startServer([], { port });
      const after = await client.submitTask({ key: "after", capabilities: ["recover"] });
      assert.equal((await client.waitWorkflow(after.workflow, { timeoutMs: 30_000 })).status, "completed");
      assert.notEqual(agent.id, old, "registered again as a new agent");
      assert.deepEqual((await client.getTask(after.task)).result, { agent: agent.id }, "under its new id");
      const agents = [];
      for await (const a of client.iterAgents()) agents.push(a.id);
      assert.deepEqual(agents, [agent.id], "once");
      assert.ok(lines.includes(`Baton had forgotten agent ${old}: registered again as ${agent.id}`), lines.join("\n"));
    });
  } finally {
    await baton.stop();
  }
});

test("an agent given an id Baton does not know registers as a new agent", async () => {
  const client = new Client(server.url);
  const unknown = randomUUID();
  const { lines, logger } = keptLog();
  const agent = new Agent("stranger", { url: server.url, agentId: unknown, claimWaitMs: 300, logger });
  agent.task("fresh", (_input, ctx) => ({ agent: ctx.agentId }));
  const { workflow, task } = await client.submitTask({ key: "fresh", capabilities: ["fresh"] });
  const view = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(view.status, "completed");
  assert.ok(agent.id && agent.id !== unknown, "a new id");
  assert.deepEqual((await client.getTask(task)).result, { agent: agent.id });
  assert.equal(lines[0], `Baton has no agent ${unknown}: registering as a new agent`);
  assert.match(lines[1], new RegExp(`^agent stranger registered as ${agent.id} `));
});

test("a handler adds subtasks under its lease", async () => {
  const client = new Client(server.url);
  const agent = new Agent("planner", { url: server.url, claimWaitMs: 300, logger: null });
  agent.task("plan", async (_input, ctx) => {
    const added = await ctx.addSubtasks([
      { key: "part-1", capabilities: ["part"], input: { n: 1 } },
      { key: "part-2", capabilities: ["part"], input: { n: 2 } },
    ]);
    return { parts: Object.keys(added.tasks).sort() };
  });
  agent.task("part", (input) => ({ doubled: input.n * 2 }));
  const { workflow, task } = await client.submitTask({ key: "plan", capabilities: ["plan"] });
  const view = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(view.status, "completed");
  assert.equal(view.counts.completed, 3);
  assert.deepEqual((await client.getTask(task)).result, { parts: ["part-1", "part-2"] });
});

test("the example agent runs against a local server and stops on SIGTERM", async () => {
  const here = dirname(fileURLToPath(import.meta.url));
  const example = resolve(here, "../../../examples/typescript-agent.mjs");
  const child = spawn(process.execPath, [example], {
    env: { ...process.env, BATON_URL: server.url },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (c) => (output += c));
  child.stderr.on("data", (c) => (output += c));
  const exited = new Promise((ok) => child.once("exit", (code) => ok(code)));
  try {
    const client = new Client(server.url);
    const { workflow, task } = await client.submitTask({
      key: "summary",
      capabilities: ["summarize"],
      input: { text: "Baton tracks tasks. Agents claim them. It is durable." },
    });
    const view = await client.waitWorkflow(workflow, { timeoutMs: 15_000 });
    assert.equal(view.status, "completed", output);
    assert.deepEqual((await client.getTask(task)).result, {
      summary: "Baton tracks tasks. Agents claim them.",
      sentences: 3,
    });
    await eventually(() => output.includes("registered"), { what: "the example's log" });
  } finally {
    child.kill("SIGTERM");
  }
  assert.equal(await exited, 0, output);
});
