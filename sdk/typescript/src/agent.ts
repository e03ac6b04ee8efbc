import { ReportBatcher, type ReportOutcome, sendReport, sendReports } from "./batch.js";
import { Client, CLAIM_WAIT_MAX_MS } from "./client.js";
import { TaskContext } from "./context.js";
import { BatonError, Conflict, NonRetryableError, NotFound, Unavailable, isTransient } from "./errors.js";
import type * as api from "./generated/openapi.js";
import { type ConnectionOptions, seg } from "./http.js";
import type { ArtifactData, ArtifactLike, Json, PutArtifactOptions, TransferOptions } from "./types.js";

/** `handler(input, ctx)`: returns the task's result (any JSON value) or throws to fail it. */
export type Handler = (input: any, ctx: TaskContext) => unknown;

/** Where the agent writes what it does; `null` in {@link AgentOptions.logger} silences it. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

/** Options of {@link Agent}. */
export interface AgentOptions extends ConnectionOptions {
  /** Baton's URL (default: `BATON_URL`, else `http://127.0.0.1:7700`). */
  url?: string;
  /** Capabilities offered on top of those of the handlers. */
  capabilities?: string[];
  /** Tasks run at once (default 1). */
  concurrency?: number;
  /**
   * Register again under the id of an agent Baton knows (its leases survive a restart). Baton
   * makes agents' ids: an id it does not know (never made, or forgotten) is refused, and the
   * agent then registers as a new agent, with the id Baton gives it ({@link Agent.id}).
   */
  agentId?: string;
  /** How long a claim waits for work (long poll), in ms (default 5 000, at most 60 000). */
  claimWaitMs?: number;
  /**
   * Claims start the tasks they hand out (default `false`; the server starts only those with a
   * heartbeat deadline): no `started` report for them, one request and one commit fewer. Off
   * by default: a task started so whose first heartbeat a crash delays past its start timeout
   * spends an attempt, where an unstarted one is requeued free.
   */
  startOnClaim?: boolean;
  /**
   * Sends the agent's reports in batches (default `true`): one `POST /v1/reports` at a time
   * carries whatever reports queued while the previous one was in flight (a lone report goes at
   * once; no timer), at most 1 MiB of JSON (a report larger on its own
   * is sent as its own request). `false`: each report is a request of its own.
   */
  batchReports?: boolean;
  /** How long a stop waits for running handlers before releasing their tasks (default 30 000). */
  shutdownGraceMs?: number;
  /** Longest pause between two heartbeats of a task, in ms (default 10 000). */
  heartbeatMaxIntervalMs?: number;
  /** The agent's own keep-alive when it has not been heard from for this long (default 10 000). */
  keepaliveIntervalMs?: number;
  /** Default: the console; `null`: silent. */
  logger?: Logger | null;
}

/** Shortest pause between two heartbeats of one task, whatever its deadline says (ms). */
export const BEAT_MIN_MS = 250;
const BEAT_AFTER_FAILURE_MS = 4 * BEAT_MIN_MS;
/** Tries of a report that fails for transient reasons (connection, 503) before giving up. */
export const REPORT_ATTEMPTS = 5;
const BACKOFF_FIRST_MS = 200;
const BACKOFF_MAX_MS = 5_000;
const MESSAGE_CHARS_MAX = 8192;

/**
 * Milliseconds until the next heartbeat: a third of the time left at `nowMs` before the
 * heartbeat deadline (ms since the epoch), at most `maxMs`, at least {@link BEAT_MIN_MS}.
 */
export function beatInterval(heartbeatDeadline: number | null | undefined, nowMs: number, maxMs: number): number {
  if (heartbeatDeadline === null || heartbeatDeadline === undefined) return maxMs;
  return Math.max(BEAT_MIN_MS, Math.min(maxMs, (heartbeatDeadline - nowMs) / 3));
}

/** The error report for what a handler threw: kind, message, retryable. */
export function failureOf(err: unknown): api.ErrorReport {
  let kind = "Error";
  let message = String(err);
  if (err instanceof Error) {
    const own = (err as { kind?: unknown }).kind;
    kind = typeof own === "string" && own ? own : err.name || err.constructor.name;
    message = err.message || kind;
  }
  if (message.length > MESSAGE_CHARS_MAX) message = `${message.slice(0, MESSAGE_CHARS_MAX - 1)}…`;
  return { kind, message, retryable: !(err instanceof NonRetryableError) };
}

/** A handler's return value as a result: `undefined`/`null` become `{}` (Baton refuses null). */
function resultOf(value: unknown): Json {
  if (value === undefined || value === null) return {};
  try {
    JSON.stringify(value);
  } catch (err) {
    throw new NonRetryableError(`the result is not JSON-serialisable: ${(err as Error).message}`, {
      kind: "TypeError",
    });
  }
  return value as Json;
}

function retryPause(failures: number, err: unknown): number {
  if (err instanceof Unavailable && err.retryAfter !== undefined && err.retryAfter > 0) {
    return Math.min(err.retryAfter * 1000, BACKOFF_MAX_MS);
  }
  return Math.min(BACKOFF_FIRST_MS * 2 ** (failures - 1), BACKOFF_MAX_MS);
}

/** Whether a refused report means the lease is gone (cancelled, taken back, reassigned). */
function leaseLost(err: unknown): string | undefined {
  return err instanceof Conflict || err instanceof NotFound ? err.code : undefined;
}

/**
 * Whether Baton answered that it does not know the agent (never registered, or deleted after a
 * long silence): the agent registers again without an id and goes on under the new one.
 */
function forgotten(err: unknown): boolean {
  return err instanceof NotFound && err.code === "agent_not_found";
}

/** What a `started` report would have answered for a task its claim started. */
function startedByClaim(claimed: api.ClaimedTask): api.ReportAnswer {
  const { task, attempt, token, deadlines, now } = claimed;
  return { task, state: "executing", version: claimed.version ?? 0, attempt, token, cancelled: false, deadlines, now };
}

/** What an agent reports on a task it holds. */
type ReportKind = api.Report["report"];

function describe(err: unknown): string {
  return err instanceof BatonError ? err.message : String(err);
}

/** A task the agent holds a lease on, from its claim until nothing more is done for it. */
class Held {
  /** Requests about the task, one at a time, in the order they were decided. */
  chain: Promise<unknown> = Promise.resolve();
  /** Heartbeats are due: started, handler running, lease held. */
  beating = false;
  beatQueued = false;
  timer: NodeJS.Timeout | undefined;
  released: string | undefined;
  /** Settles once nothing more is done for the task (its outcome or release answered). */
  done: Promise<void> = Promise.resolve();

  constructor(
    readonly claimed: api.ClaimedTask,
    readonly ctx: TaskContext,
  ) {}
}

/**
 * A process that claims tasks from Baton, runs a handler for each, and reports back.
 *
 * ```ts
 * const agent = new Agent("summarizer", { concurrency: 4 });
 * agent.task("summarize", async (input, ctx) => ({ summary: input.text.slice(0, 100) }));
 * await agent.run();
 * ```
 *
 * It registers with the capabilities of its handlers, long-polls for tasks
 * (`POST /v1/agents/{id}/claim`, which also starts them; with `startOnClaim: false` it reports
 * each one started instead), heartbeats each in the background at a third of the time left
 * before its heartbeat deadline (with progress and usage), and reports the handler's result,
 * or its error as a failure (retryable unless it is a {@link NonRetryableError}). When Baton
 * refuses a report because the task was taken back, the handler's `ctx.signal` is aborted and
 * nothing more is reported. Its reports travel in batches (`POST /v1/reports`, one in flight at
 * a time, the reports that queued meanwhile in the next; `batchReports: false` sends each on
 * its own), each still answered, refused and tried again on its own. Connection failures and
 * 503s are tried again with backoff. When Baton answers a claim, a keep-alive or a report that it
 * does not know the agent (a fresh store, or deleted after `--agent-retention` of silence), the
 * agent registers again without an id and goes on under the new id Baton gives it ({@link id}
 * changes); the tasks it held under the old id lost their leases and end as such. {@link stop}
 * stops claiming, waits up to `shutdownGraceMs` for running handlers, then releases the tasks
 * still held so that another agent takes them.
 *
 * With several handlers, a task runs with the first one (in registration order) whose
 * capability it requires, else the default handler (`task(null, …)`), else it fails with the
 * retryable kind `no_handler`.
 */
export class Agent {
  readonly name: string;
  /** The agent's id, once registered. */
  id: string | undefined;
  readonly concurrency: number;
  readonly #client: Client;
  readonly #handlers: Array<[string | null, Handler]> = [];
  readonly #extraCapabilities: string[];
  readonly #claimWaitMs: number;
  readonly #startOnClaim: boolean;
  /** Where reports go when they are batched. */
  readonly #batcher: ReportBatcher | undefined;
  readonly #graceMs: number;
  readonly #beatMaxMs: number;
  readonly #keepaliveMs: number;
  readonly #log: Logger | null;
  readonly #held = new Map<string, Held>();
  readonly #stop = new AbortController();
  #slotFreed: (() => void) | undefined;
  /** The registration again after Baton forgot the agent, while it is under way. */
  #registeringAgain: Promise<void> | undefined;
  #lastContact = 0;
  #running: Promise<void> | undefined;

  constructor(name: string, options: AgentOptions = {}) {
    const concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError("concurrency must be a positive integer");
    }
    this.name = name;
    this.concurrency = concurrency;
    this.id = options.agentId;
    this.#client = new Client(options.url, options);
    this.#extraCapabilities = options.capabilities ?? [];
    this.#claimWaitMs = Math.max(0, Math.min(options.claimWaitMs ?? 5_000, CLAIM_WAIT_MAX_MS));
    this.#startOnClaim = options.startOnClaim ?? false;
    // At most one request per held task is out, so at most `concurrency` reports queue.
    this.#batcher =
      (options.batchReports ?? true)
        ? new ReportBatcher(
            (reports) => this.reports(reports),
            (report) => sendReport(this.#client.http, report),
            concurrency,
          )
        : undefined;
    this.#graceMs = options.shutdownGraceMs ?? 30_000;
    this.#beatMaxMs = options.heartbeatMaxIntervalMs ?? 10_000;
    this.#keepaliveMs = options.keepaliveIntervalMs ?? 10_000;
    this.#log =
      options.logger === null
        ? null
        : (options.logger ?? { info: (m) => console.info(`baton: ${m}`), warn: (m) => console.warn(`baton: ${m}`) });
  }

  /**
   * Registers `handler` for tasks requiring `capability` (`null`: the default handler, for
   * any task). Returns the agent, for chaining.
   */
  task(capability: string | null, handler: Handler): this {
    if (this.#running) throw new Error("handlers are registered before run()");
    this.#handlers.push([capability, handler]);
    return this;
  }

  /** The capabilities the agent registers with. */
  get capabilities(): string[] {
    const named = this.#handlers.map(([cap]) => cap).filter((c): c is string => c !== null);
    return [...new Set([...named, ...this.#extraCapabilities])].sort();
  }

  /**
   * Sends `reports` (on any tasks, by any agents this token may act as; 1 to
   * {@link REPORTS_PER_BATCH_MAX}) in one request, `POST /v1/reports`: each is applied as its
   * own transition, reports on one task in their order. One outcome per report, in order: its
   * answer, or the {@link BatonError} its own request would have been refused with (returned,
   * not thrown: one refusal changes nothing of the others). Rejects only when the request
   * fails as a whole: not a valid batch ({@link InvalidRequest}), or not delivered. The agent
   * uses it for its own reports; it is here for agents that run their own loop.
   */
  reports(reports: api.Report[]): Promise<ReportOutcome[]> {
    return sendReports(this.#client.http, reports);
  }

  /** Whether {@link stop} was called (or `run`'s signal aborted). */
  get stopping(): boolean {
    return this.#stop.signal.aborted;
  }

  /**
   * Runs the agent until {@link stop} is called or `signal` is aborted, then shuts down
   * gracefully. Rejects if it cannot register (for a reason other than a connection failure).
   */
  run(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#running) throw new Error("the agent is running already");
    if (this.#handlers.length === 0) throw new Error("no handler: call agent.task(...) first");
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) this.#stop.abort();
      else signal.addEventListener("abort", () => this.#stop.abort(), { once: true });
    }
    this.#running = this.#main();
    return this.#running;
  }

  /**
   * Stops the agent: no more claims; running handlers get `shutdownGraceMs` to finish, then
   * their tasks are released (their `ctx.signal` aborted with `agent_stopping`). Resolves
   * when `run` has ended (`run`'s own promise carries its failure, if any).
   */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#slotFreed?.();
    await this.#running?.catch(() => undefined);
  }

  async #main(): Promise<void> {
    if (!(await this.#register(this.id))) return;
    const keepalive = this.#keepAlive();
    while (!this.stopping) {
      if (this.#held.size >= this.concurrency) {
        await new Promise<void>((resolve) => (this.#slotFreed = resolve));
        this.#slotFreed = undefined;
        continue;
      }
      await this.#claim();
    }
    await this.#shutDown();
    await keepalive;
    await this.#registeringAgain;
  }

  /**
   * Registers: again under `id` (an agent Baton knows), else, or if Baton has no agent with that
   * id, as a new agent. Resolves `false` if it stopped while Baton could not be reached.
   */
  async #register(id: string | undefined, forgot?: string): Promise<boolean> {
    const body: api.RegisterAgent = { name: this.name, capabilities: this.capabilities, concurrency: this.concurrency };
    if (id) body.id = id;
    for (let failures = 1; ; failures++) {
      try {
        const view = await this.#client.http.json<api.AgentView>({ method: "POST", path: "/v1/agents", body });
        this.id = view.id;
        this.#lastContact = Date.now();
        if (forgot) {
          this.#log?.warn(`Baton had forgotten agent ${forgot}: registered again as ${view.id}`);
        } else {
          this.#log?.info(
            `agent ${this.name} registered as ${view.id} (capabilities ${this.capabilities.join(", ") || "none"}; at most ${this.concurrency} task(s) at once)`,
          );
        }
        return true;
      } catch (err) {
        if (body.id && forgotten(err)) {
          // An id Baton does not know (never made, or forgotten): a new agent instead.
          this.#log?.warn(`Baton has no agent ${body.id}: registering as a new agent`);
          delete body.id;
          failures = 0;
          continue;
        }
        if (!isTransient(err)) throw err;
        if (this.stopping) return false;
        if (failures === 1 || failures % 10 === 0) this.#log?.warn(`cannot reach Baton (${describe(err)}); trying again`);
        await this.#pause(retryPause(failures, err));
      }
    }
  }

  /** Claims what the free slots can take, trying failures again with backoff until it stops. */
  async #claim(): Promise<void> {
    for (let failures = 1; !this.stopping; failures++) {
      const agent = this.#agentId;
      try {
        const answer = await this.#client.http.json<api.Claimed>({
          method: "POST",
          path: `/v1/agents/${seg(agent)}/claim`,
          body: {
            max: this.concurrency - this.#held.size,
            wait_ms: this.#claimWaitMs,
            start: this.#startOnClaim,
          } satisfies api.ClaimBody,
          timeoutMs: this.#claimWaitMs + this.#client.http.timeoutMs,
        });
        this.#lastContact = Date.now();
        for (const task of answer.tasks) this.#take(task);
        return;
      } catch (err) {
        if (failures === 1 || failures % 10 === 0) this.#log?.warn(`claim failed: ${describe(err)}`);
        if (forgotten(err)) await this.#forgotten(agent);
        await this.#pause(retryPause(failures, err));
      }
    }
  }

  /**
   * Baton answered a request sent under `agent` that it does not know the agent: registers
   * again, as a new agent (Baton makes ids), unless that is under way (then waits for it) or
   * done already (the agent's id is no longer `agent`), or the agent is stopping. The tasks
   * held under the old id lost their leases: their reports are refused and they end as any
   * task whose lease is gone. Never rejects: a registration refused is logged, and the next
   * refusal of the old id tries again.
   */
  #forgotten(agent: string): Promise<void> {
    if (this.#registeringAgain) return this.#registeringAgain;
    if (agent !== this.id || this.stopping) return Promise.resolve();
    this.#registeringAgain = this.#register(undefined, agent)
      .then(
        () => undefined,
        (err) => this.#log?.warn(`registering again failed: ${describe(err)}`),
      )
      .finally(() => (this.#registeringAgain = undefined));
    return this.#registeringAgain;
  }

  /** Sends the agent's own heartbeat whenever it has not been heard from for a while. */
  async #keepAlive(): Promise<void> {
    while (!this.stopping) {
      await this.#pause(Math.max(0, this.#lastContact + this.#keepaliveMs - Date.now()));
      if (this.stopping || Date.now() - this.#lastContact < this.#keepaliveMs) continue;
      const agent = this.#agentId;
      try {
        await this.#client.http.json({ method: "POST", path: `/v1/agents/${seg(agent)}/heartbeat` });
        this.#lastContact = Date.now();
      } catch (err) {
        this.#log?.warn(`agent keep-alive failed: ${describe(err)}`);
        if (forgotten(err)) await this.#forgotten(agent);
        // Sooner than a full interval: the agent may be close to being declared lost.
        this.#lastContact = Date.now() - this.#keepaliveMs / 2;
      }
    }
  }

  // ---- one task ---------------------------------------------------------------------------

  #take(claimed: api.ClaimedTask): void {
    const link = {
      beatNow: () => this.#beatSoon(held),
      addSubtasks: (tasks: api.TaskSpec[]) =>
        this.#client.http.json<api.WorkflowCreated>({
          method: "POST",
          path: `/v1/tasks/${seg(claimed.task)}/subtasks`,
          body: { agent: this.#agentId, token: claimed.token, tasks } satisfies api.SubtasksReport,
        }),
      putArtifact: (data: ArtifactData, options: PutArtifactOptions) => this.#client.putArtifact(data, options),
      getArtifact: (artifact: ArtifactLike, options: TransferOptions) => this.#client.getArtifact(artifact, options),
    };
    const upstream: Record<string, Json> = {};
    const held: Held = new Held(claimed, new TaskContext(claimed, this.#agentId, upstream, link));
    this.#held.set(claimed.task, held);
    held.done = this.#runTask(held, upstream)
      .catch((err) => this.#log?.warn(`task ${claimed.task}: ${describe(err)}`))
      .finally(async () => {
        await held.chain;
        this.#held.delete(claimed.task);
        this.#slotFreed?.();
      });
  }

  async #runTask(held: Held, upstream: Record<string, Json>): Promise<void> {
    const { claimed, ctx } = held;
    if (this.stopping) {
      await this.#release(held, "agent_stopping");
      return;
    }
    const started = claimed.started ? startedByClaim(claimed) : await this.#report(held, "started", {});
    if (!started || held.released) return;
    held.beating = true;
    this.#schedule(held, started);
    let outcome: { result: Json } | { error: api.ErrorReport };
    try {
      const handler = await this.#handlerFor(claimed);
      await this.#readUpstream(claimed, upstream);
      outcome = { result: resultOf(await handler(claimed.input, ctx)) };
    } catch (err) {
      outcome = { error: failureOf(err) };
      if (!ctx.signal.aborted) {
        this.#log?.info(`task ${claimed.task} (${claimed.key}) failed: ${outcome.error.kind}: ${outcome.error.message}`);
      }
    }
    held.beating = false;
    clearTimeout(held.timer);
    if (ctx.signal.aborted) {
      this.#log?.info(`task ${claimed.task}: ${ctx.cancelReason}, outcome not reported`);
      return;
    }
    const usage = ctx.usage;
    const extra = Object.keys(usage).length > 0 ? { usage } : {};
    if ("result" in outcome) await this.#report(held, "succeeded", { result: outcome.result, ...extra });
    else await this.#report(held, "failed", { error: outcome.error, ...extra });
  }

  async #handlerFor(claimed: api.ClaimedTask): Promise<Handler> {
    if (this.#handlers.length === 1) return this.#handlers[0]![1];
    const required =
      claimed.capabilities ??
      ((await this.#client.getTask(claimed.task)).spec as api.TaskSpec).capabilities ??
      [];
    const named = this.#handlers.find(([cap]) => cap !== null && required.includes(cap));
    const fallback = this.#handlers.find(([cap]) => cap === null);
    const handler = named?.[1] ?? fallback?.[1];
    if (handler) return handler;
    const err = new Error(`agent ${this.name} has no handler for capabilities [${[...required].sort().join(", ")}]`);
    err.name = "no_handler";
    throw err;
  }

  /** Fills `upstream` with the dependencies' results, reading those the claim withheld. */
  async #readUpstream(claimed: api.ClaimedTask, upstream: Record<string, Json>): Promise<void> {
    for (const [key, item] of Object.entries(claimed.upstream ?? {})) {
      if ("result" in item) {
        upstream[key] = item.result as Json;
      } else {
        const answer = await this.#client.http.json<Record<string, api.UpstreamResult>>({
          method: "GET",
          path: `/v1/tasks/${seg(claimed.task)}/upstream`,
          query: { key },
        });
        upstream[key] = answer[key]?.result as Json;
      }
    }
  }

  #schedule(held: Held, answer: api.ReportAnswer): void {
    held.ctx.deadlines = answer.deadlines;
    clearTimeout(held.timer);
    const at = answer.now ?? Date.now();
    const interval = beatInterval(answer.deadlines.heartbeat, at, this.#beatMaxMs);
    held.timer = setTimeout(() => this.#beat(held), interval);
  }

  #beatSoon(held: Held): void {
    if (!held.beating) return;
    clearTimeout(held.timer);
    held.timer = setTimeout(() => this.#beat(held), 0);
  }

  #beat(held: Held): void {
    if (!held.beating || held.beatQueued) return;
    held.beatQueued = true;
    held.chain = held.chain.then(async () => {
      held.beatQueued = false;
      if (!held.beating || held.ctx.signal.aborted) return;
      const body: Partial<api.HeartbeatReport> = {};
      const progress = held.ctx.takeProgress();
      if (progress) body.progress = progress.value;
      const usage = held.ctx.usage;
      if (Object.keys(usage).length > 0) body.usage = usage;
      try {
        const answer = await this.#post(held, "heartbeat", body);
        if (answer.cancelled) held.ctx.abort("task_cancelled");
        else if (held.beating) this.#schedule(held, answer);
      } catch (err) {
        const reason = leaseLost(err);
        if (reason) {
          this.#log?.info(`task ${held.claimed.task}: heartbeat refused (${reason}): aborting its handler`);
          held.ctx.abort(reason);
        } else {
          this.#log?.warn(`task ${held.claimed.task}: heartbeat failed: ${describe(err)}`);
          if (held.beating) held.timer = setTimeout(() => this.#beat(held), BEAT_AFTER_FAILURE_MS);
        }
      }
    });
  }

  /**
   * Reports on `held` after the request in flight for it, trying transient failures again;
   * resolves to the answer, or `undefined` when refused (a lost lease aborts `ctx.signal`).
   */
  #report(held: Held, what: ReportKind, extra: object): Promise<api.ReportAnswer | undefined> {
    const sent = held.chain.then(async () => {
      for (let tries = 1; ; tries++) {
        try {
          return await this.#post(held, what, extra);
        } catch (err) {
          if (isTransient(err) && tries < REPORT_ATTEMPTS) {
            await new Promise((resolve) => setTimeout(resolve, retryPause(tries, err)));
            continue;
          }
          const reason = leaseLost(err);
          if (reason) held.ctx.abort(reason);
          this.#log?.warn(`task ${held.claimed.task}: ${what} refused: ${describe(err)}`);
          return undefined;
        }
      }
    });
    held.chain = sent;
    return sent;
  }

  /** One report on `held`: batched, or as its own request (`POST /v1/tasks/{task}/{what}`). */
  async #post(held: Held, what: ReportKind, extra: object): Promise<api.ReportAnswer> {
    const agent = this.#agentId;
    const { task, token } = held.claimed;
    const body = { agent, token, ...extra };
    this.#lastContact = Date.now();
    try {
      if (this.#batcher) return await this.#batcher.send({ report: what, task, ...body } as api.Report);
      return await this.#client.http.json({ method: "POST", path: `/v1/tasks/${seg(task)}/${what}`, body });
    } catch (err) {
      // Not awaited: the task's own lease is gone either way (the refusal ends it).
      if (forgotten(err)) void this.#forgotten(agent);
      throw err;
    }
  }

  async #release(held: Held, reason: string): Promise<void> {
    if (held.released) return;
    held.released = reason;
    held.beating = false;
    clearTimeout(held.timer);
    held.ctx.abort(reason);
    const answer = await this.#report(held, "released", {});
    if (answer) this.#log?.info(`task ${held.claimed.task} released (${reason})`);
  }

  // ---- stopping ---------------------------------------------------------------------------

  async #shutDown(): Promise<void> {
    const running = [...this.#held.values()];
    if (running.length > 0) {
      this.#log?.info(`stopping: waiting up to ${this.#graceMs} ms for ${running.length} task(s)`);
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#graceMs)));
      await Promise.race([Promise.all(running.map((h) => h.done)), grace]);
      clearTimeout(timer);
    }
    const left = [...this.#held.values()];
    await Promise.all(left.map((held) => this.#release(held, "agent_stopping")));
    await Promise.all(left.map((held) => held.chain));
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.#stop.signal;
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  get #agentId(): string {
    if (!this.id) throw new Error("the agent is not registered");
    return this.id;
  }
}
