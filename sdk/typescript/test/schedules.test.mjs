// Schedules and triggers: a schedule is created (cron with seconds), listed, fires, is paused,
// resumed and deleted; a trigger is registered, fired once per idempotency key with its input
// filling the template's placeholders, listed and deleted; refusals name the field at fault.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, Conflict, InvalidRequest, NotFound } from "../dist/index.js";
import { eventually, useServer } from "./helpers.mjs";

const server = useServer();

test("a schedule is created, fires, and is listed, paused, resumed and deleted", async () => {
  const client = new Client(server.url);
  const name = "every-second";
  const created = await client.createSchedule({
    name,
    cron: "*/1 * * * * *",
    // Nobody has this capability: the workflows it submits wait, and are cancelled at the end.
    workflow: { name: "ticked", tasks: [{ key: "tick", capabilities: ["nobody-here"] }], budgets: { usd: 2 } },
    overlap: "allow",
  });
  assert.equal(created.name, name);
  assert.equal(created.paused, false);
  assert.equal(created.spec.cron, "*/1 * * * * *");
  assert.equal(created.spec.timezone, "UTC");
  assert.equal(created.spec.overlap, "allow");
  assert.deepEqual(created.spec.workflow.budgets, { usd: { limit: 2, policy: "pause" } });
  // Five fire times, one a second, on whole seconds.
  assert.equal(created.next.length, 5);
  for (const [i, at] of created.next.entries()) {
    assert.equal(at % 1000, 0);
    if (i > 0) assert.equal(at - created.next[i - 1], 1000);
  }
  assert.ok(created.next[0] >= created.created_at);

  assert.deepEqual(
    (await client.schedules()).map((s) => s.name),
    [name],
  );
  // It fires: each tick submits the template once, keyed by the tick.
  const fired = await eventually(async () => (await client.schedule(name)).last_workflow, {
    what: "a tick's workflow",
    timeoutMs: 15_000,
  });
  const workflow = await client.getWorkflow(fired);
  assert.equal(workflow.name, "ticked");
  assert.match(workflow.idempotency_key, new RegExp(`^schedule:${name}:\\d+000$`));

  const paused = await client.pauseSchedule(name);
  assert.equal(paused.paused, true);
  assert.deepEqual(paused.next, []);
  assert.equal((await client.schedule(name)).paused, true);
  const resumed = await client.resumeSchedule(name);
  assert.equal(resumed.paused, false);
  assert.equal(resumed.next.length, 5);
  assert.ok(resumed.next[0] >= paused.updated_at, "resumed from its next tick after now");

  await client.deleteSchedule(name);
  await assert.rejects(client.schedule(name), (err) => err instanceof NotFound && err.code === "schedule_not_found");
  assert.deepEqual(await client.schedules(), []);
  await assert.rejects(client.deleteSchedule(name), NotFound);
  for await (const summary of client.iterTasks({ state: "pending" })) {
    await client.cancelWorkflow(summary.workflow, "test over");
  }
});

test("a bad or taken schedule is refused, naming its field", async () => {
  const client = new Client(server.url);
  const spec = { name: "nightly", cron: "every night", workflow: { tasks: [{ key: "a" }] } };
  await assert.rejects(client.createSchedule(spec), (err) => err instanceof InvalidRequest && err.field === "cron");
  await assert.rejects(client.schedule("nightly"), NotFound);
  await assert.rejects(
    client.createSchedule({ ...spec, cron: "0 0 3 * * *", timezone: "Mars/Olympus" }),
    (err) => err instanceof InvalidRequest && err.field === "timezone",
  );

  const made = await client.createSchedule({
    ...spec,
    cron: "0 30 9 * * MON-FRI",
    timezone: "Europe/Berlin",
    catch_up: { policy: "all", max: 3 },
  });
  assert.deepEqual(made.spec.catch_up, { policy: "all", max: 3 });
  for (const at of made.next) {
    const day = new Date(at).getUTCDay();
    assert.ok(day >= 1 && day <= 5, "weekdays only");
  }
  await assert.rejects(
    client.createSchedule({ ...spec, cron: "0 0 4 * * *" }),
    (err) => err instanceof Conflict && err.code === "schedule_exists",
  );
  assert.equal((await client.schedule("nightly")).spec.cron, "0 30 9 * * MON-FRI");
  await client.deleteSchedule("nightly");
});

test("a trigger fires once per idempotency key, with its input in the template", async () => {
  const client = new Client(server.url);
  const name = "on-push";
  const put = await client.putTrigger(name, {
    name: "ci",
    labels: { team: "sdk" },
    tasks: [
      {
        key: "build",
        capabilities: ["nobody-here"],
        input: { repo: { $input: "/repo" }, all: { $input: "" } },
      },
    ],
  });
  assert.equal(put.name, name);
  assert.equal(put.workflow.name, "ci");
  assert.deepEqual(
    (await client.triggers()).map((t) => t.name),
    [name],
  );
  assert.equal((await client.trigger(name)).workflow.tasks[0].key, "build");

  const first = await client.fireTrigger(name, { repo: "baton" }, { idempotencyKey: "push-1" });
  assert.equal(first.created, true);
  const second = await client.fireTrigger(name, { repo: "baton" }, { idempotencyKey: "push-1" });
  assert.equal(second.created, false);
  assert.equal(second.workflow, first.workflow);
  const fired = await client.listWorkflows({ name: "ci" });
  assert.deepEqual(
    fired.workflows.map((w) => w.id),
    [first.workflow],
    "one workflow for the key",
  );
  assert.equal(fired.workflows[0].labels.team, "sdk");
  assert.deepEqual((await client.getTask(first.tasks.build)).spec.input, {
    repo: "baton",
    all: { repo: "baton" },
  });
  await assert.rejects(
    client.fireTrigger(name, { repo: "other" }, { idempotencyKey: "push-1" }),
    (err) => err instanceof Conflict && err.code === "idempotency_mismatch",
  );
  const unkeyed = await client.fireTrigger(name, { repo: "baton" });
  assert.equal(unkeyed.created, true);
  assert.notEqual(unkeyed.workflow, first.workflow);
  await assert.rejects(
    client.fireTrigger(name, { branch: "main" }),
    (err) => err instanceof InvalidRequest && err.field === "body",
  );

  const replaced = await client.putTrigger(name, { tasks: [{ key: "deploy", capabilities: ["nobody-here"] }] });
  assert.equal(replaced.created_at, put.created_at);
  assert.equal(replaced.workflow.tasks[0].key, "deploy");

  await client.deleteTrigger(name);
  await assert.rejects(client.trigger(name), (err) => err instanceof NotFound && err.code === "trigger_not_found");
  await assert.rejects(client.fireTrigger(name, {}), (err) => err instanceof NotFound && err.code === "trigger_not_found");
  await assert.rejects(client.deleteTrigger(name), NotFound);
  assert.deepEqual(await client.triggers(), []);
  await client.cancelWorkflow(first.workflow, "test over");
  await client.cancelWorkflow(unkeyed.workflow, "test over");
});

test("schedules and triggers are listed a page at a time by name", async () => {
  const client = new Client(server.url);
  const names = ["paged/3", "paged/1", "paged/4", "paged/0", "paged/2"];
  const template = { tasks: [{ key: "a", capabilities: ["nobody-here"] }] };
  for (const name of names) {
    await client.createSchedule({ name, cron: "0 0 3 * * *", workflow: template });
    await client.putTrigger(name, template);
  }
  const first = await client.listSchedules({ limit: 2 });
  assert.equal(first.schedules.length, 2);
  assert.equal(first.next, first.schedules[1].name);
  const walked = [];
  for await (const s of client.iterSchedules(2)) walked.push(s.name);
  assert.deepEqual(walked, [...new Set(walked)].sort(), "by name, each once");
  assert.deepEqual(walked.filter((n) => n.startsWith("paged/")), [...names].sort());
  const triggers = [];
  for await (const t of client.iterTriggers(2)) triggers.push(t.name);
  assert.deepEqual(triggers.filter((n) => n.startsWith("paged/")), [...names].sort());
  assert.deepEqual((await client.triggers()).map((t) => t.name), triggers);
  const last = await client.listTriggers({ after: triggers.at(-2), limit: 5 });
  assert.deepEqual(last.triggers.map((t) => t.name), [triggers.at(-1)]);
  assert.equal(last.next, undefined, "nothing follows");
  for (const name of names) {
    await client.deleteSchedule(name);
    await client.deleteTrigger(name);
  }
});
