import type * as api from "./generated/openapi.js";
import type { ArtifactData, ArtifactLike, Json, PutArtifactOptions, TransferOptions, Usage } from "./types.js";

/** What a {@link TaskContext} needs from the agent running the task. */
export interface TaskLink {
  /** Asks for a heartbeat carrying the latest progress now. */
  beatNow(): void;
  /** Adds subtasks under the task's lease. */
  addSubtasks(tasks: api.TaskSpec[]): Promise<api.WorkflowCreated>;
  /** Uploads an artifact with the agent's client. */
  putArtifact(data: ArtifactData, options: PutArtifactOptions): Promise<api.ArtifactStored>;
  /** Downloads an artifact with the agent's client. */
  getArtifact(artifact: ArtifactLike, options: TransferOptions): Promise<Uint8Array>;
}

/**
 * The reason of a task's `ctx.signal` once aborted: `code` says why (`task_cancelled`,
 * `stale_lease`, `task_paused`, `task_skipped`, `task_failed_by_operator`, `task_rerun`,
 * `task_superseded`, `agent_stopping`…).
 */
export class TaskAbortedError extends Error {
  readonly code: string;

  constructor(code: string) {
    super(`the task was taken back from this agent (${code})`);
    this.name = "AbortError";
    this.code = code;
  }
}

/**
 * Handed to every handler with the task's input: identifies the task, holds its dependencies'
 * results, lets the handler report progress and spending, and tells it (through `signal`) to
 * stop when Baton takes the task back or the agent stops.
 */
export class TaskContext {
  readonly taskId: string;
  readonly workflowId: string;
  /** The task's key in its workflow. */
  readonly key: string;
  /** Which attempt this is (1 for the first). */
  readonly attempt: number;
  /** The agent holding the lease. */
  readonly agentId: string;
  /** The lease's fencing token. */
  readonly token: number;
  /** Stable across redeliveries of this attempt: use it to make side effects idempotent. */
  readonly idempotencyKey: string;
  /** The workflow's W3C trace context, to continue its trace. */
  readonly traceparent: string;
  /** The results of the task's dependencies, by dependency key. */
  readonly upstream: Readonly<Record<string, Json>>;
  /** The task ids of the task's completed dependencies, by dependency key. */
  readonly upstreamTasks: Readonly<Record<string, string>>;
  /**
   * Aborted when the handler should stop: Baton cancelled, paused, skipped, failed or reran
   * the task, or gave its lease to another agent, or the agent is stopping. Its `reason` is a
   * {@link TaskAbortedError}. What the handler returns after that is not reported.
   */
  readonly signal: AbortSignal;
  /** The task's deadlines (ms since the epoch) as of Baton's latest answer. */
  deadlines: api.DeadlinesView;

  readonly #controller = new AbortController();
  readonly #link: TaskLink;
  #usage: Usage = {};
  #progress: { value: Json } | undefined;

  constructor(claimed: api.ClaimedTask, agentId: string, upstream: Record<string, Json>, link: TaskLink) {
    this.taskId = claimed.task;
    this.workflowId = claimed.workflow;
    this.key = claimed.key;
    this.attempt = claimed.attempt;
    this.agentId = agentId;
    this.token = claimed.token;
    this.idempotencyKey = claimed.idempotency_key;
    this.traceparent = claimed.traceparent;
    this.deadlines = claimed.deadlines;
    this.upstream = upstream;
    this.upstreamTasks = Object.fromEntries(
      Object.entries(claimed.upstream ?? {}).map(([key, item]) => [key, item.task]),
    );
    this.signal = this.#controller.signal;
    this.#link = link;
  }

  /** Why `signal` was aborted (`task_cancelled`, `agent_stopping`…), else undefined. */
  get cancelReason(): string | undefined {
    const reason: unknown = this.signal.reason;
    return this.signal.aborted && reason instanceof TaskAbortedError ? reason.code : undefined;
  }

  /**
   * Records progress (any JSON value) and sends it with a heartbeat right away; if calls come
   * faster than heartbeats go out, only the latest value is sent.
   */
  progress(value: Json): void {
    this.#progress = { value };
    this.#link.beatNow();
  }

  /**
   * Adds what the handler just spent, by unit: `ctx.reportUsage({tokens: 1532, usd: 0.012})`.
   * The running total goes to Baton with the next heartbeat and with the outcome, adds up per
   * task and workflow, and counts against the workflow's budgets (a budget reached may pause
   * the workflow and take this task back).
   */
  reportUsage(units: Record<string, number>): void {
    for (const [unit, amount] of Object.entries(units)) {
      if (typeof amount !== "number" || !Number.isFinite(amount) || amount < 0) {
        throw new RangeError(`usage ${unit}: expected a number of at least 0, not ${String(amount)}`);
      }
    }
    for (const [unit, amount] of Object.entries(units)) {
      this.#usage[unit] = (this.#usage[unit] ?? 0) + amount;
    }
  }

  /** What the handler has reported spending so far, by unit. */
  get usage(): Usage {
    return { ...this.#usage };
  }

  /**
   * Adds tasks to the workflow under this task's lease (their keys must be new; they may
   * depend on each other and on existing tasks).
   */
  addSubtasks(tasks: api.TaskSpec[]): Promise<api.WorkflowCreated> {
    return this.#link.addSubtasks(tasks);
  }

  /**
   * Uploads an artifact (bytes, a string, a Blob, a stream) for the task's result or a
   * subtask's input to name with {@link artifactRef}; resolves to its address, size and content
   * type. The upload is aborted with {@link signal} unless another `signal` is given.
   */
  putArtifact(data: ArtifactData, options: PutArtifactOptions = {}): Promise<api.ArtifactStored> {
    return this.#link.putArtifact(data, { ...options, signal: options.signal ?? this.signal });
  }

  /**
   * Downloads an artifact the input or a dependency's result names (`{"$artifact": …}`, or
   * its address) and resolves to its bytes, checked against its address. The download is
   * aborted with {@link signal} unless another `signal` is given.
   */
  getArtifact(artifact: ArtifactLike, options: TransferOptions = {}): Promise<Uint8Array> {
    return this.#link.getArtifact(artifact, { ...options, signal: options.signal ?? this.signal });
  }

  /** @internal The progress recorded since the last heartbeat, if any. */
  takeProgress(): { value: Json } | undefined {
    const progress = this.#progress;
    this.#progress = undefined;
    return progress;
  }

  /** @internal Aborts `signal` with `code` (the first reason wins). */
  abort(code: string): void {
    if (!this.signal.aborted) this.#controller.abort(new TaskAbortedError(code));
  }
}
