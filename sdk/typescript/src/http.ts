import { ConnectionFailed, errorFromResponse } from "./errors.js";

/** The server's address when none is given and `BATON_URL` is unset. */
export const DEFAULT_URL = "http://127.0.0.1:7700";

/** Options shared by the client and the agent for reaching Baton. */
export interface ConnectionOptions {
  /** A bearer token (default: `BATON_TOKEN`). */
  token?: string;
  /** Longest a request may take, in milliseconds (default 30 000; a claim adds its wait). */
  requestTimeoutMs?: number;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

/** A request body sent as it is rather than as JSON: bytes, a Blob, or a stream of bytes. */
export type RawBody = Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>;

/**
 * One request: path under the base URL, query (undefined values left out), and a JSON `body`
 * or a `raw` one.
 */
export interface Call {
  method: string;
  path: string;
  query?: Record<string, string | number | boolean | undefined | null>;
  body?: unknown;
  /** Sent as it is with its content type, instead of `body` as JSON. */
  raw?: { body: RawBody; contentType: string };
  headers?: Record<string, string>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Sends requests to one Baton server and maps refusals to {@link BatonError}s. */
export class Transport {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string | undefined, options: ConnectionOptions = {}) {
    this.baseUrl = (baseUrl || process.env.BATON_URL || DEFAULT_URL).replace(/\/+$/, "");
    this.#token = options.token ?? process.env.BATON_TOKEN ?? undefined;
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** The URL of `path` with `query`. */
  url(path: string, query?: Call["query"]): string {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  /** Headers every request carries, with `extra`. */
  headers(extra?: Record<string, string>): Record<string, string> {
    const headers: Record<string, string> = { accept: "application/json", ...extra };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    return headers;
  }

  /**
   * Sends `call` and returns the response once its status is a success; throws the refusal as
   * a {@link BatonError} ({@link ConnectionFailed} when no answer came).
   */
  async send(call: Call): Promise<Response> {
    return (await this.#send(call)).response;
  }

  /**
   * Sends `call` and passes its answer's body to `onChunk`, chunk by chunk as it arrives (the
   * next chunk is read once `onChunk` has settled); resolves to the response, for its headers,
   * once the body is read. A break while reading is a {@link ConnectionFailed}; an abort of
   * `call.signal` rejects with its reason.
   */
  async download(call: Call, onChunk: (chunk: Uint8Array) => void | Promise<void>): Promise<Response> {
    const { response, timeout } = await this.#send(call);
    if (!response.body) return response;
    const reader = response.body.getReader();
    try {
      for (;;) {
        let read: ReadableStreamReadResult<Uint8Array>;
        try {
          read = await reader.read();
        } catch (err) {
          if (call.signal?.aborted) throw call.signal.reason;
          throw new ConnectionFailed(0, timeout.aborted ? "timeout" : "connection_failed", describe(err));
        }
        if (read.done) return response;
        await onChunk(read.value);
      }
    } finally {
      reader.releaseLock();
      await response.body.cancel().catch(() => undefined);
    }
  }

  async #send(call: Call): Promise<{ response: Response; timeout: AbortSignal }> {
    const headers = this.headers(call.headers);
    let body: string | RawBody | undefined;
    if (call.raw) {
      body = call.raw.body;
      headers["content-type"] = call.raw.contentType;
    } else if (call.body !== undefined) {
      body = JSON.stringify(call.body);
      headers["content-type"] = "application/json";
    }
    const timeout = AbortSignal.timeout(call.timeoutMs ?? this.timeoutMs);
    const signal = call.signal ? AbortSignal.any([call.signal, timeout]) : timeout;
    let response: Response;
    try {
      const init = { method: call.method, headers, body, signal } as RequestInit & { duplex?: "half" };
      // A streamed body is sent while the answer may already come (fetch requires saying so).
      if (body instanceof ReadableStream) init.duplex = "half";
      response = await this.#fetch(this.url(call.path, call.query), init);
    } catch (err) {
      if (call.signal?.aborted) throw call.signal.reason;
      const code = timeout.aborted ? "timeout" : "connection_failed";
      throw new ConnectionFailed(0, code, describe(err));
    }
    if (response.ok) return { response, timeout };
    const text = await response.text().catch(() => "");
    let decoded: unknown = text;
    try {
      decoded = JSON.parse(text);
    } catch {
      // not JSON: the raw text is reported
    }
    throw errorFromResponse(response.status, decoded, response.headers.get("retry-after"));
  }

  /** Sends `call` and decodes the JSON answer. */
  async json<T>(call: Call): Promise<T> {
    const response = await this.send(call);
    try {
      return (await response.json()) as T;
    } catch (err) {
      throw new ConnectionFailed(0, "connection_failed", describe(err));
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message}: ${cause.message}` : err.message;
  }
  return String(err);
}

/** `value` as one URL path segment. */
export function seg(value: string): string {
  return encodeURIComponent(value);
}
