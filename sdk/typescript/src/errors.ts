import type { Problem } from "./generated/openapi.js";

/**
 * A request Baton refused, or could not be asked. Fields mirror the RFC 9457 problem document
 * (`application/problem+json`): `status` is the HTTP status (0 when no answer came), `code` the
 * stable machine-readable code (`cycle`, `stale_lease`, `budget_reached`…), `field` the request
 * field at fault (`tasks[0].retry.max_attempts`), `expected` what was expected instead.
 */
export class BatonError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly field: string | undefined;
  readonly expected: string | undefined;
  /** The lifecycle rule that refused an event, if any. */
  readonly rule: string | undefined;
  /** The task's state when an event was refused, if any. */
  readonly state: string | undefined;
  /** The task keys of a dependency cycle, if that is what was refused. */
  readonly cycle: string[] | undefined;
  /** The whole problem document, when the answer was one. */
  readonly problem: Partial<Problem> | undefined;

  constructor(status: number, code: string, detail: string, problem?: Partial<Problem>) {
    super(status ? `${status} ${code}: ${detail}` : `${code}: ${detail}`);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.problem = problem;
    this.field = problem?.field ?? undefined;
    this.expected = problem?.expected ?? undefined;
    this.rule = problem?.rule ?? undefined;
    this.state = problem?.state ?? undefined;
    this.cycle = problem?.cycle ?? undefined;
  }
}

/** The request was malformed or a field was out of bounds (400, 413, 415, 422). */
export class InvalidRequest extends BatonError {}

/** No valid bearer token was sent (401). */
export class Unauthorized extends BatonError {}

/** The token's role may not do this (403). */
export class Forbidden extends BatonError {}

/** No such task, workflow, agent or endpoint (404). */
export class NotFound extends BatonError {}

/**
 * The request conflicts with the task's or workflow's state (409): `stale_lease`,
 * `task_cancelled`, `not_accepted`, `budget_reached`, `idempotency_mismatch`…
 */
export class Conflict extends BatonError {}

/**
 * Baton is busy, shutting down or cannot reach its store (503): trying again later may work.
 * `retryAfter` is the server's hint in seconds, when it sent one.
 */
export class Unavailable extends BatonError {
  retryAfter: number | undefined;
}

/**
 * The token sent more requests per second than the server allows (429, `rate_limited`):
 * `retryAfter` says when to try again.
 */
export class RateLimited extends Unavailable {}

/** Baton could not be reached, the request timed out, or the connection broke (`status` 0). */
export class ConnectionFailed extends BatonError {}

/**
 * Thrown by a task handler to fail the task for good, whatever attempts are left. `kind` is the
 * error kind reported to Baton (default: the class name).
 */
export class NonRetryableError extends Error {
  readonly kind: string | undefined;

  constructor(message = "", options: { kind?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.kind = options.kind;
  }
}

const BY_STATUS: Record<number, typeof BatonError> = {
  400: InvalidRequest,
  408: Unavailable,
  429: RateLimited,
  401: Unauthorized,
  403: Forbidden,
  404: NotFound,
  409: Conflict,
  413: InvalidRequest,
  415: InvalidRequest,
  422: InvalidRequest,
  503: Unavailable,
};

/**
 * The error for a refused request, from its status, its body (a decoded problem document, or
 * the raw text) and its `Retry-After` header.
 */
export function errorFromResponse(status: number, body: unknown, retryAfter?: string | null): BatonError {
  const Kind = BY_STATUS[status] ?? BatonError;
  let err: BatonError;
  if (body !== null && typeof body === "object" && typeof (body as Problem).code === "string") {
    const problem = body as Problem;
    err = new Kind(status, problem.code, String(problem.detail ?? ""), problem);
  } else {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    err = new Kind(status, `http_${status}`, text.slice(0, 500));
  }
  if (err instanceof Unavailable && retryAfter) {
    const seconds = Number(retryAfter);
    if (Number.isFinite(seconds)) err.retryAfter = seconds;
  }
  return err;
}

/** Whether trying the same request again later may succeed (connection failure, 408, 429, 503). */
export function isTransient(err: unknown): boolean {
  return err instanceof ConnectionFailed || err instanceof Unavailable;
}
