import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Agent, Client } from "../dist/index.js";
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

test("connection failures and 503s are tried again: registration, claims, reports", async () => {
  const client = new Client(server.url);
  const failures = [
    { suffix: "/v1/agents", how: "network", count: 2 },
    { suffix: "/claim", how: "503", count: 2 },
    { suffix: "/started", how: "network", count: 1 },
    { suffix: "/succeeded", how: "503", count: 2 },
  ];
  const agent = new Agent("unlucky", { url: server.url, claimWaitMs: 300, logger: null, fetch: failingFetch(failures) });
  agent.task("retry", (input) => ({ echoed: input }));
  const { workflow, task } = await client.submitTask({ key: "r", capabilities: ["retry"], input: { n: 1 } });
  const view = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(view.status, "completed");
  const done = await client.getTask(task);
  assert.deepEqual(done.result, { echoed: { n: 1 } });
  assert.equal(done.attempt, 1);
  for (const rule of failures) assert.equal(rule.count, 0, `${rule.suffix} failed as planned`);
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
