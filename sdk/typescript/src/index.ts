/**
 * Baton's TypeScript SDK: {@link Client} for operators (submit, inspect, control, follow
 * events) and {@link Agent} for the processes that run tasks.
 */
export { Agent, beatInterval, failureOf, BEAT_MIN_MS, REPORT_ATTEMPTS } from "./agent.js";
export type { AgentOptions, Handler, Logger } from "./agent.js";
export { REPORTS_PER_BATCH_MAX } from "./batch.js";
export type { ReportOutcome } from "./batch.js";
export { ARTIFACT_TRANSFER_TIMEOUT_MS, artifactRef, Client, CLAIM_WAIT_MAX_MS } from "./client.js";
export type { ClientOptions } from "./client.js";
export { TaskAbortedError, TaskContext } from "./context.js";
export {
  BatonError,
  Conflict,
  ConnectionFailed,
  Forbidden,
  InvalidRequest,
  NonRetryableError,
  NotFound,
  Unauthorized,
  RateLimited,
  Unavailable,
  errorFromResponse,
} from "./errors.js";
export { DEFAULT_URL } from "./http.js";
export type { ConnectionOptions } from "./http.js";
export type * from "./types.js";
