// The live event stream /v1/events, read with fetch (so that a bearer token can be sent),
// reconnecting with backoff; the header's status pill says whether it is live.

import { $ } from './dom.js';
import { ApiError, askToken, authHeader } from './api.js';

/** Reconnect backoff of the event stream. */
const STREAM_RETRY_MS_MIN = 500;
const STREAM_RETRY_MS_MAX = 15000;

export function setStreamStatus(state, text) {
  const el = $('#stream-status');
  if (!el) return;
  el.dataset.state = state;
  el.textContent = text;
}

/**
 * Reads a text/event-stream body, calling onMessage(event, data) per message.
 * fetch + a streamed body rather than EventSource, because EventSource cannot send the
 * Authorization header a token-protected Baton needs.
 */
async function readSse(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let event = 'message';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onMessage(event, data.join('\n'));
        event = 'message';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') event = val;
      else if (field === 'data') data.push(val);
    }
  }
}

/**
 * One subscription to /v1/events (optionally one workflow's), reconnecting with backoff.
 * handlers.open() runs on every (re)connect: events may have been missed, so the page
 * re-reads what it shows; handlers.resync() on `lagged`; handlers.event(ev) per transition.
 */
export class EventStream {
  constructor(workflow, handlers) {
    this.url = '/v1/events' + (workflow ? `?workflow=${encodeURIComponent(workflow)}` : '');
    this.handlers = handlers;
    this.stopped = false;
    this.ctrl = null;
    this.retryMs = STREAM_RETRY_MS_MIN;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
    clearTimeout(this.sleepTimer);
    if (this.wake) this.wake();
  }

  async run() {
    while (!this.stopped) {
      this.ctrl = new AbortController();
      setStreamStatus('connecting', 'connecting…');
      try {
        const res = await fetch(this.url, {
          headers: Object.assign({ Accept: 'text/event-stream' }, authHeader()),
          signal: this.ctrl.signal,
          cache: 'no-store',
        });
        if (res.status === 401) {
          await askToken('The live event stream needs a token.');
          continue;
        }
        if (res.status === 403) {
          const problem = await res.json().catch(() => null);
          setStreamStatus('offline', `refused: ${(problem && problem.detail) || 'forbidden'}`);
          return;
        }
        if (!res.ok || !res.body) throw new Error(`the event stream answered ${res.status}`);
        setStreamStatus('live', 'live');
        this.retryMs = STREAM_RETRY_MS_MIN;
        this.handlers.open();
        await readSse(res.body, (event, data) => {
          if (this.stopped) return;
          if (event === 'transition') this.handlers.event(JSON.parse(data));
          else if (event === 'lagged') this.handlers.resync();
        });
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && err.status === 401) {
          setStreamStatus('offline', 'offline: token needed');
          return;
        }
      }
      if (this.stopped) return;
      setStreamStatus('offline', 'offline, reconnecting…');
      await new Promise((resolve) => {
        this.wake = resolve;
        this.sleepTimer = setTimeout(resolve, this.retryMs);
      });
      this.retryMs = Math.min(this.retryMs * 2, STREAM_RETRY_MS_MAX);
    }
  }
}
