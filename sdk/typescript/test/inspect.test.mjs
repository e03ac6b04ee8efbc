// Reading what happened: a task's history and its dependencies' results, a workflow's graph and
// history, every task across pages, short ids, and the lifecycle.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client, InvalidRequest, NotFound } from "../dist/index.js";
import { useServer, withAgent } from "./helpers.mjs";

const server = useServer();

test("task history, upstream results, the graph and the workflow's history", async () => {
  const client = new Client(server.url);
  const seen = {};
  const agent = new Agent("inspected", { url: server.url, claimWaitMs: 300, logger: null });
  agent.task(null, (input, ctx) => {
    seen[ctx.key] = { upstreamTasks: ctx.upstreamTasks, upstream: ctx.upstream };
    return ctx.key === "plan" ? { steps: input.n } : { done: ctx.upstream.plan.steps };
  });
  const { workflow, tasks } = await client.submitWorkflow(
    [
      { key: "plan", input: { n: 3 } },
      { key: "write", depends_on: ["plan"] },
    ],
    { name: "inspected" },
  );
  const done = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(done.status, "completed");
  assert.deepEqual(seen.write.upstreamTasks, { plan: tasks.plan });
  assert.deepEqual(seen.plan.upstreamTasks, {});

  const history = await client.taskHistory(tasks.plan);
  const kinds = history.map((h) => h.event);
  assert.equal(kinds[0], "submitted");
  for (const kind of ["submitted", "agent_assigned", "execution_started", "execution_succeeded"]) {
    assert.ok(kinds.includes(kind), `${kind} in ${kinds.join(", ")}`);
  }
  assert.ok(kinds.indexOf("agent_assigned") < kinds.indexOf("execution_started"));
  assert.ok(kinds.indexOf("execution_started") < kinds.indexOf("execution_succeeded"));
  assert.deepEqual(
    history.map((h) => h.seq),
    history.map((_h, i) => i + 1),
  );
  assert.ok(history.every((h) => typeof h.at === "number" && h.data.event === h.event));
  assert.equal(history[0].data.task, tasks.plan);
  // A 64-bit seed comes as a string: a JavaScript number would round it.
  assert.match(history[0].data.seed, /^[0-9]+$/);
  assert.equal(history[0].actor.actor, "engine");
  const succeeded = history.find((h) => h.event === "execution_succeeded");
  assert.deepEqual(succeeded.data.result, { steps: 3 });
  assert.equal(succeeded.actor.actor, "agent");
  const tail = await client.taskHistory(tasks.plan, { after: 2, limit: 2 });
  assert.deepEqual(
    tail.map((h) => h.seq),
    [3, 4],
  );
  await assert.rejects(
    client.taskHistory("01a23fd3-0000-7000-8000-000000000000"),
    (err) => err instanceof NotFound && err.code === "task_not_found",
  );

  const upstream = await client.taskUpstream(tasks.write);
  assert.deepEqual(upstream, { plan: { task: tasks.plan, result: { steps: 3 } } });
  assert.deepEqual(await client.taskUpstream(tasks.write, { key: "plan" }), upstream);
  assert.deepEqual(await client.taskUpstream(tasks.plan), {});
  await assert.rejects(
    client.taskUpstream(tasks.write, { key: "nope" }),
    (err) => err instanceof InvalidRequest && err.field === "key",
  );

  const graph = await client.workflowGraph(workflow);
  assert.equal(graph.workflow, workflow);
  assert.deepEqual(
    graph.nodes.map((n) => [n.key, n.state]).sort(),
    [
      ["plan", "completed"],
      ["write", "completed"],
    ],
  );
  assert.deepEqual(graph.edges, [{ dependency: tasks.plan, dependent: tasks.write }]);

  const wfHistory = await client.workflowHistory(workflow);
  assert.equal(wfHistory.workflow, workflow);
  assert.deepEqual(wfHistory.tasks.map((t) => t.task).sort(), [tasks.plan, tasks.write].sort());
  const planMarks = wfHistory.tasks.find((t) => t.task === tasks.plan).entries;
  assert.deepEqual(
    planMarks.map((m) => m.event),
    kinds.filter((k) => k !== "heartbeat"),
  );
  const firstPage = await client.workflowHistory(workflow, { limit: 1 });
  assert.equal(firstPage.tasks.length, 1);
  assert.ok(firstPage.next);
  const secondPage = await client.workflowHistory(workflow, { limit: 1, after: firstPage.next });
  assert.equal(secondPage.tasks.length, 1);
  assert.notEqual(secondPage.tasks[0].task, firstPage.tasks[0].task);
});

test("iterTasks walks every page", async () => {
  let requests = 0;
  const client = new Client(server.url, {
    fetch: (url, init) => {
      if (new URL(url).pathname === "/v1/tasks") requests += 1;
      return fetch(url, init);
    },
  });
  const keys = ["t1", "t2", "t3", "t4", "t5", "t6", "t7"];
  const { workflow, tasks } = await client.submitWorkflow(
    keys.map((key) => ({ key, capabilities: ["nobody-here"] })),
    { name: "paged" },
  );
  const seen = [];
  for await (const task of client.iterTasks({ workflow, pageSize: 3 })) seen.push(task);
  assert.deepEqual(
    seen.map((t) => t.id),
    keys.map((k) => tasks[k]),
    "every task once, in order",
  );
  assert.ok(seen.every((t) => t.workflow === workflow && t.state === "pending"));
  assert.equal(requests, 3, "pages of 3, 3 and 1");

  // Filters apply to every page; breaking out stops fetching.
  await client.cancelTask(tasks.t2, "filtered");
  const pending = [];
  for await (const task of client.iterTasks({ workflow, state: "pending", pageSize: 2 })) pending.push(task.key);
  assert.deepEqual(pending, ["t1", "t3", "t4", "t5", "t6", "t7"]);
  requests = 0;
  for await (const task of client.iterTasks({ workflow, pageSize: 2 })) {
    if (task.key === "t1") break;
  }
  assert.equal(requests, 1);
  await client.cancelWorkflow(workflow, "test over");
});

test("short ids and the lifecycle", async () => {
  const client = new Client(server.url);
  const { workflow, task } = await client.submitTask({ key: "short", capabilities: ["nobody-here"] });
  const suffix = task.replaceAll("-", "").slice(-8);
  const found = await client.lookupId(suffix);
  assert.deepEqual(found.tasks, [{ id: task, workflow, key: "short" }]);
  assert.equal(found.more, false);
  const byWorkflow = await client.lookupId(workflow.slice(-12));
  assert.deepEqual(
    byWorkflow.workflows.map((w) => w.id),
    [workflow],
  );
  await assert.rejects(client.lookupId("xyz"), (err) => err instanceof InvalidRequest && err.field === "suffix");

  const mermaid = await client.lifecycle();
  assert.match(mermaid, /^stateDiagram/);
  assert.match(await client.lifecycle("dot"), /^digraph/);
  const rules = await client.lifecycle("json");
  assert.ok(Array.isArray(rules) && rules.length > 10);
  assert.ok(rules.some((r) => r.event === "execution_succeeded" && r.from === "executing" && r.to === "completed"));
  await assert.rejects(client.lifecycle("svg"), (err) => err instanceof InvalidRequest && err.field === "format");
  await client.cancelWorkflow(workflow, "test over");
});
