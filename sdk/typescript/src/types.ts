/**
 * The SDK's public data types. Each is (or is built from) a type generated from the server's
 * OpenAPI document (`src/generated/openapi.ts`), so a change of the API that the SDK does not
 * follow fails the build.
 */
import type * as api from "./generated/openapi.js";

export type {
  AgentView,
  ArtifactStored,
  AuditEntryView,
  AuditPage,
  Budget,
  CatchUp,
  ClaimedTask,
  ConcurrencyKey,
  Counts,
  DeadlinesView,
  EventKind,
  GraphEdge,
  GraphNode,
  HistoryEntry,
  HistoryMarkView,
  IdMatches,
  LifecycleRule,
  Limit,
  LimitView,
  Overlap,
  Problem,
  RateUse,
  Report,
  ReportAnswer,
  RerunAnswer,
  ScheduleSpec,
  ScheduleView,
  SignalDelivery,
  SignalList,
  SignalSent,
  SignalView,
  StateKind,
  TaskCreated,
  TaskHistoryMarks,
  TaskIdMatch,
  TaskList,
  TaskSpec,
  TaskSummary,
  TaskView,
  TransitionEventView,
  TriggerView,
  UpstreamResult,
  WaitFor,
  WaitingList,
  WaitingTask,
  WorkflowControlAnswer,
  WorkflowCreated,
  WorkflowEventView,
  WorkflowGraph,
  WorkflowHistory,
  WorkflowIdMatch,
  WorkflowList,
  WorkflowStatusView,
  WorkflowTemplate,
  WorkflowView,
} from "./generated/openapi.js";

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * Budgets per unit: a limit (`{usd: 5}`, policy `pause`) or the whole budget
 * (`{usd: {limit: 5, policy: "fail"}}`).
 */
export type Budgets = Record<string, number | api.Budget>;

/** What agents reported spending, per unit (`{tokens: 1532, usd: 0.012}`). */
export type Usage = api.UsageView["usage"];

/** Options of {@link Client.submitWorkflow}. */
export interface SubmitWorkflowOptions {
  /** The workflow's name (default: the server's). */
  name?: string;
  /** Submitting again with the same key returns the first submission (`created: false`). */
  idempotencyKey?: string;
  /** The workflow's result, built from its tasks' results once it completes. */
  outputs?: api.SubmitWorkflow["outputs"];
  /** Labels to filter and scope workflows by (`{tenant: "acme"}`). */
  labels?: Record<string, string>;
  /** Budgets on what its agents report spending. */
  budgets?: Budgets;
}

/** Options of {@link Client.submitTask}. */
export type SubmitTaskOptions = Omit<SubmitWorkflowOptions, "name" | "outputs">;

/** Filters of {@link Client.listWorkflows}. */
export interface ListWorkflowsOptions {
  status?: api.WorkflowStatusView;
  /** Only workflows whose name contains this (ignoring case). */
  name?: string;
  /** Only workflows carrying this label, `key:value`. */
  label?: string;
  /** The `next` of the previous page. */
  before?: string;
  /** At most this many (1 to 100, default 20). */
  limit?: number;
}

/** Filters of {@link Client.listTasks}. */
export interface ListTasksOptions {
  workflow?: string;
  state?: api.StateKind;
  /** The `next` of the previous page. */
  after?: string;
  limit?: number;
}

/** A page of {@link Client.listAgents}. */
export interface ListAgentsOptions {
  /** The `next` of the previous page. */
  after?: string;
  /** At most this many (1 to 1000, default 100). */
  limit?: number;
}

/** A page of {@link Client.listSchedules} or {@link Client.listTriggers}, by name. */
export interface ListByNameOptions {
  /** The `next` of the previous page. */
  after?: string;
  /** At most this many (1 to 1000, default 100). */
  limit?: number;
}

/** Filters of {@link Client.audit}. */
export interface AuditOptions {
  /** The name of the token that acted. */
  actor?: string;
  workflow?: string;
  action?: string;
  /** Entries at or after this time (ms since the epoch). */
  since?: number;
  /** Entries before this time (ms since the epoch). */
  until?: number;
  /** The `next` of the previous page. */
  before?: number;
  limit?: number;
}

/** An item of {@link Client.events}. */
export type StreamItem =
  /** A task's transition; `id` resumes the stream after it. */
  | { type: "transition"; id: string | undefined; event: api.TransitionEventView }
  /** A workflow ended (not numbered, not resent on a resume). */
  | { type: "workflow"; event: api.WorkflowEventView }
  /** Some transitions were missed (`missed`, 0 when unknown): re-read the state. */
  | { type: "lagged"; missed: number };

/** Options of {@link Client.events}. */
export interface EventsOptions {
  /** Resume after this event id (a transition's `id`). */
  after?: string;
  /** Only this workflow's transitions. */
  workflow?: string;
  /** Ends the iteration when aborted. */
  signal?: AbortSignal;
  /** Pause before reconnecting after the stream dropped, in ms (default 250, doubling to 5 s). */
  reconnectDelayMs?: number;
}

/** Options of {@link Client.iterTasks}: the filters of {@link Client.listTasks}, and a page size. */
export interface IterTasksOptions {
  workflow?: string;
  state?: api.StateKind;
  /** Tasks fetched per request (1 to 1000, default 100). */
  pageSize?: number;
}

/** A page's bounds for {@link Client.taskHistory} and {@link Client.signals}. */
export interface SeqPageOptions {
  /** Entries with a sequence number (id) above this: the last one seen, or the page's `next`. */
  after?: number;
  /** At most this many (1 to 1000, default 100). */
  limit?: number;
}

/** Options of {@link Client.workflowHistory}. */
export interface WorkflowHistoryOptions {
  /** Tasks with ids after this one: the `next` of the previous page. */
  after?: string;
  /** The history of at most this many tasks (1 to 500, default 200). */
  limit?: number;
}

/** Options of {@link Client.waiting}. */
export interface WaitingOptions {
  /** Only this workflow's tasks. */
  workflow?: string;
  /** The `next` of the previous page. */
  after?: string;
  /** At most this many (1 to 1000, default 100). */
  limit?: number;
}

/** The results of a task's completed dependencies, by dependency key. */
export type Upstream = Record<string, api.UpstreamResult>;

/**
 * The workflow a schedule or a trigger submits: {@link WorkflowTemplate}, with budgets given as
 * for {@link Client.submitWorkflow} (`{usd: 5}` or `{usd: {limit: 5, policy: "fail"}}`).
 */
export type WorkflowTemplateInput = Omit<api.WorkflowTemplate, "budgets"> & { budgets?: Budgets };

/** A schedule to create: {@link ScheduleSpec} with its workflow as a {@link WorkflowTemplateInput}. */
export type ScheduleSpecInput = Omit<api.ScheduleSpec, "workflow"> & { workflow: WorkflowTemplateInput };

/** A lifecycle diagram's format for {@link Client.lifecycle}. */
export type DiagramFormat = "mermaid" | "dot";

// ---- artifacts -----------------------------------------------------------------------------

/**
 * What {@link Client.putArtifact} uploads: bytes (a `Uint8Array`, `Buffer` or `ArrayBuffer`), a
 * string (sent as UTF-8), a `Blob` (e.g. a file: `await fs.openAsBlob(path)`), or a stream of
 * bytes (a web `ReadableStream` or an async iterable such as `fs.createReadStream(path)`),
 * streamed without being read whole into memory.
 */
export type ArtifactData =
  | Uint8Array
  | ArrayBuffer
  | string
  | Blob
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>;

/** How an input or a result names an artifact: `{"$artifact": "sha256:…"}`. */
export interface ArtifactRef {
  $artifact: string;
}

/**
 * An artifact, as the calls that read one take it: its address (`sha256:<hex>` or the bare
 * hex), what {@link Client.putArtifact} answered, or an {@link ArtifactRef}.
 */
export type ArtifactLike = string | Pick<api.ArtifactStored, "artifact"> | ArtifactRef;

/** An artifact stored: its address, size in bytes and content type (as HEAD and GET answer). */
export type ArtifactInfo = Required<Omit<api.ArtifactStored, "created">>;

/** Options of the calls that move an artifact's bytes. */
export interface TransferOptions {
  /** Aborts the transfer (the call rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Longest the whole transfer may take, in ms (default one hour). */
  timeoutMs?: number;
}

/** Options of {@link Client.putArtifact}. */
export interface PutArtifactOptions extends TransferOptions {
  /**
   * Recorded with the artifact and served back (default: a Blob's own type,
   * `text/plain; charset=utf-8` for a string, else `application/octet-stream`).
   */
  contentType?: string;
}
