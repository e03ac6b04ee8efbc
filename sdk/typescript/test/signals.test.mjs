// Signals: the tasks waiting for a signal are listed across workflows (paged), a signal
// completes them and leaves them, the signals sent to a workflow are listed; a signal no task
// waits for yet is kept for the next that does.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, InvalidRequest } from "../dist/index.js";
import { eventually, useServer } from "./helpers.mjs";

const server = useServer();

test("a task waiting for a signal shows in waiting, and the signal completes it", async () => {
  const client = new Client(server.url);
  const approval = await client.submitWorkflow(
    [
      { key: "approve", wait_for: { signal: "approved", timeout_ms: 600_000 }, input: { doc: "budget.pdf" } },
      { key: "publish", depends_on: ["approve"], capabilities: ["nobody-here"] },
    ],
    { name: "approval" },
  );
  const other = await client.submitWorkflow([{ key: "sign", wait_for: { signal: "signed" } }], { name: "contract" });

  const all = await client.waiting();
  assert.deepEqual(all.tasks.map((t) => t.id).sort(), [approval.tasks.approve, other.tasks.sign].sort());
  const mine = await client.waiting({ workflow: approval.workflow });
  assert.equal(mine.tasks.length, 1);
  const waiting = mine.tasks[0];
  assert.equal(waiting.id, approval.tasks.approve);
  assert.equal(waiting.workflow, approval.workflow);
  assert.equal(waiting.workflow_name, "approval");
  assert.equal(waiting.key, "approve");
  assert.equal(waiting.signal, "approved");
  assert.deepEqual(waiting.input, { doc: "budget.pdf" });
  assert.equal(typeof waiting.until, "number", "a wait with a timeout says until when");
  assert.ok(waiting.until > waiting.since);
  assert.equal(mine.next ?? null, null);

  const sent = await client.signal(approval.workflow, "approved", { by: "alice", ok: true });
  assert.equal(sent.created, true);
  assert.deepEqual(sent.delivered_to, [{ id: approval.tasks.approve, key: "approve", state: "completed" }]);
  const approved = await client.getTask(approval.tasks.approve);
  assert.equal(approved.state, "completed");
  assert.deepEqual(approved.result, { by: "alice", ok: true });
  assert.deepEqual(
    (await client.waiting()).tasks.map((t) => t.id),
    [other.tasks.sign],
  );
  assert.deepEqual((await client.waiting({ workflow: approval.workflow })).tasks, []);

  const signals = await client.signals(approval.workflow);
  assert.equal(signals.signals.length, 1);
  const [view] = signals.signals;
  assert.equal(view.name, "approved");
  assert.equal(view.workflow, approval.workflow);
  assert.deepEqual(view.data, { by: "alice", ok: true });
  assert.equal(typeof view.delivered_at, "number");
  assert.equal(view.sent_by, "local");

  // The dependent now has the signal's data as its dependency's result.
  assert.deepEqual(await client.taskUpstream(approval.tasks.publish), {
    approve: { task: approval.tasks.approve, result: { by: "alice", ok: true } },
  });

  const rejected = await client.signal(other.workflow, "signed", undefined, { reject: "not this one" });
  assert.deepEqual(
    rejected.delivered_to.map((d) => d.state),
    ["failed"],
  );
  assert.equal((await client.signals(other.workflow)).signals[0].reject, "not this one");
  assert.deepEqual((await client.waiting()).tasks, []);
  await client.cancelWorkflow(approval.workflow, "test over");
});

test("waiting and signals page; a signal sent early is kept for the task to come", async () => {
  const client = new Client(server.url);
  const { workflow, tasks } = await client.submitWorkflow(
    [
      ...["a", "b", "c"].map((key) => ({ key, wait_for: { signal: `go-${key}` } })),
      // Waits only once `a` has completed.
      { key: "later", depends_on: ["a"], wait_for: { signal: "go-later" } },
    ],
    { name: "many-waits" },
  );
  const waits = [tasks.a, tasks.b, tasks.c];
  const first = await client.waiting({ workflow, limit: 2 });
  assert.equal(first.tasks.length, 2);
  assert.ok(first.next, "a full page says where the next starts");
  const second = await client.waiting({ workflow, limit: 2, after: first.next });
  assert.equal(second.tasks.length, 1);
  assert.deepEqual(
    [...first.tasks, ...second.tasks].map((t) => t.id).sort(),
    waits.sort(),
  );
  await assert.rejects(client.waiting({ limit: 0 }), (err) => err instanceof InvalidRequest && err.field === "limit");

  // Sent before anything waits for it: kept (not delivered) until a task waits.
  const early = await client.signal(workflow, "go-later", { n: 1 });
  assert.deepEqual(early.delivered_to, []);
  assert.equal(early.signal.delivered_at ?? null, null);
  for (const key of ["a", "b", "c"]) await client.signal(workflow, `go-${key}`, { key });
  const page = await client.signals(workflow, { limit: 3 });
  assert.deepEqual(
    page.signals.map((s) => s.name),
    ["go-later", "go-a", "go-b"],
  );
  assert.equal(typeof page.next, "number");
  const rest = await client.signals(workflow, { after: page.next });
  assert.deepEqual(
    rest.signals.map((s) => s.name),
    ["go-c"],
  );
  // `later` started waiting once `a` completed, and took the signal kept for it.
  const later = await eventually(async () => {
    const view = await client.getTask(tasks.later);
    return view.state === "completed" && view;
  }, { what: "the later task to complete" });
  assert.deepEqual(later.result, { n: 1 });
  assert.equal(typeof (await client.signals(workflow, { limit: 1 })).signals[0].delivered_at, "number");
  assert.equal((await client.getWorkflow(workflow)).status, "completed");

  // Another workflow's signal is not its own: it still waits.
  const elsewhere = await client.submitWorkflow([{ key: "late", wait_for: { signal: "go-later" } }]);
  assert.equal((await client.getTask(elsewhere.tasks.late)).state, "pending");
  await client.cancelWorkflow(elsewhere.workflow, "test over");
});
