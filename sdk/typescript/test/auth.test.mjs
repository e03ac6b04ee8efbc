import assert from "node:assert/strict";
import { test } from "node:test";
import { Agent, Client, Forbidden, Unauthorized } from "../dist/index.js";
import { useServer, withAgent } from "./helpers.mjs";

const server = useServer([
  "--operator-token",
  "op-secret",
  "--viewer-token",
  "view-secret",
  "--agent-token",
  "worker-*=agent-secret",
]);

test("tokens are sent as bearer tokens; a missing one is Unauthorized, a weak one Forbidden", async () => {
  const anonymous = new Client(server.url, { token: "" });
  const unauthorized = await anonymous.counts().catch((e) => e);
  assert.ok(unauthorized instanceof Unauthorized, String(unauthorized));
  assert.equal(unauthorized.status, 401);

  const viewer = new Client(server.url, { token: "view-secret" });
  assert.equal((await viewer.counts()).total, 0);
  const forbidden = await viewer.submitTask({ key: "t" }).catch((e) => e);
  assert.ok(forbidden instanceof Forbidden, String(forbidden));
  assert.equal(forbidden.status, 403);

  const operator = new Client(server.url, { token: "op-secret" });
  const { workflow } = await operator.submitTask({ key: "t", capabilities: ["tokened"] });
  const agent = new Agent("worker-1", { url: server.url, token: "agent-secret", claimWaitMs: 300, logger: null });
  agent.task("tokened", () => ({ ok: true }));
  const view = await withAgent(agent, () => operator.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(view.status, "completed");
});
