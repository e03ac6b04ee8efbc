import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import {
  BatonError,
  Client,
  Conflict,
  ConnectionFailed,
  InvalidRequest,
  NotFound,
  Unavailable,
  errorFromResponse,
} from "../dist/index.js";
import { useServer } from "./helpers.mjs";

const server = useServer();

test("a 422 is an InvalidRequest naming the field at fault", async () => {
  const client = new Client(server.url);
  const err = await client
    .submitWorkflow([{ key: "a", retry: { max_attempts: 0 } }])
    .then(() => assert.fail("accepted"), (e) => e);
  assert.ok(err instanceof InvalidRequest);
  assert.ok(err instanceof BatonError);
  assert.equal(err.status, 422);
  assert.equal(err.field, "tasks[0].retry.max_attempts");
  assert.ok(err.code);
  assert.ok(err.detail);
  assert.ok(err.expected);
  assert.equal(err.problem.status, 422);
});

test("a dependency cycle is refused with its keys", async () => {
  const client = new Client(server.url);
  const err = await client
    .submitWorkflow([
      { key: "a", depends_on: ["b"] },
      { key: "b", depends_on: ["a"] },
    ])
    .then(() => assert.fail("accepted"), (e) => e);
  assert.ok(err instanceof InvalidRequest);
  assert.equal(err.code, "cycle");
  assert.deepEqual([...new Set(err.cycle)].sort(), ["a", "b"]);
});

test("an unknown task is NotFound; a control without a reason is refused", async () => {
  const client = new Client(server.url);
  const missing = await client.getTask(randomUUID()).catch((e) => e);
  assert.ok(missing instanceof NotFound);
  assert.equal(missing.status, 404);

  const { task } = await client.submitTask({ key: "t", capabilities: ["nobody"] });
  const noReason = await client.pauseTask(task, "").catch((e) => e);
  assert.ok(noReason instanceof InvalidRequest, String(noReason));
  assert.equal(noReason.field, "reason");
});

test("a second idempotent submission that differs is a Conflict", async () => {
  const client = new Client(server.url);
  await client.submitTask({ key: "x", capabilities: ["nobody"] }, { idempotencyKey: "k" });
  const err = await client.submitTask({ key: "y", capabilities: ["nobody"] }, { idempotencyKey: "k" }).catch((e) => e);
  assert.ok(err instanceof Conflict);
  assert.equal(err.code, "idempotency_mismatch");
});

test("no server is a ConnectionFailed with status 0", async () => {
  const client = new Client("http://127.0.0.1:9", { requestTimeoutMs: 2000 });
  const err = await client.counts().catch((e) => e);
  assert.ok(err instanceof ConnectionFailed);
  assert.equal(err.status, 0);
});

test("a 503 is Unavailable with the server's Retry-After", () => {
  const err = errorFromResponse(503, { code: "overloaded", detail: "busy", status: 503 }, "2");
  assert.ok(err instanceof Unavailable);
  assert.equal(err.retryAfter, 2);
  assert.equal(err.code, "overloaded");
  const plain = errorFromResponse(502, "Bad Gateway");
  assert.equal(plain.code, "http_502");
  assert.equal(plain.constructor, BatonError);
});
