import { createHash, type Hash } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { ConnectionFailed, InvalidRequest, NotFound, isTransient } from "./errors.js";
import type * as api from "./generated/openapi.js";
import { type Call, type ConnectionOptions, type RawBody, Transport, seg } from "./http.js";
import { SseParser, type SseEvent } from "./sse.js";
import type {
  ArtifactData,
  ArtifactInfo,
  ArtifactLike,
  ArtifactRef,
  AuditOptions,
  Budgets,
  DiagramFormat,
  EventsOptions,
  IterTasksOptions,
  Json,
  ListAgentsOptions,
  ListByNameOptions,
  ListTasksOptions,
  ListWorkflowsOptions,
  PutArtifactOptions,
  ScheduleSpecInput,
  SeqPageOptions,
  StreamItem,
  SubmitTaskOptions,
  SubmitWorkflowOptions,
  HistoryEntry,
  TransferOptions,
  Upstream,
  Usage,
  WaitingOptions,
  WorkflowHistoryOptions,
  WorkflowTemplateInput,
} from "./types.js";

/** Options of {@link Client}. */
export type ClientOptions = ConnectionOptions;

/** The most a claim may wait for work, in ms (the server's bound). */
export const CLAIM_WAIT_MAX_MS = 60_000;

const RECONNECT_MAX_MS = 5_000;

/** Longest an artifact's upload or download may take by default, in ms. */
export const ARTIFACT_TRANSFER_TIMEOUT_MS = 3_600_000;

/** Budgets in the API's shape: every unit as `{limit, policy?}`. */
function budgetsBody(budgets: Budgets): Record<string, api.Budget> {
  return Object.fromEntries(
    Object.entries(budgets).map(([unit, b]) => [unit, typeof b === "number" ? { limit: b } : b]),
  );
}

/** A workflow template in the API's shape (budgets as `{limit, policy?}`). */
function templateBody(template: WorkflowTemplateInput): api.WorkflowTemplate {
  const { budgets, ...rest } = template;
  return budgets === undefined ? rest : { ...rest, budgets: budgetsBody(budgets) };
}

/**
 * The JSON value that names an artifact in an input or a result, `{"$artifact": "sha256:…"}`,
 * from its address or what {@link Client.putArtifact} answered.
 */
export function artifactRef(artifact: ArtifactLike): ArtifactRef {
  return { $artifact: artifactAddress(artifact) };
}

/** An artifact's address as given (`sha256:<hex>` or the bare hex). */
function artifactAddress(artifact: ArtifactLike): string {
  if (typeof artifact === "string") return artifact;
  if ("$artifact" in artifact) return artifact.$artifact;
  return artifact.artifact;
}

/** What to send for `data`, and its default content type. */
function artifactBody(data: ArtifactData): { body: RawBody; contentType: string } {
  if (typeof data === "string") {
    return { body: new TextEncoder().encode(data), contentType: "text/plain; charset=utf-8" };
  }
  if (data instanceof Blob) return { body: data, contentType: data.type || "application/octet-stream" };
  if (data instanceof Uint8Array || data instanceof ArrayBuffer || data instanceof ReadableStream) {
    return { body: data, contentType: "application/octet-stream" };
  }
  if (data !== null && typeof data === "object" && Symbol.asyncIterator in data) {
    return { body: streamOf(data), contentType: "application/octet-stream" };
  }
  throw new TypeError("an artifact is bytes, a string, a Blob or a stream of bytes");
}

/** An async iterable of bytes as a web stream, read as the upload needs it. */
function streamOf(chunks: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const iterator = chunks[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await iterator.next();
      if (done) controller.close();
      // A Node stream opened with an encoding yields strings: they are sent as UTF-8.
      else controller.enqueue(typeof value === "string" ? new TextEncoder().encode(value) : value);
    },
    async cancel(reason) {
      await iterator.return?.(reason);
    },
  });
}

/** Checks downloaded bytes against the address they were asked by (their SHA-256). */
class ArtifactCheck {
  readonly #hash: Hash = createHash("sha256");
  #size = 0;

  constructor(readonly address: string) {}

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#size += chunk.length;
  }

  /** Throws a {@link ConnectionFailed} (`artifact_corrupt`) unless the bytes match. */
  verify(): void {
    const hex = this.address.replace(/^sha256:/i, "").toLowerCase();
    if (this.#hash.digest("hex") !== hex) {
      throw new ConnectionFailed(
        0,
        "artifact_corrupt",
        `the ${this.#size} bytes received are not artifact ${this.address}`,
      );
    }
  }
}

/** An artifact's address, size and content type from the headers it is served with. */
function artifactInfo(response: Response, address: string): ArtifactInfo {
  const etag = response.headers.get("etag")?.replace(/^"|"$/g, "");
  const length = response.headers.get("content-length");
  return {
    artifact: etag || address,
    size: length === null ? Number.NaN : Number(length),
    content_type: response.headers.get("content-type"),
  };
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

  /**
   * Every task matching the filters, oldest first, as an async iterator that fetches one page
   * (`pageSize` tasks) at a time: `for await (const task of client.iterTasks({workflow}))`.
   */
  async *iterTasks(options: IterTasksOptions = {}): AsyncGenerator<api.TaskSummary, void, undefined> {
    let after: string | undefined;
    for (;;) {
      const page = await this.listTasks({
        workflow: options.workflow,
        state: options.state,
        after,
        limit: options.pageSize ?? 100,
      });
      yield* page.tasks;
      if (!page.next || page.tasks.length === 0) return;
      after = page.next;
    }
  }

  /**
   * A task's history entries with a sequence number above `after`, oldest first (at most
   * `limit`, default 100): each its `seq`, time, actor, event kind and `data`, the event with its fields.
   */
  taskHistory(taskId: string, options: SeqPageOptions = {}): Promise<HistoryEntry[]> {
    return this.http.json({ method: "GET", path: `/v1/tasks/${seg(taskId)}/history`, query: { ...options } });
  }

  /**
   * The results of a task's completed dependencies by key, each `{task, result}`; past 4 MiB of
   * them a result is withheld (`{task, withheld_bytes}`). With `key`, only that dependency's,
   * whatever its size (a key that is not a dependency is an {@link InvalidRequest}).
   */
  taskUpstream(taskId: string, options: { key?: string } = {}): Promise<Upstream> {
    return this.http.json({ method: "GET", path: `/v1/tasks/${seg(taskId)}/upstream`, query: { key: options.key } });
  }

  /** A workflow's dependency graph: its tasks (`nodes`, with their states) and `edges`. */
  workflowGraph(workflowId: string): Promise<api.WorkflowGraph> {
    return this.http.json({ method: "GET", path: `/v1/workflows/${seg(workflowId)}/graph` });
  }

  /**
   * A page of the history of a workflow's tasks, in task id order: each entry's `seq`, time
   * and event kind, without the event's data, heartbeats left out (a task's full history is
   * {@link taskHistory}); pass `next` as `after` for the next page.
   */
  workflowHistory(workflowId: string, options: WorkflowHistoryOptions = {}): Promise<api.WorkflowHistory> {
    return this.http.json({
      method: "GET",
      path: `/v1/workflows/${seg(workflowId)}/history`,
      query: { ...options },
    });
  }

  /** Tasks per state, of one workflow or of all. */
  counts(workflowId?: string): Promise<api.Counts> {
    return this.http.json({ method: "GET", path: "/v1/counts", query: { workflow: workflowId } });
  }

  /**
   * What a short id stands for: the tasks and workflows whose ids end in `suffix` (4 to 32 hex
   * digits, hyphens ignored); `more` says that more match than are listed (10 of each).
   */
  lookupId(suffix: string): Promise<api.IdMatches> {
    return this.http.json({ method: "GET", path: `/v1/ids/${seg(suffix)}` });
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

  /**
   * A page of the signals sent to a workflow, oldest first: delivered, or kept for a task to
   * come; pass `next` as `after` for the next page.
   */
  signals(workflowId: string, options: SeqPageOptions = {}): Promise<api.SignalList> {
    return this.http.json({
      method: "GET",
      path: `/v1/workflows/${seg(workflowId)}/signals`,
      query: { ...options },
    });
  }

  /**
   * A page of the tasks waiting for a signal (`wait_for`), in every workflow or in
   * `workflow`: what people are asked to approve, each with the signal it waits for and its
   * input; pass `next` as `after` for the next page.
   */
  waiting(options: WaitingOptions = {}): Promise<api.WaitingList> {
    return this.http.json({ method: "GET", path: "/v1/waiting", query: { ...options } });
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

  /**
   * The task lifecycle Baton enforces: a state diagram as Mermaid (default) or DOT source, or,
   * with `"json"`, its rules (from, event, guards, to, effects).
   */
  lifecycle(format?: DiagramFormat): Promise<string>;
  lifecycle(format: "json"): Promise<api.LifecycleRule[]>;
  async lifecycle(format: DiagramFormat | "json" = "mermaid"): Promise<string | api.LifecycleRule[]> {
    if (format === "json") return this.http.json({ method: "GET", path: "/v1/lifecycle", query: { format } });
    const response = await this.http.send({
      method: "GET",
      path: "/v1/lifecycle",
      query: { format },
      headers: { accept: "text/plain" },
    });
    return response.text();
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

  // ---- schedules and triggers ---------------------------------------------------------------

  /**
   * Creates a schedule: at each tick of `cron` (with seconds: `"0 30 9 * * MON-FRI"`, read in
   * `timezone`, UTC by default) it submits `workflow` once, with the idempotency key
   * `schedule:NAME:TICK_MS`. `overlap` says what a tick does while the previous one's workflow
   * runs (`skip`, `allow`, `cancel_previous`), `catch_up` what happens to ticks missed while no
   * node ran. Resolves to the schedule with its next fire times; a name in use rejects with
   * {@link Conflict} (`schedule_exists`), a bad field with {@link InvalidRequest} naming it.
   */
  createSchedule(spec: ScheduleSpecInput): Promise<api.ScheduleView> {
    const body: api.ScheduleSpec = { ...spec, workflow: templateBody(spec.workflow) };
    return this.http.json({ method: "POST", path: "/v1/schedules", body });
  }

  /** A page of schedules by name; pass `next` as `after` for the next page. */
  listSchedules(options: ListByNameOptions = {}): Promise<api.ScheduleList> {
    return this.http.json({ method: "GET", path: "/v1/schedules", query: { ...options } });
  }

  /** Every schedule by name, read a page at a time. */
  async *iterSchedules(pageSize = 100): AsyncGenerator<api.ScheduleView> {
    let after: string | undefined;
    for (;;) {
      const page = await this.listSchedules({ after, limit: pageSize });
      yield* page.schedules;
      if (page.next === undefined || page.next === null) return;
      after = page.next;
    }
  }

  /** Every schedule, by name, with its next fire times (read a page of 1,000 at a time). */
  async schedules(): Promise<api.ScheduleView[]> {
    const all: api.ScheduleView[] = [];
    for await (const schedule of this.iterSchedules(1000)) all.push(schedule);
    return all;
  }

  /** One schedule; rejects with {@link NotFound} (`schedule_not_found`) if none has that name. */
  schedule(name: string): Promise<api.ScheduleView> {
    return this.http.json({ method: "GET", path: `/v1/schedules/${seg(name)}` });
  }

  /** Stops a schedule's ticks until it is resumed; resolves to it (`paused`, no `next`). */
  pauseSchedule(name: string): Promise<api.ScheduleView> {
    return this.http.json({ method: "POST", path: `/v1/schedules/${seg(name)}/pause`, body: {} });
  }

  /**
   * Resumes a paused schedule from its next tick after now (the ticks it slept through are not
   * caught up); resolves to it.
   */
  resumeSchedule(name: string): Promise<api.ScheduleView> {
    return this.http.json({ method: "POST", path: `/v1/schedules/${seg(name)}/resume`, body: {} });
  }

  /** Deletes a schedule; the workflows it submitted stay. */
  async deleteSchedule(name: string): Promise<void> {
    await this.http.send({ method: "DELETE", path: `/v1/schedules/${seg(name)}` });
  }

  /**
   * Registers (or replaces) the trigger `name`: the workflow {@link fireTrigger} submits. In its
   * tasks' inputs, `{"$input": "/json/pointer"}` stands for what the pointer finds in the fired
   * input (`""`: all of it). Resolves to the trigger.
   */
  putTrigger(name: string, template: WorkflowTemplateInput): Promise<api.TriggerView> {
    return this.http.json({ method: "PUT", path: `/v1/triggers/${seg(name)}`, body: templateBody(template) });
  }

  /** A page of triggers by name; pass `next` as `after` for the next page. */
  listTriggers(options: ListByNameOptions = {}): Promise<api.TriggerList> {
    return this.http.json({ method: "GET", path: "/v1/triggers", query: { ...options } });
  }

  /** Every trigger by name, read a page at a time. */
  async *iterTriggers(pageSize = 100): AsyncGenerator<api.TriggerView> {
    let after: string | undefined;
    for (;;) {
      const page = await this.listTriggers({ after, limit: pageSize });
      yield* page.triggers;
      if (page.next === undefined || page.next === null) return;
      after = page.next;
    }
  }

  /** Every trigger, by name (read a page of 1,000 at a time). */
  async triggers(): Promise<api.TriggerView[]> {
    const all: api.TriggerView[] = [];
    for await (const trigger of this.iterTriggers(1000)) all.push(trigger);
    return all;
  }

  /** One trigger; rejects with {@link NotFound} (`trigger_not_found`) if none has that name. */
  trigger(name: string): Promise<api.TriggerView> {
    return this.http.json({ method: "GET", path: `/v1/triggers/${seg(name)}` });
  }

  /**
   * Submits trigger `name`'s workflow with `input` (any JSON, `{}` by default) in place of its
   * `$input` placeholders. With the same `idempotencyKey` it submits once: a repeat resolves to
   * the first workflow (`created: false`); another input with the same key rejects with
   * {@link Conflict} (`idempotency_mismatch`), an input lacking what a placeholder points at
   * with {@link InvalidRequest} (`field` `body`).
   */
  fireTrigger(
    name: string,
    input?: Json,
    options: { idempotencyKey?: string } = {},
  ): Promise<api.WorkflowCreated> {
    return this.http.json({
      method: "POST",
      path: `/v1/triggers/${seg(name)}`,
      body: input === undefined ? {} : input,
      headers: options.idempotencyKey !== undefined ? { "idempotency-key": options.idempotencyKey } : undefined,
    });
  }

  /** Deletes a trigger; the workflows it submitted stay. */
  async deleteTrigger(name: string): Promise<void> {
    await this.http.send({ method: "DELETE", path: `/v1/triggers/${seg(name)}` });
  }

  // ---- artifacts ----------------------------------------------------------------------------

  /**
   * Uploads an artifact (see {@link ArtifactData}: bytes, a string, a Blob, a stream) and
   * resolves to where it is stored: its address `artifact` (`sha256:<hex>` of the bytes), size
   * and content type; `created` is false when the same bytes were there already. Name it in an
   * input or result with {@link artifactRef}. Over the server's limit (256 MiB by default) it
   * rejects with {@link InvalidRequest} (status 413, `artifact_too_large`) and nothing is stored.
   */
  putArtifact(data: ArtifactData, options: PutArtifactOptions = {}): Promise<api.ArtifactStored> {
    const { body, contentType } = artifactBody(data);
    return this.http.json({
      method: "PUT",
      path: "/v1/artifacts",
      raw: { body, contentType: options.contentType ?? contentType },
      timeoutMs: options.timeoutMs ?? ARTIFACT_TRANSFER_TIMEOUT_MS,
      signal: options.signal,
    });
  }

  /**
   * Downloads an artifact and resolves to its bytes, checked against its address (else a
   * {@link ConnectionFailed} with code `artifact_corrupt`). An unknown artifact rejects with
   * {@link NotFound} (`artifact_not_found`), a malformed address with {@link InvalidRequest}
   * (`artifact_ref_invalid`). Use {@link saveArtifact} for what should not be held in memory.
   */
  async getArtifact(artifact: ArtifactLike, options: TransferOptions = {}): Promise<Uint8Array> {
    const address = artifactAddress(artifact);
    const check = new ArtifactCheck(address);
    const chunks: Uint8Array[] = [];
    await this.http.download(this.#artifactCall("GET", address, options), (chunk) => {
      check.update(chunk);
      chunks.push(chunk);
    });
    check.verify();
    const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, at);
      at += chunk.length;
    }
    return bytes;
  }

  /**
   * Downloads an artifact into the file at `path`, streamed: written to `path.part`, checked
   * against its address, then renamed, so that `path` appears only complete and checked.
   * Resolves to the artifact's address, size and content type; rejects as
   * {@link getArtifact} does (leaving no file behind).
   */
  async saveArtifact(artifact: ArtifactLike, path: string, options: TransferOptions = {}): Promise<ArtifactInfo> {
    const address = artifactAddress(artifact);
    const check = new ArtifactCheck(address);
    const part = `${path}.part`;
    let file: Awaited<ReturnType<typeof open>> | undefined;
    try {
      const response = await this.http.download(this.#artifactCall("GET", address, options), async (chunk) => {
        file ??= await open(part, "w");
        check.update(chunk);
        await file.write(chunk);
      });
      file ??= await open(part, "w");
      await file.sync();
      await file.close();
      file = undefined;
      check.verify();
      await rename(part, path);
      return artifactInfo(response, address);
    } catch (err) {
      await file?.close().catch(() => undefined);
      await rm(part, { force: true });
      throw err;
    }
  }

  /**
   * Whether an artifact is stored, without downloading it (`HEAD`): resolves to its address,
   * size and content type, or `undefined` if there is none at that address. A malformed
   * address rejects with {@link InvalidRequest} (`artifact_ref_invalid`).
   */
  async headArtifact(artifact: ArtifactLike, options: TransferOptions = {}): Promise<ArtifactInfo | undefined> {
    const address = artifactAddress(artifact);
    try {
      const response = await this.http.send({ ...this.#artifactCall("HEAD", address, options), timeoutMs: options.timeoutMs });
      return artifactInfo(response, address);
    } catch (err) {
      // A HEAD answer has no body: the problem's code is the one the document gives the status.
      if (err instanceof NotFound) return undefined;
      if (err instanceof InvalidRequest && err.status === 400) {
        throw new InvalidRequest(400, "artifact_ref_invalid", `\`${address}\` is not an artifact reference`);
      }
      throw err;
    }
  }

  #artifactCall(method: "GET" | "HEAD", address: string, options: TransferOptions): Call {
    return {
      method,
      path: `/v1/artifacts/${seg(address)}`,
      headers: { accept: "*/*" },
      timeoutMs: options.timeoutMs ?? ARTIFACT_TRANSFER_TIMEOUT_MS,
      signal: options.signal,
    };
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
