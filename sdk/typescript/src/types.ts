/**
 * The SDK's public data types. Each is (or is built from) a type generated from the server's
 * OpenAPI document (`src/generated/openapi.ts`), so a change of the API that the SDK does not
 * follow fails the build.
 */
import type * as api from "./generated/openapi.js";

export type {
  AgentView,
  AuditEntryView,
  AuditPage,
  Budget,
  ClaimedTask,
  ConcurrencyKey,
  Counts,
  DeadlinesView,
  Limit,
  LimitView,
  Problem,
  RateUse,
  ReportAnswer,
  RerunAnswer,
  SignalSent,
  StateKind,
  TaskCreated,
  TaskList,
  TaskSpec,
  TaskSummary,
  TaskView,
  TransitionEventView,
  WorkflowControlAnswer,
  WorkflowCreated,
  WorkflowEventView,
  WorkflowList,
  WorkflowStatusView,
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
