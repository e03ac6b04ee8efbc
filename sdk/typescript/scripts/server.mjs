// Starts a throwaway `baton serve` on a free loopback port with its data in a temp dir: used by
// the tests and by `npm run check-openapi`. The binary is $BATON_BIN, else the workspace's
// target/debug/baton.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The `baton` binary to run. */
export function batonBin() {
  return process.env.BATON_BIN || resolve(here, "../../../target/debug/baton");
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/**
 * Starts a server and waits for `GET /healthz`; resolves to `{ url, stop() }`. `args` are
 * added to `baton serve`'s; `port` is where it listens (default: a free one), so that a test
 * can start a new server, with an empty store, where another one was.
 */
export async function startServer(args = [], { port } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "baton-ts-"));
  port ??= await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    batonBin(),
    ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", join(dir, "data"), ...args],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, BATON_LOG_FORMAT: "json" } },
  );
  let log = "";
  let failed;
  child.once("error", (err) => (failed = err));
  child.stderr.on("data", (chunk) => {
    log = (log + chunk).slice(-8000);
  });
  const exited = new Promise((ok) => child.once("exit", ok));
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (failed) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`cannot run ${batonBin()}: ${failed.message} (set BATON_BIN)`);
    }
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`baton serve exited with ${child.exitCode}:\n${log}`);
    }
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`baton serve did not answer /healthz within 15 s:\n${log}`);
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  return { url, stop };
}
