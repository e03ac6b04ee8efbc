// The report batcher alone (src/batch.ts), with stand-in senders, no server: a lone report goes
// at once, reports queued while a batch is in flight go together in the next one, a request that
// fails as a whole rejects every report in it, and a batch stays within BATCH_BYTES_MAX bytes of
// JSON (a report larger on its own goes alone, through its own endpoint).
import assert from "node:assert/strict";
import { test } from "node:test";
import { BATCH_BYTES_MAX, REPORTS_PER_BATCH_MAX, ReportBatcher, reportBytes } from "../dist/batch.js";
import { InvalidRequest, Unavailable } from "../dist/index.js";

const answer = (report) => ({ task: report.task, state: "executing", version: 1, attempt: 1, token: 1, cancelled: false });
const small = (task) => ({ report: "heartbeat", task, agent: "agent-1", token: 1 });

/** A `succeeded` report whose JSON is `size` bytes (UTF-8). */
function sized(task, size) {
  const empty = { report: "succeeded", task, agent: "agent-1", token: 1, result: "" };
  return { ...empty, result: "x".repeat(size - reportBytes(empty)) };
}

/**
 * Stand-in senders: each call (a batch's tasks, or `alone:<task>`) is kept in `calls` and waits
 * until `next()` answers it (`fail`: with that error instead).
 */
function heldSenders() {
  const calls = [];
  const waiting = [];
  let moved = () => {};
  const held = (call, value) => {
    calls.push(call);
    moved();
    return new Promise((resolve, reject) => waiting.push({ resolve: () => resolve(value), reject }));
  };
  return {
    calls,
    send: (reports) => held(reports.map((r) => r.task), reports.map(answer)),
    sendOne: (report) => held(`alone:${report.task}`, answer(report)),
    /** Answers the call in flight (or fails it), then waits for the next call, if `more`. */
    async next({ fail, more = true } = {}) {
      const count = calls.length;
      const called = new Promise((resolve) => (moved = resolve));
      const call = waiting.shift();
      if (fail) call.reject(fail);
      else call.resolve();
      if (more && calls.length === count) await called;
    },
  };
}

/** Every report's outcome, in order: its answer's task, or the error it was rejected with. */
const settle = (promises) => Promise.all(promises.map((p) => p.then((a) => a.task, (err) => err)));

test("a report is measured in UTF-8 bytes of its JSON, as sent", () => {
  const report = { report: "succeeded", task: "t", agent: "agent-1", token: 1, result: { text: "café ☃ 🎉" } };
  const sent = new TextEncoder().encode(JSON.stringify({ reports: [report] })).length;
  assert.equal(reportBytes(report), sent - '{"reports":[]}'.length);
  assert.equal(reportBytes(sized("t", 5000)), 5000);
  assert.equal(BATCH_BYTES_MAX, 1024 * 1024);
  assert.ok(reportBytes({ ...report, result: 1n }) > BATCH_BYTES_MAX, "not encodable: sent alone, to fail alone");
});

test("the batcher sends at once, then what queued meanwhile; a failed request fails each report", async () => {
  const s = heldSenders();
  const batcher = new ReportBatcher(s.send, s.sendOne, 8);
  const a = batcher.send(small("a"));
  assert.deepEqual(s.calls, [["a"]], "a lone report goes at once");
  const more = ["b", "c", "d"].map((t) => batcher.send(small(t)));
  await s.next();
  assert.deepEqual(s.calls, [["a"], ["b", "c", "d"]], "queued while a was out");
  await s.next({ fail: new Unavailable(503, "store_unavailable", "busy"), more: false });
  assert.equal((await a).task, "a");
  for (const outcome of await settle(more)) assert.ok(outcome instanceof Unavailable, "each gets the failure");
});

test("the batcher keeps each batch within BATCH_BYTES_MAX; a report over it goes alone", async () => {
  const s = heldSenders();
  const batcher = new ReportBatcher(s.send, s.sendOne, 8);
  const sent = [batcher.send(small("a"))];
  sent.push(
    batcher.send(sized("b", 600_000)),
    batcher.send(sized("c", 600_000)), // b and c together: over the cap
    batcher.send(small("d")),
    batcher.send(sized("e", BATCH_BYTES_MAX + 1)), // over the cap on its own
    batcher.send(sized("g", BATCH_BYTES_MAX / 2)),
    batcher.send(sized("h", BATCH_BYTES_MAX / 2)), // g and h: the cap exactly
    batcher.send(small("f")),
  );
  await s.next(); // a answers; b goes
  await s.next(); // b answers; c and d go
  await s.next(); // c and d answer; e goes alone
  await s.next({ fail: new InvalidRequest(400, "invalid_field", "refused") }); // e fails; g and h go
  await s.next(); // g and h answer; f goes
  await s.next({ more: false });
  assert.deepEqual(s.calls, [["a"], ["b"], ["c", "d"], "alone:e", ["g", "h"], ["f"]]);
  const outcomes = await settle(sent);
  assert.ok(outcomes[4] instanceof InvalidRequest, "the lone request's error, to it alone");
  outcomes[4] = null;
  assert.deepEqual(outcomes, ["a", "b", "c", "d", null, "g", "h", "f"]);
});

test("the batcher carries at most REPORTS_PER_BATCH_MAX reports", async () => {
  const s = heldSenders();
  const batcher = new ReportBatcher(s.send, s.sendOne, REPORTS_PER_BATCH_MAX + 10);
  const sent = [batcher.send(small("first"))];
  for (let i = 0; i < REPORTS_PER_BATCH_MAX + 5; i++) sent.push(batcher.send(small(`t${i}`)));
  await s.next();
  await s.next();
  await s.next({ more: false });
  assert.deepEqual(s.calls.map((c) => c.length), [1, REPORTS_PER_BATCH_MAX, 5]);
  assert.equal((await settle(sent)).length, REPORTS_PER_BATCH_MAX + 6);
});
