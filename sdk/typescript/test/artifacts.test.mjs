// Artifacts: uploads from bytes, strings, Blobs and streams; downloads checked against their
// address, into memory or a file; HEAD; references in inputs and results, also from inside a
// handler; and the server's refusals as typed errors.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { startServer } from "../scripts/server.mjs";
import { Agent, Client, ConnectionFailed, InvalidRequest, NotFound, artifactRef } from "../dist/index.js";
import { useServer, withAgent } from "./helpers.mjs";

const server = useServer();
const dir = mkdtempSync(join(tmpdir(), "baton-ts-artifacts-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function address(bytes) {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

test("artifacts go up from bytes, strings, Blobs and streams, and come back checked", async () => {
  const client = new Client(server.url);
  const hello = new TextEncoder().encode("hello artifacts");
  const stored = await client.putArtifact(hello, { contentType: "text/plain" });
  assert.deepEqual(stored, { artifact: address(hello), size: hello.length, content_type: "text/plain", created: true });
  const again = await client.putArtifact(Buffer.from("hello artifacts"));
  assert.equal(again.artifact, stored.artifact);
  assert.equal(again.created, false, "the same bytes are stored once");
  assert.deepEqual(await client.getArtifact(stored), hello);
  assert.deepEqual(await client.getArtifact(stored.artifact), hello);
  assert.deepEqual(await client.getArtifact(artifactRef(stored)), hello);
  assert.deepEqual(await client.getArtifact(stored.artifact.slice("sha256:".length)), hello);
  assert.deepEqual(await client.headArtifact(stored), {
    artifact: stored.artifact,
    size: hello.length,
    content_type: "text/plain",
  });

  const text = await client.putArtifact("résumé");
  assert.equal(text.artifact, address(Buffer.from("résumé", "utf8")));
  assert.equal(text.content_type, "text/plain; charset=utf-8");
  assert.equal(new TextDecoder().decode(await client.getArtifact(text)), "résumé");

  const blob = await client.putArtifact(new Blob(["a,b\n1,2\n"], { type: "text/csv" }));
  assert.equal(blob.content_type, "text/csv");
  assert.equal(blob.size, 8);

  // About 3 MiB from a file, streamed (fs chunks of 64 KiB), and saved to a file.
  const data = Buffer.alloc(3 * 1024 * 1024 + 7);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  const src = join(dir, "in.bin");
  writeFileSync(src, data);
  const streamed = await client.putArtifact(createReadStream(src), { contentType: "application/x-demo" });
  assert.equal(streamed.artifact, address(data));
  assert.equal(streamed.size, data.length);
  const fromWebStream = await client.putArtifact(new Blob([data]).stream());
  assert.equal(fromWebStream.artifact, streamed.artifact);
  assert.equal(fromWebStream.created, false);
  const out = join(dir, "out.bin");
  const saved = await client.saveArtifact(streamed, out);
  assert.deepEqual(saved, { artifact: streamed.artifact, size: data.length, content_type: "application/x-demo" });
  assert.ok(readFileSync(out).equals(data));
  assert.equal(existsSync(`${out}.part`), false);
  assert.ok(Buffer.from(await client.getArtifact(streamed)).equals(data));
});

test("a payload names an artifact, and a handler reads it and stores its result as one", async () => {
  const client = new Client(server.url);
  const doc = await client.putArtifact("the quick brown fox", { contentType: "text/plain" });
  const agent = new Agent("artifact-worker", { url: server.url, claimWaitMs: 300, logger: null });
  agent.task("shout", async (input, ctx) => {
    const text = new TextDecoder().decode(await ctx.getArtifact(input.doc));
    const loud = await ctx.putArtifact(text.toUpperCase(), { contentType: "text/plain" });
    return { loud: artifactRef(loud), chars: text.length };
  });
  const { workflow, task } = await client.submitTask({
    key: "shout",
    capabilities: ["shout"],
    input: { doc: artifactRef(doc) },
  });
  assert.deepEqual((await client.getTask(task)).spec.input, { doc: { $artifact: doc.artifact } });
  const view = await withAgent(agent, () => client.waitWorkflow(workflow, { timeoutMs: 15_000 }));
  assert.equal(view.status, "completed");
  const result = (await client.getTask(task)).result;
  assert.equal(result.chars, 19);
  assert.equal(result.loud.$artifact, address(Buffer.from("THE QUICK BROWN FOX")));
  assert.equal(new TextDecoder().decode(await client.getArtifact(result.loud)), "THE QUICK BROWN FOX");
});

test("refusals come back as typed errors, and corrupt bytes are caught", async () => {
  const client = new Client(server.url);
  const missing = address(Buffer.from("never uploaded"));
  await assert.rejects(client.getArtifact(missing), (err) => err instanceof NotFound && err.code === "artifact_not_found");
  await assert.rejects(
    client.getArtifact("sha256:nothex"),
    (err) => err instanceof InvalidRequest && err.code === "artifact_ref_invalid",
  );
  assert.equal(await client.headArtifact(missing), undefined);
  await assert.rejects(
    client.headArtifact("nothex"),
    (err) => err instanceof InvalidRequest && err.code === "artifact_ref_invalid",
  );
  await assert.rejects(
    client.submitWorkflow([{ key: "a", input: { doc: artifactRef(missing) } }]),
    (err) => err instanceof InvalidRequest && err.code === "artifact_not_found" && err.field === "tasks[0].input.doc",
  );
  const target = join(dir, "missing.bin");
  await assert.rejects(client.saveArtifact(missing, target), NotFound);
  assert.equal(existsSync(target) || existsSync(`${target}.part`), false);

  // A body altered on the way does not match its address.
  const stored = await client.putArtifact("intact");
  const tampering = new Client(server.url, {
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      if (init?.method !== "GET" || !String(url).includes("/v1/artifacts/")) return response;
      await response.arrayBuffer();
      return new Response("broken", { status: 200, headers: response.headers });
    },
  });
  await assert.rejects(
    tampering.getArtifact(stored),
    (err) => err instanceof ConnectionFailed && err.code === "artifact_corrupt",
  );
  await assert.rejects(tampering.saveArtifact(stored, target), (err) => err.code === "artifact_corrupt");
  assert.equal(existsSync(target) || existsSync(`${target}.part`), false);

  const small = await startServer(["--artifact-bytes-max", "1024"]);
  try {
    const smallClient = new Client(small.url);
    await assert.rejects(
      smallClient.putArtifact(new Uint8Array(1025)),
      (err) => err instanceof InvalidRequest && err.status === 413 && err.code === "artifact_too_large",
    );
    assert.equal(await smallClient.headArtifact(address(new Uint8Array(1025))), undefined);
    assert.equal((await smallClient.putArtifact(new Uint8Array(1024))).size, 1024);
  } finally {
    await small.stop();
  }
});
