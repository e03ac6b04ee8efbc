/**
 * Reports in batches (`POST /v1/reports`): {@link sendReports} sends one batch and answers each
 * report on its own; {@link ReportBatcher} is the agent's queue, which sends whatever queued
 * while its previous batch was in flight as the next batch. A lone report goes at once; under
 * load, reports share requests (and the server's commits) without waiting on a timer.
 *
 * Bounds: a batch carries at most {@link REPORTS_PER_BATCH_MAX} reports and at most
 * {@link BATCH_BYTES_MAX} bytes of JSON, whatever the size of the results in it (the server
 * refuses a body over 8 MiB whole, with 413 for every report in it): each report's size is
 * measured when the batcher takes it from the queue, one that would take the batch past the cap
 * waits for the next batch, and one larger than the cap on its own is sent alone, as its own
 * request (`POST /v1/tasks/{task}/{report}`), its promise settling the same way. At most
 * `queuedMax` reports wait (the agent passes its concurrency: it has at most one request per held task out),
 * and more is a bug in the caller (thrown).
 */
import { BatonError, errorFromResponse } from "./errors.js";
import type * as api from "./generated/openapi.js";
import { seg, type Transport } from "./http.js";

/** Most reports one `POST /v1/reports` may carry (the server's bound). */
export const REPORTS_PER_BATCH_MAX = 256;

/**
 * Most bytes of JSON (UTF-8, as sent) the reports of one batch carry: well under the server's
 * body limit (8 MiB) however large the results in them (up to 1 MiB each by default, more with a
 * raised `--payload-bytes-max`). A report larger than this on its own is sent alone.
 */
export const BATCH_BYTES_MAX = 1024 * 1024;

const utf8 = new TextEncoder();

/**
 * A report's size as JSON, in UTF-8 bytes, as a request will carry it; one that cannot be
 * encoded counts as too large to share a batch, so that its own request fails for it alone.
 */
export function reportBytes(report: api.Report): number {
  try {
    const json = JSON.stringify(report);
    return json === undefined ? BATCH_BYTES_MAX + 1 : utf8.encode(json).length;
  } catch {
    return BATCH_BYTES_MAX + 1;
  }
}

/**
 * What one report of a batch got: its answer, or the {@link BatonError} its own request would
 * have been refused with (a `Conflict` `stale_lease`, …; `field` starts `reports[i]`).
 */
export type ReportOutcome = api.ReportAnswer | BatonError;

/**
 * Sends `reports` as one request; one outcome per report, in order. Rejects only when the
 * request fails as a whole: not a valid batch (`InvalidRequest`), or not delivered.
 */
export async function sendReports(http: Transport, reports: api.Report[]): Promise<ReportOutcome[]> {
  const body: api.ReportBatch = { reports };
  const answered = await http.json<api.ReportBatchAnswer>({ method: "POST", path: "/v1/reports", body });
  if (answered.answers.length !== reports.length) {
    // The server answers every report; anything else is a broken answer, not a refusal.
    throw new BatonError(200, "bad_answer", `${answered.answers.length} answers to ${reports.length} reports`);
  }
  return answered.answers.map(outcomeOf);
}

/**
 * Sends one report as its own request, `POST /v1/tasks/{task}/{report}` (its body: the report
 * without `report` and `task`); its answer, or the error its request is refused with.
 */
export function sendReport(http: Transport, report: api.Report): Promise<api.ReportAnswer> {
  const { report: what, task, ...body } = report;
  return http.json<api.ReportAnswer>({ method: "POST", path: `/v1/tasks/${seg(task)}/${what}`, body });
}

function outcomeOf(item: api.ReportOutcome): ReportOutcome {
  if (item.answer) return item.answer;
  if (!item.problem) return new BatonError(item.status, "bad_answer", `report on ${item.task}: no answer`);
  // The error the report's own request would have thrown (a Conflict for a 409, …).
  return errorFromResponse(item.status, item.problem);
}

interface Queued {
  report: api.Report;
  resolve: (answer: api.ReportAnswer) => void;
  reject: (err: unknown) => void;
}

/**
 * One batch in flight at a time; reports sent meanwhile queue for the next one. Each report's
 * promise settles with its own outcome; a request that fails as a whole (not delivered, 5xx,
 * 429) rejects every report in it with that error, for the caller's usual retries (reports are
 * safe to send again). A report over {@link BATCH_BYTES_MAX} goes alone through `sendOne`.
 */
export class ReportBatcher {
  readonly #send: (reports: api.Report[]) => Promise<ReportOutcome[]>;
  readonly #sendOne: (report: api.Report) => Promise<api.ReportAnswer>;
  readonly #queuedMax: number;
  #queued: Queued[] = [];
  /** The size of `#queued[0]`, once measured (it was carried over from the last batch). */
  #firstBytes: number | undefined;
  #sending = false;

  constructor(
    send: (reports: api.Report[]) => Promise<ReportOutcome[]>,
    sendOne: (report: api.Report) => Promise<api.ReportAnswer>,
    queuedMax: number,
  ) {
    this.#send = send;
    this.#sendOne = sendOne;
    this.#queuedMax = queuedMax;
  }

  /** Queues `report` for the next batch (sent at once if none is in flight); its answer. */
  send(report: api.Report): Promise<api.ReportAnswer> {
    if (this.#queued.length >= this.#queuedMax) {
      throw new Error(`more than ${this.#queuedMax} reports queued: more than one per held task`);
    }
    const answered = new Promise<api.ReportAnswer>((resolve, reject) => {
      this.#queued.push({ report, resolve, reject });
    });
    if (!this.#sending) void this.#drain();
    return answered;
  }

  /**
   * The next batch: what queued, oldest first, within {@link REPORTS_PER_BATCH_MAX} reports and
   * {@link BATCH_BYTES_MAX} bytes; the report that would go past the byte cap stays first, for
   * the next batch. `alone`: a lone report larger than the cap, to be sent on its own.
   */
  #take(): { batch: Queued[]; alone: boolean } {
    const batch: Queued[] = [];
    let total = 0;
    while (this.#queued.length > 0 && batch.length < REPORTS_PER_BATCH_MAX) {
      const size = this.#firstBytes ?? reportBytes(this.#queued[0].report);
      this.#firstBytes = undefined;
      if (size > BATCH_BYTES_MAX && batch.length === 0) {
        return { batch: this.#queued.splice(0, 1), alone: true };
      }
      if (total + size > BATCH_BYTES_MAX) {
        this.#firstBytes = size; // measured already: carried to the next batch
        break;
      }
      total += size;
      batch.push(this.#queued.shift() as Queued);
    }
    return { batch, alone: false };
  }

  async #drain(): Promise<void> {
    // Set before the first await: a report sent while this runs is in the next batch.
    this.#sending = true;
    try {
      while (this.#queued.length > 0) {
        const { batch, alone } = this.#take();
        let outcomes: ReportOutcome[];
        try {
          outcomes = alone ? [await this.#sendOne(batch[0].report)] : await this.#send(batch.map((q) => q.report));
        } catch (err) {
          for (const q of batch) q.reject(err);
          continue;
        }
        batch.forEach((q, i) => {
          const outcome = outcomes[i];
          if (outcome instanceof BatonError) q.reject(outcome);
          else q.resolve(outcome);
        });
      }
    } finally {
      this.#sending = false;
    }
  }
}
