#!/usr/bin/env node
// A Baton agent in TypeScript's runtime, with the SDK in sdk/typescript (built first:
// `cd sdk/typescript && npm ci && npm run build`).
//
//     BATON_URL=http://127.0.0.1:7700 node examples/typescript-agent.mjs
//
// It offers `summarize`, for tasks such as
//
//     baton submit - <<'EOF'
//     tasks: [{key: summary, capabilities: [summarize], input: {text: "Baton tracks tasks. Agents claim them. It is durable."}}]
//     EOF
//
// and `researcher`, which the research tasks of examples/workflow.yaml require. Ctrl-C stops
// claiming, lets running handlers finish, and gives back what is still held.
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, NonRetryableError } from "../sdk/typescript/dist/index.js";

// The URL and token come from BATON_URL / BATON_TOKEN.
const agent = new Agent("typescript-agent", { concurrency: 4 });

agent.task("summarize", (input, ctx) => {
  const text = input?.text ?? "";
  if (!text) {
    // Fails the task at once: retrying would not give it any text.
    throw new NonRetryableError("nothing to summarize", { kind: "empty_input" });
  }
  const sentences = text.split(".").map((s) => s.trim()).filter(Boolean);
  ctx.progress({ sentences: sentences.length });
  return { summary: `${sentences.slice(0, 2).join(". ")}.`, sentences: sentences.length };
});

agent.task("researcher", async (input, ctx) => {
  if ("compensates" in input) {
    // A compensation task: undo what the failed task had started.
    return { undone: input.compensates, released: input.input?.release ?? null };
  }
  const notes = [];
  for (const angle of ["who leads", "what changed this quarter"]) {
    // Aborted once the task is cancelled or taken back, or the agent stops: whatever the
    // handler returns after that is not reported.
    await sleep(500, undefined, { signal: ctx.signal }).catch(() => {});
    if (ctx.signal.aborted) return null;
    ctx.reportUsage({ tokens: 120 });
    notes.push(`${input.topic}: ${angle}`);
  }
  // Side effects keyed by ctx.idempotencyKey happen once per attempt, however often the
  // attempt is delivered.
  return { topic: input.topic, notes, attempt: ctx.attempt };
});

const stop = new AbortController();
process.once("SIGINT", () => stop.abort());
process.once("SIGTERM", () => stop.abort());
await agent.run({ signal: stop.signal });
