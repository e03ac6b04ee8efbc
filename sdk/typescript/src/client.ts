import { ConnectionFailed, isTransient } from "./errors.js";
import type * as api from "./generated/openapi.js";
import { type ConnectionOptions, Transport, seg } from "./http.js";
import { SseParser, type SseEvent } from "./sse.js";
import type {
  AuditOptions,
  Budgets,
  EventsOptions,
  Json,
  ListAgentsOptions,
  ListTasksOptions,
  ListWorkflowsOptions,
  StreamItem,
  SubmitTaskOptions,
  SubmitWorkflowOptions,
  Usage,
} from "./types.js";

/** Options of {@link Client}. */
export type ClientOptions = ConnectionOptions;

/** The most a claim may wait for work, in ms (the server's bound). */
export const CLAIM_WAIT_MAX_MS = 60_000;

const RECONNECT_MAX_MS = 5_000;

/** Budgets in the API's shape: every unit as `{limit, policy?}`. */
function budgetsBody(budgets: Budgets): Record<string, api.Budget> {
  return Object.fromEntries(
    Object.entries(budgets).map(([unit, b]) => [unit, typeof b === "number" ? { limit: b } : b]),
  );
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/**
 * An operator's client of Baton's HTTP API (`/v1`): submit and inspect workflows and tasks,
 * control them, follow the event stream. Every method returns a promise and rejects with a
 * {@link BatonError} when Baton refuses.
 *
 * Controls that change a task or workflow take a `reason`, recorded in the audit log (Baton
 * refuses them without one).
 */
export class Client {
  /** The transport, shared with the agent runner. */
  readonly http: Transport;

  /** `baseUrl` defaults to `BATON_URL`, else `http://127.0.0.1:7700`. */
  constructor(baseUrl?: string, options: ClientOptions = {}) {
    this.http = new Transport(baseUrl, options);
  }

  // ---- workflows and tasks ------------------------------------------------------------------

  /** Submits a workflow: tasks with their dependencies (`depends_on`, by key). */
  submitWorkflow(tasks: api.TaskSpec[], options: SubmitWorkflowOptions = {}): Promise<api.WorkflowCreated> {
    const body: api.SubmitWorkflow = { tasks };
    if (options.name) body.name = options.name;
    if (options.idempotencyKey !== undefined) body.idempotency_key = options.idempotencyKey;
    if (options.outputs !== undefined) body.outputs = options.outputs;
    if (options.labels) body.labels = options.labels;
    if (options.budgets) body.budgets = budgetsBody(options.budgets);
    return this.http.json({ method: "POST", path: "/v1/workflows", body });
  }

  /** Submits one task as a workflow of its own. */
  submitTask(task: api.TaskSpec, options: SubmitTaskOptions = {}): Promise<api.TaskCreated> {
    const body: api.SubmitTask = { task };
    if (options.idempotencyKey !== undefined) body.idempotency_key = options.idempotencyKey;
    if (options.labels) body.labels = options.labels;
    if (options.budgets) body.budgets = budgetsBody(options.budgets);
    return this.http.json({ method: "POST", path: "/v1/tasks", body });
  }

  /** A workflow with its task counts, status, spend and (once ended) result. */
  getWorkflow(workflowId: string): Promise<api.WorkflowView> {
    return this.http.json({ method: "GET", path: `/v1/workflows/${seg(workflowId)}` });
  }

  /** A page of workflows, newest first; pass `next` as `before` for the next page. */
  listWorkflows(options: ListWorkflowsOptions = {}): Promise<api.WorkflowList> {
    return this.http.json({ method: "GET", path: "/v1/workflows", query: { ...options } });
  }

  /**
   * Waits for the workflow to end (`status` no longer `running`) and returns it; rejects with
   * a `TimeoutError` after `timeoutMs`.
   */
  async waitWorkflow(
    workflowId: string,
    options: { timeoutMs?: number; pollMs?: number } = {},
  ): Promise<api.WorkflowView> {
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    for (;;) {
      const view = await this.getWorkflow(workflowId);
      if (view.status !== "running") return view;
      if (Date.now() >= deadline) {
        const err = new Error(`workflow ${workflowId} is still running after ${options.timeoutMs} ms`);
        err.name = "TimeoutError";
        throw err;
      }
      await sleep(options.pollMs ?? 100);
    }
  }

  /** A task: its spec, state, attempts, lease, result or error. */
  getTask(taskId: string): Promise<api.TaskView> {
    return this.http.json({ method: "GET", path: `/v1/tasks/${seg(taskId)}` });
  }

  /** A page of tasks; pass `next` as `after` for the next page. */
  listTasks(options: ListTasksOptions = {}): Promise<api.TaskList> {
    return this.http.json({ method: "GET", path: "/v1/tasks", query: { ...options } });
  }

  /** Tasks per state, of one workflow or of all. */
  counts(workflowId?: string): Promise<api.Counts> {
    return this.http.json({ method: "GET", path: "/v1/counts", query: { workflow: workflowId } });
  }

  // ---- operator controls --------------------------------------------------------------------

  /** Cancels a task that has not ended; its agent is told at its next report. */
  cancelTask(taskId: string, reason: string): Promise<api.ReportAnswer> {
    return this.#control("tasks", taskId, "cancel", { reason } satisfies api.CancelBody);
  }

  /** Cancels every task of the workflow that has not ended; resolves to how many. */
  async cancelWorkflow(workflowId: string, reason: string): Promise<number> {
    const answer = await this.#control<api.CancelledCount>("workflows", workflowId, "cancel", {
      reason,
    } satisfies api.CancelBody);
    return answer.cancelled;
  }

  /** Retries a failed task now, with one more attempt. */
  retryTask(taskId: string): Promise<api.ReportAnswer> {
    return this.#control("tasks", taskId, "retry", {} satisfies api.RetryBody);
  }

  /**
   * Pauses a task: not handed out until resumed. With `now`, a running task is also taken
   * back from its agent (its next report is refused with `task_paused`).
   */
  pauseTask(taskId: string, reason: string, options: { now?: boolean } = {}): Promise<api.ReportAnswer> {
    const body: api.PauseBody = { reason, now: options.now ?? false };
    return this.#control("tasks", taskId, "pause", body);
  }

  /** Resumes a paused task. */
  resumeTask(taskId: string, reason: string): Promise<api.ReportAnswer> {
    return this.#control("tasks", taskId, "resume", { reason } satisfies api.ResumeBody);
  }

  /** Completes a task with `result` in place of an agent. */
  skipTask(taskId: string, reason: string, result: Json): Promise<api.ReportAnswer> {
    return this.#control("tasks", taskId, "skip", { reason, result } as api.SkipBody);
  }

  /** Fails a task for good (no retry); `error` is recorded (default kind `forced`). */
  failTask(
    taskId: string,
    reason: string,
    error?: { kind: string; message?: string },
  ): Promise<api.ReportAnswer> {
    const body: api.FailBody = { reason };
    if (error) body.error = { kind: error.kind, message: error.message ?? reason };
    return this.#control("tasks", taskId, "fail", body);
  }

  /**
   * Runs a task and everything downstream of it again, optionally with a new `input`; with
   * `dryRun`, only says what would rerun.
   */
  rerunTask(
    taskId: string,
    reason: string,
    options: { input?: Record<string, unknown>; dryRun?: boolean } = {},
  ): Promise<api.RerunAnswer> {
    const body: api.RerunBody = { reason, dry_run: options.dryRun ?? false };
    if (options.input !== undefined) body.input = options.input;
    return this.#control("tasks", taskId, "rerun", body);
  }

  /** Pauses every open task of a workflow (`now`: running ones are taken back too). */
  pauseWorkflow(
    workflowId: string,
    reason: string,
    options: { now?: boolean } = {},
  ): Promise<api.WorkflowControlAnswer> {
    const body: api.PauseBody = { reason, now: options.now ?? false };
    return this.#control("workflows", workflowId, "pause", body);
  }

  /**
   * Resumes every paused task of a workflow; refused with `budget_reached` (409) while a budget
   * that paused it is still reached: raise it with {@link setBudgets} first.
   */
  resumeWorkflow(workflowId: string, reason: string): Promise<api.WorkflowControlAnswer> {
    return this.#control("workflows", workflowId, "resume", { reason } satisfies api.ResumeBody);
  }

  /** Replaces a workflow's budgets; resolves to the workflow. */
  setBudgets(workflowId: string, reason: string, budgets: Budgets): Promise<api.WorkflowView> {
    const body: api.BudgetsBody = { reason, budgets: budgetsBody(budgets) };
    return this.http.json({ method: "PUT", path: `/v1/workflows/${seg(workflowId)}/budgets`, body });
  }

  /** What agents reported spending, per unit, over all workflows or those with `label`. */
  async usage(options: { label?: string } = {}): Promise<Usage> {
    const view = await this.http.json<api.UsageView>({
      method: "GET",
      path: "/v1/usage",
      query: { label: options.label },
    });
    return view.usage;
  }

  /**
   * Sends a signal to a workflow: completes its tasks waiting for `name` with `data` (or,
   * with `reject`, fails them), else keeps it for the first task that waits for it.
   */
  signal(
    workflowId: string,
    name: string,
    data?: Json,
    options: { reject?: string; idempotencyKey?: string; by?: string } = {},
  ): Promise<api.SignalSent> {
    if (options.reject !== undefined && data !== undefined) {
      throw new TypeError("a signal carries data or rejects, not both");
    }
    // Data goes as a literal, so that data looking like a rejection is delivered as it is.
    const body = options.reject !== undefined ? { reject: options.reject } : { $literal: data ?? {} };
    return this.http.json({
      method: "POST",
      path: `/v1/workflows/${seg(workflowId)}/signals/${seg(name)}`,
      query: { by: options.by },
      body,
      headers: options.idempotencyKey ? { "idempotency-key": options.idempotencyKey } : undefined,
    });
  }

  /** A page of the audit log (operators' actions), newest first. */
  audit(options: AuditOptions = {}): Promise<api.AuditPage> {
    return this.http.json({ method: "GET", path: "/v1/audit", query: { ...options } });
  }

  /**
   * A page of agents by id, their registration order; pass `next` as `after` for the next
   * page. An agent silent for the agent retention (7 days by default) and holding no task is
   * deleted; each token may have at most so many agents registered (429
   * `agents_per_token_max_reached`).
   */
  listAgents(options: ListAgentsOptions = {}): Promise<api.AgentList> {
    return this.http.json({ method: "GET", path: "/v1/agents", query: { ...options } });
  }

  /** Every agent Baton knows, read a page at a time. */
  async *iterAgents(pageSize = 100): AsyncGenerator<api.AgentView> {
    let after: string | undefined;
    for (;;) {
      const page = await this.listAgents({ after, limit: pageSize });
      yield* page.agents;
      if (page.next === undefined || page.next === null || page.agents.length === 0) return;
      after = page.next;
    }
  }

  /** Every agent Baton knows (read a page of 1,000 at a time). */
  async agents(): Promise<api.AgentView[]> {
    const all: api.AgentView[] = [];
    for await (const agent of this.iterAgents(1000)) all.push(agent);
    return all;
  }

  #control<T>(kind: "tasks" | "workflows", id: string, verb: string, body: object): Promise<T> {
    return this.http.json({ method: "POST", path: `/v1/${kind}/${seg(id)}/${verb}`, body });
  }

  // ---- flow control -------------------------------------------------------------------------

  /**
   * Creates or changes the named rate limit `key`, shared by every node: at most `units` handed
   * out per `perMs` milliseconds (a token bucket refilled continuously). Tasks draw from it
   * through their `rate` when claimed; what a changed limit had handed out stays drawn. Needs an
   * admin token; a bad value rejects with {@link InvalidRequest} naming `units` or `per_ms`.
   */
  setLimit(key: string, limit: { units: number; perMs: number }): Promise<api.LimitView> {
    const body: api.Limit = { units: limit.units, per_ms: limit.perMs };
    return this.http.json({ method: "PUT", path: `/v1/limits/${seg(key)}`, body });
  }

  /** Every named rate limit, by key, with its bucket now. */
  async limits(): Promise<api.LimitView[]> {
    const list = await this.http.json<api.LimitList>({ method: "GET", path: "/v1/limits" });
    return list.limits;
  }

  /** One rate limit; rejects with {@link NotFound} (`limit_not_found`) if none has that name. */
  limit(key: string): Promise<api.LimitView> {
    return this.http.json({ method: "GET", path: `/v1/limits/${seg(key)}` });
  }

  /**
   * Deletes a rate limit: the tasks drawing from it are no longer held by it, and new tasks
   * naming it are refused until it is set again. Needs an admin token; rejects with
   * {@link NotFound} (`limit_not_found`) if none has that name.
   */
  async deleteLimit(key: string): Promise<void> {
    await this.http.send({ method: "DELETE", path: `/v1/limits/${seg(key)}` });
  }

  // ---- the event stream ---------------------------------------------------------------------

  /**
   * The event stream (`GET /v1/events`) as an async iterator: task transitions, workflows'
   * ends, lag notices. When the connection drops, it reconnects with the last event id it saw
   * (`Last-Event-ID`), so transitions the server still keeps are not missed. Ends when
   * `signal` is aborted or the loop breaks; rejects when Baton refuses the stream for good
   * (anything but a connection failure or 503).
   */
  async *events(options: EventsOptions = {}): AsyncGenerator<StreamItem, void, undefined> {
    let lastId = options.after;
    let failures = 0;
    const firstDelay = options.reconnectDelayMs ?? 250;
    while (!options.signal?.aborted) {
      const local = new AbortController();
      const signal = options.signal ? AbortSignal.any([options.signal, local.signal]) : local.signal;
      try {
        const response = await this.http.send({
          method: "GET",
          path: "/v1/events",
          query: { workflow: options.workflow },
          headers: { accept: "text/event-stream", ...(lastId ? { "last-event-id": lastId } : {}) },
          // The stream stays open: only `signal` ends it.
          timeoutMs: 2 ** 31 - 1,
          signal,
        });
        if (!response.body) throw new ConnectionFailed(0, "connection_failed", "no body");
        const parser = new SseParser(lastId);
        const decoder = new TextDecoder();
        const reader = response.body.getReader();
        for (;;) {
          const { done, value: chunk } = await reader.read();
          if (done) break;
          failures = 0;
          for (const ev of parser.feed(decoder.decode(chunk, { stream: true }))) {
            const item = decode(ev);
            if (!item) continue;
            if (item.type === "transition" && item.id) lastId = item.id;
            yield item;
          }
        }
      } catch (err) {
        if (options.signal?.aborted) return;
        if (!isTransient(err) && !isStreamBreak(err)) throw err;
      } finally {
        local.abort();
      }
      failures += 1;
      await sleep(Math.min(firstDelay * 2 ** (failures - 1), RECONNECT_MAX_MS), options.signal);
    }
  }
}

/** Whether a failure while reading a stream's body is the connection breaking. */
function isStreamBreak(err: unknown): boolean {
  return err instanceof TypeError || (err instanceof Error && /terminated|socket|ECONN/i.test(err.message));
}

function decode(ev: SseEvent): StreamItem | undefined {
  switch (ev.event) {
    case "transition":
      return { type: "transition", id: ev.id, event: JSON.parse(ev.data) as api.TransitionEventView };
    case "workflow":
      return { type: "workflow", event: JSON.parse(ev.data) as api.WorkflowEventView };
    case "lagged": {
      const missed = Number.parseInt(ev.data, 10);
      return { type: "lagged", missed: Number.isFinite(missed) ? missed : 0 };
    }
    default:
      return undefined;
  }
}
