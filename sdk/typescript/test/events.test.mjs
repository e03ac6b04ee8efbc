import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../dist/index.js";
import { eventually, useServer } from "./helpers.mjs";

const server = useServer();

/**
 * A fetch whose first event stream breaks once two transitions went through, as a dropped
 * connection would; it records the Last-Event-ID of every stream request.
 */
function breakingFetch(log) {
  return async (url, init) => {
    const response = await fetch(url, init);
    if (!String(url).includes("/v1/events")) return response;
    log.requests.push(new Headers(init.headers).get("last-event-id"));
    if (log.requests.length > 1) return response;
    const reader = response.body.getReader();
    let transitions = 0;
    const body = new ReadableStream({
      async pull(controller) {
        if (transitions >= 2) {
          await reader.cancel();
          controller.error(new TypeError("terminated"));
          return;
        }
        const { done, value } = await reader.read();
        if (done) return controller.close();
        transitions += new TextDecoder().decode(value).split("event: transition").length - 1;
        controller.enqueue(value);
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

test("the event stream resumes from the last event id after the connection drops", async () => {
  const log = { requests: [], items: [] };
  const client = new Client(server.url, { fetch: breakingFetch(log) });
  const operator = new Client(server.url);
  const stop = new AbortController();

  const reading = (async () => {
    for await (const item of client.events({ signal: stop.signal, reconnectDelayMs: 50 })) {
      log.items.push(item);
      if (item.type === "workflow") break;
    }
  })();
  await eventually(() => log.requests.length === 1, { what: "the stream" });
  await new Promise((ok) => setTimeout(ok, 200));
  const created = await operator.submitWorkflow([
    { key: "a", capabilities: ["nobody"] },
    { key: "b", capabilities: ["nobody"] },
    { key: "c", capabilities: ["nobody"] },
  ]);
  await eventually(() => log.requests.length === 2, { what: "a reconnection" });
  for (const id of Object.values(created.tasks)) await operator.skipTask(id, "by hand", { ok: true });
  await reading;
  stop.abort();

  const transitions = log.items.filter((i) => i.type === "transition");
  assert.equal(log.requests[0], null);
  const resumedAfter = transitions.findIndex((t) => t.id === log.requests[1]);
  assert.ok(resumedAfter >= 1, "the reconnection named a transition received before the break");
  assert.ok(resumedAfter < transitions.length - 1, "transitions came after the reconnection");
  const seqs = transitions.map((t) => t.event.seq);
  assert.deepEqual(
    seqs,
    seqs.map((_, i) => seqs[0] + i),
    "no transition lost or repeated",
  );
  for (const id of Object.values(created.tasks)) {
    assert.ok(transitions.some((t) => t.event.task === id && t.event.to === "completed"));
  }
  assert.equal(log.items.at(-1).event.workflow, created.workflow);
  assert.equal(log.items.at(-1).event.status, "completed");
});

test("events({workflow}) follows one workflow, and ends when its signal is aborted", async () => {
  const client = new Client(server.url);
  const followed = await client.submitTask({ key: "followed", capabilities: ["nobody"] });
  const stop = new AbortController();
  const items = [];
  let connected = false;
  const watching = new Client(server.url, {
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      connected = true;
      return response;
    },
  });
  const reading = (async () => {
    for await (const item of watching.events({ workflow: followed.workflow, signal: stop.signal })) items.push(item);
  })();
  await eventually(() => connected, { what: "the stream" });
  const other = await client.submitTask({ key: "other", capabilities: ["nobody"] });
  await client.skipTask(other.task, "by hand", {});
  await client.skipTask(followed.task, "by hand", {});
  await eventually(() => items.some((i) => i.type === "workflow"), { what: "the workflow's end" });
  stop.abort();
  await reading;
  assert.ok(items.length >= 2);
  for (const item of items) assert.equal(item.event.workflow, followed.workflow);
});
