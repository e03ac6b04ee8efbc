// Shared by the tests: a server per test file, and small waiting helpers.
import { after, before } from "node:test";
import { startServer } from "../scripts/server.mjs";

/**
 * Starts a server in a temp dir before the file's tests and stops it after them; the returned
 * object's `url` is set once it runs.
 */
export function useServer(args = []) {
  const handle = { url: "" };
  let server;
  before(async () => {
    server = await startServer(args);
    handle.url = server.url;
  });
  after(async () => {
    await server?.stop();
  });
  return handle;
}

/** Polls `check` until it returns something truthy; rejects after `timeoutMs`. */
export async function eventually(check, { timeoutMs = 10_000, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

/** A promise with its resolve function, for handlers that wait on the test. */
export function deferred() {
  let resolve;
  const promise = new Promise((ok) => (resolve = ok));
  return { promise, resolve };
}

/** Runs `agent` while `body` runs, and stops it (gracefully) whatever happens. */
export async function withAgent(agent, body) {
  const running = agent.run();
  try {
    return await body();
  } finally {
    await agent.stop();
    await running;
  }
}
