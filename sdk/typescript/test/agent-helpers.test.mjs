import assert from "node:assert/strict";
import { test } from "node:test";
import { BEAT_MIN_MS, NonRetryableError, beatInterval, failureOf } from "../dist/index.js";

test("heartbeats come at a third of the time left before the deadline, within bounds", () => {
  const now = 1_000_000;
  assert.equal(beatInterval(now + 9_000, now, 10_000), 3_000);
  assert.equal(beatInterval(now + 90_000, now, 10_000), 10_000);
  assert.equal(beatInterval(now + 300, now, 10_000), BEAT_MIN_MS);
  assert.equal(beatInterval(now - 5_000, now, 10_000), BEAT_MIN_MS);
  assert.equal(beatInterval(null, now, 10_000), 10_000);
});

test("a handler's error is reported with its kind, message and whether it may be retried", () => {
  const plain = failureOf(new RangeError("out of range"));
  assert.deepEqual(plain, { kind: "RangeError", message: "out of range", retryable: true });
  const kinded = Object.assign(new Error("slow down"), { kind: "rate_limited" });
  assert.equal(failureOf(kinded).kind, "rate_limited");
  const final = failureOf(new NonRetryableError("bad input", { kind: "invalid_input" }));
  assert.deepEqual(final, { kind: "invalid_input", message: "bad input", retryable: false });
  assert.equal(failureOf(new NonRetryableError("no kind")).kind, "NonRetryableError");
  assert.deepEqual(failureOf("a string"), { kind: "Error", message: "a string", retryable: true });
  assert.equal(failureOf(new Error("x".repeat(10_000))).message.length, 8192);
});
