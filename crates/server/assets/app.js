// Baton's dashboard: a one-page app over the /v1 JSON API and the /v1/events stream.
//
// Plain modern JavaScript, no framework and no build step: the server embeds this file as is.
// Rules this file keeps:
// - Every piece of data reaches the page through textContent or setAttribute, never innerHTML,
//   so nothing the API returns is ever parsed as markup.
// - Lists are paginated on the server (tasks, workflows); the only whole-collection fetch is a
//   single workflow's graph, and only up to GRAPH_NODES_MAX tasks.
// - Live state comes from the event stream: counts move by each transition's from/to; nothing
//   polls a list of tasks. A `lagged` event or a reconnect re-fetches what the page shows.
'use strict';

const STATES = ['blocked', 'pending', 'assigned', 'executing', 'completed', 'failed', 'cancelled'];
const TOKEN_KEY = 'baton.token';
/** Tasks per page of a workflow's task table. */
const TASKS_PAGE_SIZE = 50;
/** Workflows per page of the overview. */
const WORKFLOWS_PAGE_SIZE = 20;
/** Largest workflow whose graph is fetched and laid out; beyond it the table alone is shown. */
const GRAPH_NODES_MAX = 5000;
/** Above this many nodes, labels are drawn only when zoomed in, and edges as one path. */
const GRAPH_LABELS_NODES_MAX = 300;
/** Zoom from which a big graph shows its labels. */
const LABEL_ZOOM_MIN = 0.7;
/** Throughput chart: completions per bucket over the last BUCKETS buckets. */
const THROUGHPUT_BUCKET_MS = 10000;
const THROUGHPUT_BUCKETS = 30;
/** How long events are gathered before the page is redrawn (a burst costs one redraw). */
const REDRAW_MS = 100;
/** Reconnect backoff of the event stream. */
const STREAM_RETRY_MS_MIN = 500;
const STREAM_RETRY_MS_MAX = 15000;
/** Counts are re-read this often on the overview to correct any drift (a cheap O(1) read). */
const COUNTS_RECONCILE_MS = 60000;
/** Agents go offline without any transition, so the agents page re-reads its (short) list. */
const AGENTS_REFRESH_MS = 15000;
const SVG_NS = 'http://www.w3.org/2000/svg';

// ---- DOM helpers ------------------------------------------------------------------------------

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'testid') el.setAttribute('data-testid', v);
    else if (k.startsWith('on')) {
      // Handlers are functions, never strings: no attribute here ever holds code.
      if (typeof v !== 'function') throw new TypeError(`${k} must be a function`);
      el.addEventListener(k.slice(2), v);
    }
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function appendAll(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) appendAll(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** An HTML element; strings among the children become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);
const pad = (n) => String(n).padStart(2, '0');

function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const fmtNum = (n) => Number(n || 0).toLocaleString('en-US');
/** UUIDv7 ids share their leading (time) digits, so the tail tells tasks apart. */
const shortId = (id) => '…' + String(id).slice(-8);
const cap = (str) => str.charAt(0).toUpperCase() + str.slice(1);
const pretty = (v) => JSON.stringify(v, null, 2);

function badge(state) {
  return h('span', { class: `badge s-${state}`, 'data-state': state }, state);
}

function taskLink(id, label) {
  return h('a', { href: `#/tasks/${encodeURIComponent(id)}`, class: 'mono', title: id }, label || shortId(id));
}

function workflowLink(id, label) {
  return h('a', { href: `#/workflows/${encodeURIComponent(id)}`, title: id }, label || shortId(id));
}

function emptyCounts() {
  const c = { total: 0 };
  for (const st of STATES) c[st] = 0;
  return c;
}

/** Moves a counts object by one transition: `from` (absent for a new task) to `to`. */
function applyTransition(counts, ev) {
  if (ev.from) counts[ev.from] = Math.max(0, (counts[ev.from] || 0) - 1);
  else counts.total = (counts.total || 0) + 1;
  counts[ev.to] = (counts[ev.to] || 0) + 1;
}

/** Calls `fn` once, REDRAW_MS after the first of any number of calls. */
function batched(fn, ms = REDRAW_MS) {
  let timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
}

function errorText(err) {
  if (err instanceof ApiError) return err.message;
  return `could not reach Baton: ${(err && err.message) || err}`;
}

// ---- errors worth showing (and that the browser tests read) ----------------------------------

window.__batonErrors = [];

function showBanner(text) {
  const b = $('#banner');
  if (!b) return;
  b.textContent = text;
  b.hidden = false;
}

window.addEventListener('error', (e) => {
  window.__batonErrors.push(String(e.message));
  showBanner(`Dashboard error: ${e.message}`);
});
window.addEventListener('unhandledrejection', (e) => {
  const msg = (e.reason && e.reason.message) || String(e.reason);
  window.__batonErrors.push(msg);
  showBanner(`Dashboard error: ${msg}`);
});

// ---- API and token -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `the server answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function authHeader() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

let tokenPrompt = null;

/** Asks for a bearer token in a dialog; resolves once one is saved, rejects if dismissed. */
function askToken(why) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve, reject) => {
    const input = h('input', {
      type: 'password', id: 'token-input', testid: 'token-input', autocomplete: 'off',
      value: localStorage.getItem(TOKEN_KEY) || '',
    });
    const dlg = h('dialog', { testid: 'token-dialog', 'aria-labelledby': 'token-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'token-title' }, 'Bearer token'),
        h('p', { class: 'small' }, why),
        h('p', { class: 'small muted' },
          'Kept in this browser (localStorage) and sent as "Authorization: Bearer". Save it empty to forget it.'),
        h('label', { for: 'token-input' }, 'Token'),
        input,
        h('div', { class: 'buttons' },
          h('button', { type: 'button', testid: 'token-dismiss', onclick: () => dlg.close('no') }, 'Cancel'),
          h('button', { value: 'yes', class: 'primary', testid: 'token-save' }, 'Save'))));
    dlg.addEventListener('close', () => {
      dlg.remove();
      tokenPrompt = null;
      if (dlg.returnValue === 'yes') {
        const token = input.value.trim();
        if (token) localStorage.setItem(TOKEN_KEY, token);
        else localStorage.removeItem(TOKEN_KEY);
        resolve();
      } else {
        reject(new ApiError(401, { detail: 'this Baton needs a token: use the Token button' }));
      }
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
  return tokenPrompt;
}

/** A JSON request; a refusal throws an ApiError carrying the problem document. */
async function api(path, opts = {}) {
  for (let tries = 0; ; tries++) {
    const headers = Object.assign({ Accept: 'application/json' }, authHeader());
    const init = { method: opts.method || 'GET', headers, signal: opts.signal, cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, init);
    if (res.status === 401 && tries < 2) {
      await askToken(tries === 0 ? 'Baton asks for a token.' : 'That token was refused; try another.');
      continue;
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
}

// ---- the event stream ---------------------------------------------------------------------------

function setStreamStatus(state, text) {
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
class EventStream {
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

// ---- pages and routing --------------------------------------------------------------------------

/** What a page owns: its stream, its timers. All are stopped when the page is left. */
class Page {
  constructor() {
    this.live = true;
    this.cleanups = [];
  }

  stream(workflow, handlers) {
    const st = new EventStream(workflow, handlers);
    this.cleanups.push(() => st.stop());
    return st;
  }

  every(ms, fn) {
    const t = setInterval(fn, ms);
    this.cleanups.push(() => clearInterval(t));
  }

  onLeave(fn) {
    this.cleanups.push(fn);
  }

  leave() {
    this.live = false;
    for (const fn of this.cleanups) fn();
  }
}

let currentPage = null;

function route() {
  if (currentPage) currentPage.leave();
  const page = new Page();
  currentPage = page;
  setStreamStatus('idle', 'no live data on this page');
  const main = $('#main');
  main.replaceChildren();
  const [path] = (location.hash.replace(/^#/, '') || '/').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  let nav = null;
  if (parts.length === 0) {
    nav = 'overview';
    overviewPage(main, page);
  } else if (parts[0] === 'workflows' && parts[1]) {
    nav = 'overview';
    workflowPage(main, page, parts[1]);
  } else if (parts[0] === 'tasks' && parts[1]) {
    taskPage(main, page, parts[1]);
  } else if (parts[0] === 'agents') {
    nav = 'agents';
    agentsPage(main, page);
  } else if (parts[0] === 'lifecycle') {
    nav = 'lifecycle';
    lifecyclePage(main, page);
  } else {
    main.append(h('section', { class: 'panel', testid: 'not-found' },
      h('h1', null, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '#/' }, 'Back to the overview'))));
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** A confirmation step in a real <dialog>. Resolves {reason} when confirmed, null otherwise. */
function confirmDialog({ title, message, confirmLabel, withReason }) {
  return new Promise((resolve) => {
    const reason = withReason
      ? h('input', { type: 'text', id: 'confirm-reason', testid: 'confirm-reason', autocomplete: 'off',
        placeholder: 'recorded in the task history' })
      : null;
    const dlg = h('dialog', { testid: 'confirm-dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-message' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'confirm-title' }, title),
        h('p', { id: 'confirm-message', testid: 'confirm-message' }, message),
        reason && [h('label', { for: 'confirm-reason' }, 'Reason'), reason],
        h('div', { class: 'buttons' },
          // Not a submit button: Enter in the reason field confirms, Escape goes back.
          h('button', { type: 'button', testid: 'confirm-no', onclick: () => dlg.close('no') }, 'Back'),
          h('button', { value: 'yes', class: 'danger', testid: 'confirm-ok' }, confirmLabel))));
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve(dlg.returnValue === 'yes' ? { reason: reason ? reason.value.trim() : '' } : null);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}

// ---- counts widgets -----------------------------------------------------------------------------

/** Cards with the count of each state; `update(counts)` redraws the numbers. */
function countCards() {
  const nums = {};
  const card = (state, label) => {
    nums[state] = h('span', { class: 'n', testid: `count-${state}`, 'data-count': '0' }, '—');
    return h('div', { class: `count s-${state}`, testid: `count-card-${state}` },
      nums[state], h('span', { class: 'label' }, label));
  };
  const el = h('div', { class: 'counts' }, STATES.map((st) => card(st, st)), card('total', 'total'));
  return {
    el,
    update(counts) {
      for (const st of [...STATES, 'total']) {
        const n = counts[st] || 0;
        nums[st].textContent = fmtNum(n);
        nums[st].dataset.count = String(n);
      }
    },
  };
}

/** A progress bar with one segment per state that has tasks, completed first. */
function progressBar(counts, label) {
  const total = counts.total || 0;
  const bar = h('div', {
    class: 'progress', role: 'progressbar', 'aria-label': label, 'aria-valuemin': 0,
    'aria-valuemax': total, 'aria-valuenow': counts.completed || 0, testid: 'workflow-progress',
    'data-completed': counts.completed || 0, 'data-total': total,
  });
  const order = ['completed', 'failed', 'cancelled', 'executing', 'assigned', 'pending', 'blocked'];
  for (const st of order) {
    const n = counts[st] || 0;
    if (!n || !total) continue;
    const seg = h('span', { class: `s-${st}`, title: `${st}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
  }
  return bar;
}

function legend(counts, testid) {
  return h('ul', { class: 'legend', testid, 'aria-label': 'Legend: colour of each state' },
    STATES.map((st) => h('li', { 'data-state': st },
      h('span', { class: `swatch s-${st}`, 'aria-hidden': 'true' }),
      cap(st),
      counts ? h('span', { class: 'muted', testid: `legend-count-${st}` }, ` ${fmtNum(counts[st])}`) : null)));
}

// ---- overview -----------------------------------------------------------------------------------

function overviewPage(main, page) {
  const cards = countCards();
  const countsPanel = h('section', { class: 'panel', testid: 'counts', 'aria-labelledby': 'counts-h' },
    h('h2', { id: 'counts-h' }, 'Tasks by state (live)'), cards.el);

  const chartBox = h('div', { class: 'throughput', testid: 'throughput' });
  const chartNote = h('p', { class: 'small muted', testid: 'throughput-summary' }, 'Counting since this page opened.');
  const chartPanel = h('section', { class: 'panel', 'aria-labelledby': 'tp-h' },
    h('h2', { id: 'tp-h' }, 'Throughput: completions per 10 s, last 5 minutes'), chartBox, chartNote);

  const wfBody = h('tbody');
  const wfStatus = h('p', { class: 'loading' }, 'Loading workflows…');
  const newer = h('button', { type: 'button', testid: 'workflows-newer', disabled: true }, '← Newer');
  const older = h('button', { type: 'button', testid: 'workflows-older', disabled: true }, 'Older →');
  const wfPanel = h('section', { class: 'panel', 'aria-labelledby': 'wf-h' },
    h('h2', { id: 'wf-h' }, 'Workflows'),
    h('table', { testid: 'workflows' },
      h('thead', null, h('tr', null, h('th', null, 'Workflow'), h('th', null, 'Created'),
        h('th', null, 'Progress'), h('th', { class: 'num' }, 'Failed / cancelled'), h('th', { class: 'num' }, 'Tasks'))),
      wfBody),
    wfStatus,
    h('div', { class: 'pager' }, newer, older));

  main.append(h('h1', null, 'Overview'), countsPanel, chartPanel, wfPanel);

  let counts = null; // null while (re)loading: events are not applied to a snapshot in flight
  const buckets = new Map(); // bucket number -> completions
  let workflows = []; // [{view, row}]
  const byId = new Map();
  const cursors = [null]; // `before` of each page visited; the last is the current page
  let reloadWorkflowsSoon = null;

  const drawCounts = batched(() => counts && cards.update(counts));
  const drawChart = batched(() => renderThroughput(chartBox, chartNote, buckets));
  const drawRows = batched(() => {
    for (const w of workflows) if (w.dirty) renderWorkflowRow(w);
  });

  async function loadCounts() {
    counts = null;
    try {
      const c = await api('/v1/counts');
      if (!page.live) return;
      counts = c;
      cards.update(counts);
      countsPanel.dataset.loaded = 'true';
    } catch (err) {
      cards.el.after(h('p', { class: 'error' }, errorText(err)));
    }
  }

  async function loadWorkflows() {
    const before = cursors[cursors.length - 1];
    const q = `?limit=${WORKFLOWS_PAGE_SIZE}` + (before ? `&before=${encodeURIComponent(before)}` : '');
    workflows = [];
    byId.clear();
    try {
      const list = await api('/v1/workflows' + q);
      if (!page.live) return;
      wfBody.replaceChildren();
      for (const view of list.workflows) {
        const w = { view, row: h('tr', { testid: 'workflow-row', 'data-workflow': view.id }) };
        renderWorkflowRow(w);
        workflows.push(w);
        byId.set(view.id, w);
        wfBody.append(w.row);
      }
      wfStatus.textContent = list.workflows.length ? '' : 'No workflows yet. Submit one with POST /v1/workflows.';
      wfStatus.className = list.workflows.length ? '' : 'muted';
      newer.disabled = cursors.length === 1;
      older.disabled = !list.next;
      older.onclick = () => {
        cursors.push(list.next);
        loadWorkflows();
      };
      newer.onclick = () => {
        cursors.pop();
        loadWorkflows();
      };
      wfPanel.dataset.loaded = 'true';
    } catch (err) {
      wfStatus.textContent = errorText(err);
      wfStatus.className = 'error';
    }
  }

  function onEvent(ev) {
    if (ev.to === 'completed') {
      const b = Math.floor(Date.now() / THROUGHPUT_BUCKET_MS);
      buckets.set(b, (buckets.get(b) || 0) + 1);
      drawChart();
    }
    if (counts) {
      applyTransition(counts, ev);
      drawCounts();
    }
    const w = byId.get(ev.workflow);
    if (w) {
      applyTransition(w.view.counts, ev);
      w.dirty = true;
      drawRows();
    } else if (!ev.from && cursors.length === 1) {
      // A task of a workflow not on the first page yet: most likely a new workflow.
      reloadWorkflowsSoon();
    }
  }

  reloadWorkflowsSoon = batched(() => loadWorkflows(), 500);
  drawChart();
  page.every(THROUGHPUT_BUCKET_MS / 2, drawChart);
  page.every(COUNTS_RECONCILE_MS, () => counts && loadCounts());
  page.stream(null, {
    open: () => Promise.all([loadCounts(), loadWorkflows()]),
    resync: () => Promise.all([loadCounts(), loadWorkflows()]),
    event: onEvent,
  });
}

function renderWorkflowRow(w) {
  const v = w.view;
  const c = v.counts;
  w.dirty = false;
  const label = v.name || '(unnamed)';
  w.row.replaceChildren(
    h('td', null, workflowLink(v.id, label), h('div', { class: 'small muted mono' }, shortId(v.id))),
    h('td', { class: 'small' }, fmtTime(v.created_at)),
    h('td', { class: 'progress-cell' },
      progressBar(c, `${label}: ${c.completed} of ${c.total} completed`),
      h('div', { class: 'progress-text', testid: 'workflow-progress-text' },
        `${fmtNum(c.completed)} / ${fmtNum(c.total)} completed`,
        c.executing + c.assigned ? ` · ${fmtNum(c.executing + c.assigned)} running` : '')),
    h('td', { class: 'num' }, `${fmtNum(c.failed)} / ${fmtNum(c.cancelled)}`),
    h('td', { class: 'num' }, fmtNum(c.total)));
}

function renderThroughput(box, note, buckets) {
  const now = Math.floor(Date.now() / THROUGHPUT_BUCKET_MS);
  const first = now - THROUGHPUT_BUCKETS + 1;
  for (const k of buckets.keys()) if (k < first) buckets.delete(k);
  const values = [];
  for (let b = first; b <= now; b++) values.push(buckets.get(b) || 0);
  const max = Math.max(1, ...values);
  const W = Math.max(320, Math.round(box.clientWidth) || 600);
  const H = 110;
  const top = 14;
  const bottom = 18;
  const left = 34;
  const slot = (W - left) / THROUGHPUT_BUCKETS;
  const chart = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': `Completions per 10 seconds over the last 5 minutes; at most ${max} in one bucket` });
  chart.append(
    s('line', { class: 'axis', x1: left, x2: W, y1: H - bottom, y2: H - bottom }),
    s('text', { x: left - 4, y: top + 4, 'text-anchor': 'end' }, String(max)),
    s('text', { x: left - 4, y: H - bottom, 'text-anchor': 'end' }, '0'),
    s('text', { x: left, y: H - 4 }, '5 min ago'),
    s('text', { x: W - 2, y: H - 4, 'text-anchor': 'end' }, 'now'));
  values.forEach((v, i) => {
    const bh = ((H - top - bottom) * v) / max;
    const start = (first + i) * THROUGHPUT_BUCKET_MS;
    chart.append(s('rect', {
      class: 'bar', testid: 'throughput-bar', 'data-count': v,
      x: left + i * slot + 1, y: H - bottom - bh, width: Math.max(1, slot - 2), height: bh,
    }, s('title', null, `${fmtClock(start)}–${fmtClock(start + THROUGHPUT_BUCKET_MS)}: ${v} completed`)));
  });
  box.replaceChildren(chart);
  const total = values.reduce((a, b) => a + b, 0);
  note.textContent = `${fmtNum(total)} completed in the last 5 minutes ` +
    `(${(total / ((THROUGHPUT_BUCKETS * THROUGHPUT_BUCKET_MS) / 1000)).toFixed(2)}/s), counted since this page opened.`;
  note.dataset.total = String(total);
}

// ---- graph view: pan and zoom around an SVG drawing ----------------------------------------------

let layoutWorker = null;
let layoutSeq = 0;
const layoutWaiters = new Map();

/** Lays a graph out with dagre in a Web Worker, or on the page if the worker cannot run. */
async function layoutGraph(graph) {
  if (typeof Worker !== 'undefined') {
    try {
      return await layoutInWorker(graph);
    } catch (err) {
      if (layoutWorker) throw err; // the worker ran and dagre itself failed
    }
  }
  return batonLayout(graph);
}

function layoutInWorker(graph) {
  if (!layoutWorker) {
    layoutWorker = new Worker('/assets/layout-worker.js');
    layoutWorker.onmessage = (m) => {
      const w = layoutWaiters.get(m.data.id);
      if (!w) return;
      layoutWaiters.delete(m.data.id);
      if (m.data.error) w.reject(new Error(`layout failed: ${m.data.error}`));
      else w.resolve(m.data.result);
    };
    layoutWorker.onerror = (e) => {
      e.preventDefault();
      for (const w of layoutWaiters.values()) w.reject(new Error('the layout worker failed'));
      layoutWaiters.clear();
      layoutWorker = null;
    };
  }
  const id = ++layoutSeq;
  return new Promise((resolve, reject) => {
    layoutWaiters.set(id, { resolve, reject });
    layoutWorker.postMessage({ id, graph });
  });
}

/** Stops layouts nobody waits for any more (the page that asked was left). */
function abandonLayouts() {
  if (!layoutWorker || layoutWaiters.size === 0) return;
  layoutWorker.terminate();
  layoutWorker = null;
  layoutWaiters.clear();
}

let svgIds = 0;

/** SVG path through dagre's edge points, smoothed with quadratic curves. */
function edgePath(points) {
  if (!points || points.length === 0) return '';
  const f = (n) => Math.round(n * 10) / 10;
  let d = `M${f(points[0].x)},${f(points[0].y)}`;
  if (points.length === 2) return d + `L${f(points[1].x)},${f(points[1].y)}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const q = points[i + 1];
    const mx = i === points.length - 2 ? q.x : (p.x + q.x) / 2;
    const my = i === points.length - 2 ? q.y : (p.y + q.y) / 2;
    d += `Q${f(p.x)},${f(p.y)} ${f(mx)},${f(my)}`;
  }
  return d;
}

/**
 * An SVG canvas with pan (drag, arrow keys) and zoom (wheel, +/- keys and buttons, fit).
 * `content` is the <g> to draw into; `onZoom(k)` is told the scale after every change.
 */
class GraphView {
  constructor(wrap, { label, onZoom }) {
    this.wrap = wrap;
    this.onZoom = onZoom || (() => {});
    this.k = 1;
    this.x = 0;
    this.y = 0;
    this.width = 0;
    this.height = 0;
    this.arrowId = `arrow-${++svgIds}`;
    this.content = s('g', { class: 'viewport' });
    this.svg = s('svg', { tabindex: 0, role: 'group', 'aria-label': label, testid: 'graph-svg' },
      s('defs', null, s('marker', {
        id: this.arrowId, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
        orient: 'auto-start-reverse',
      }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }))),
      this.content);
    const btn = (text, title, testid, fn) => h('button', { type: 'button', title, 'aria-label': title, testid, onclick: fn }, text);
    this.tools = h('div', { class: 'graph-tools' },
      btn('+', 'Zoom in', 'zoom-in', () => this.zoomAt(1.4)),
      btn('−', 'Zoom out', 'zoom-out', () => this.zoomAt(1 / 1.4)),
      btn('Fit', 'Fit the whole graph', 'zoom-fit', () => this.fit()));
    this.status = h('div', { class: 'graph-status', testid: 'graph-status', 'aria-live': 'polite' });
    wrap.append(this.svg, this.tools, this.status);
    this.bind();
  }

  bind() {
    this.svg.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = this.svg.getBoundingClientRect();
      this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    this.svg.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      const start = { x: e.clientX, y: e.clientY, tx: this.x, ty: this.y };
      this.dragged = false;
      const move = (m) => {
        const dx = m.clientX - start.x;
        const dy = m.clientY - start.y;
        if (!this.dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
        this.dragged = true;
        this.svg.classList.add('dragging');
        this.x = start.tx + dx;
        this.y = start.ty + dy;
        this.apply();
      };
      const up = () => {
        window.removeEventListener('pointermove', move);
        window.removeEventListener('pointerup', up);
        this.svg.classList.remove('dragging');
      };
      window.addEventListener('pointermove', move);
      window.addEventListener('pointerup', up);
    });
    this.svg.addEventListener('dblclick', (e) => {
      const r = this.svg.getBoundingClientRect();
      this.zoomAt(e.shiftKey ? 0.5 : 2, e.clientX - r.left, e.clientY - r.top);
    });
    this.svg.addEventListener('keydown', (e) => {
      const step = 60;
      const keys = {
        '+': () => this.zoomAt(1.25), '=': () => this.zoomAt(1.25), '-': () => this.zoomAt(0.8),
        0: () => this.fit(), ArrowLeft: () => this.panBy(step, 0), ArrowRight: () => this.panBy(-step, 0),
        ArrowUp: () => this.panBy(0, step), ArrowDown: () => this.panBy(0, -step),
      };
      if (keys[e.key] && e.target === this.svg) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }

  /** True if the pointer moved between press and release: that was a pan, not a click. */
  wasDrag() {
    const d = this.dragged;
    this.dragged = false;
    return d;
  }

  setSize(width, height) {
    this.width = width;
    this.height = height;
  }

  viewport() {
    const r = this.svg.getBoundingClientRect();
    return { w: r.width || 800, h: r.height || 500 };
  }

  fit() {
    const { w, h: ht } = this.viewport();
    if (!this.width || !this.height) return;
    this.k = Math.min(1.2, (0.94 * w) / this.width, (0.94 * ht) / this.height);
    this.x = (w - this.width * this.k) / 2;
    this.y = (ht - this.height * this.k) / 2;
    this.apply();
  }

  zoomAt(factor, cx, cy) {
    const { w, h: ht } = this.viewport();
    const px = cx === undefined ? w / 2 : cx;
    const py = cy === undefined ? ht / 2 : cy;
    const k = Math.min(4, Math.max(0.01, this.k * factor));
    this.x = px - ((px - this.x) * k) / this.k;
    this.y = py - ((py - this.y) * k) / this.k;
    this.k = k;
    this.apply();
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.apply();
  }

  apply() {
    this.content.setAttribute('transform', `translate(${this.x.toFixed(1)},${this.y.toFixed(1)}) scale(${this.k.toFixed(4)})`);
    this.svg.dataset.zoom = this.k.toFixed(3);
    this.onZoom(this.k);
  }
}

// ---- workflow page ------------------------------------------------------------------------------

function workflowPage(main, page, id) {
  const title = h('h1', null, 'Workflow');
  const idLine = h('div', { class: 'small muted mono' }, id);
  const notice = h('p', { class: 'small', role: 'status', testid: 'action-result' });
  const cancelBtn = h('button', { type: 'button', class: 'danger', testid: 'workflow-cancel' }, 'Cancel workflow…');
  const legendBox = h('div');
  const graphWrap = h('div', { class: 'graph-wrap', testid: 'graph' });
  const graphNote = h('p', { class: 'small muted', testid: 'graph-note' });
  const tableBox = h('div');
  main.append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / workflow'),
    title, idLine,
    h('div', { class: 'actions' }, cancelBtn, notice),
    h('section', { class: 'panel', 'aria-labelledby': 'graph-h' },
      h('h2', { id: 'graph-h' }, 'Dependency graph (live)'), legendBox, graphWrap, graphNote),
    h('section', { class: 'panel', 'aria-labelledby': 'tasks-h' },
      h('h2', { id: 'tasks-h' }, 'Tasks'), tableBox));

  let counts = null;
  let graph = null; // {nodes: Map id -> {el, state, node}, view}
  let unknownTasks = 0;
  let duringLayout = null; // transitions seen while a layout runs: Map task -> last event
  const table = taskTable(tableBox, id);

  const drawLegend = batched(() => {
    if (!counts) return;
    legendBox.replaceChildren(legend(counts, 'legend'));
  });

  cancelBtn.addEventListener('click', async () => {
    const ok = await confirmDialog({
      title: 'Cancel this workflow?',
      message: 'Every task of it that has not ended is cancelled; running agents are told to stop.',
      confirmLabel: 'Cancel workflow', withReason: true,
    });
    if (!ok) return;
    notice.className = 'small';
    try {
      const r = await api(`/v1/workflows/${encodeURIComponent(id)}/cancel`, { method: 'POST', body: { reason: ok.reason } });
      notice.textContent = `${r.cancelled} task(s) cancelled.`;
      notice.classList.add('notice');
    } catch (err) {
      notice.textContent = errorText(err);
      notice.classList.add('error');
      notice.dataset.testid = 'action-error';
    }
  });

  let loadGen = 0; // a newer load supersedes one still in flight

  async function load() {
    const gen = ++loadGen;
    const current = () => page.live && gen === loadGen;
    counts = null;
    try {
      const wf = await api(`/v1/workflows/${encodeURIComponent(id)}`);
      if (!current()) return;
      title.textContent = `Workflow ${wf.name || '(unnamed)'}`;
      document.title = `${wf.name || 'Workflow'} · Baton`;
      counts = wf.counts;
      drawLegend();
      table.reload();
      if (wf.counts.total > GRAPH_NODES_MAX) {
        graph = null;
        graphWrap.replaceChildren(h('p', { class: 'loading', testid: 'graph-too-big' },
          `This workflow has ${fmtNum(wf.counts.total)} tasks; graphs are drawn up to ${fmtNum(GRAPH_NODES_MAX)}. Use the table below.`));
        return;
      }
      const g = await api(`/v1/workflows/${encodeURIComponent(id)}/graph`);
      if (!current()) return;
      if (graph && g.nodes.length === graph.nodes.size && g.nodes.every((n) => graph.nodes.has(n.id))) {
        recolour(g); // same tasks (a reconnect, a lagged stream): no new layout needed
      } else {
        await drawGraph(g, current);
      }
    } catch (err) {
      graphWrap.replaceChildren(h('p', { class: 'error', testid: 'graph-error' }, errorText(err)));
    }
  }

  function recolour(g) {
    duringLayout = null; // a layout superseded by this load will not finish
    counts = emptyCounts();
    for (const n of g.nodes) {
      const known = graph.nodes.get(n.id);
      known.node.state = n.state;
      known.node.attempt = n.attempt;
      known.el.setAttribute('class', `node s-${n.state}`);
      known.el.dataset.state = n.state;
      counts[n.state]++;
      counts.total++;
    }
    drawLegend();
  }

  async function drawGraph(g, current) {
    const big = g.nodes.length > GRAPH_LABELS_NODES_MAX;
    graphWrap.replaceChildren(h('p', { class: 'loading', testid: 'graph-loading' }, `Laying out ${fmtNum(g.nodes.length)} tasks…`));
    // Counts follow the graph's own states from here on (exact per task).
    counts = emptyCounts();
    for (const n of g.nodes) {
      counts[n.state]++;
      counts.total++;
    }
    drawLegend();
    duringLayout = new Map();
    const nodeW = (n) => (big ? 120 : Math.min(220, Math.max(64, n.key.length * 7.2 + 24)));
    const nodeH = big ? 22 : 30;
    const layout = await layoutGraph({
      options: big
        ? { rankdir: 'LR', nodesep: 6, ranksep: 70, edgesep: 4, marginx: 20, marginy: 20, ranker: 'longest-path' }
        : { rankdir: 'LR', nodesep: 16, ranksep: 56, edgesep: 10, marginx: 20, marginy: 20 },
      nodes: g.nodes.map((n) => ({ id: n.id, width: nodeW(n), height: nodeH })),
      edges: g.edges.map((e) => ({ v: e.dependency, w: e.dependent })),
    });
    if (!current()) return;
    const seen = duringLayout;
    duringLayout = null;
    for (const n of g.nodes) {
      const ev = seen.get(n.id);
      if (ev) {
        n.state = ev.to;
        n.attempt = ev.attempt;
      }
    }
    graphWrap.replaceChildren();
    graphWrap.dataset.nodes = String(g.nodes.length);
    let labelsMade = !big;
    const nodes = new Map();
    const view = new GraphView(graphWrap, {
      label: `Dependency graph of ${g.nodes.length} tasks; the table below lists them too`,
      onZoom: (k) => {
        if (!big) return;
        const show = k >= LABEL_ZOOM_MIN;
        if (show && !labelsMade) {
          labelsMade = true;
          for (const n of nodes.values()) n.el.append(nodeLabel(n.node, 120, nodeH, 15));
        }
        view.svg.classList.toggle('labels-off', !show);
      },
    });
    view.setSize(layout.width, layout.height);
    // A small graph gets a box its size rather than a large empty one.
    if (!big) graphWrap.style.height = `${Math.round(Math.min(560, Math.max(220, layout.height * 1.2 + 40)))}px`;

    // Edges: individual arrows for small graphs, one path for big ones (one DOM node).
    if (big) {
      view.content.append(s('g', { class: 'edges dense' },
        s('path', { d: layout.edges.map((e) => edgePath(e.points)).join('') })));
    } else {
      view.content.append(s('g', { class: 'edges' }, layout.edges.map((e, i) => s('path', {
        d: edgePath(e.points), 'marker-end': `url(#${view.arrowId})`, testid: 'graph-edge',
        'data-from': g.edges[i].dependency, 'data-to': g.edges[i].dependent,
      }))));
    }
    const layer = s('g', { class: 'nodes' });
    g.nodes.forEach((n, i) => {
      const w = nodeW(n);
      const p = layout.nodes[i];
      const el = s('g', {
        class: `node s-${n.state}`, testid: 'graph-node', 'data-task': n.id, 'data-key': n.key, 'data-state': n.state,
        transform: `translate(${(p.x - w / 2).toFixed(1)},${(p.y - nodeH / 2).toFixed(1)})`,
      }, s('rect', { width: w, height: nodeH, rx: 5 }));
      if (!big) {
        el.setAttribute('tabindex', '0');
        el.setAttribute('role', 'link');
        el.setAttribute('aria-label', `${n.key}: ${n.state}`);
        el.append(nodeLabel(n, w, nodeH, 28));
      }
      nodes.set(n.id, { el, node: n });
      layer.append(el);
    });
    view.content.append(layer);
    graph = { nodes, view };
    unknownTasks = [...seen.keys()].filter((t) => !nodes.has(t)).length;
    const open = (target) => {
      const el = target.closest && target.closest('[data-task]');
      if (el) location.hash = `#/tasks/${encodeURIComponent(el.dataset.task)}`;
    };
    view.svg.addEventListener('click', (e) => {
      if (!view.wasDrag()) open(e.target);
    });
    view.svg.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') open(e.target);
    });
    view.svg.addEventListener('mouseover', (e) => {
      const el = e.target.closest && e.target.closest('[data-task]');
      if (!el) return;
      const n = nodes.get(el.dataset.task);
      view.status.textContent = `${n.node.key} · ${n.node.state} · attempt ${n.node.attempt} (click to open)`;
    });
    view.fit();
    if (big && view.k < LABEL_ZOOM_MIN) view.status.textContent = 'Zoom in to read task names.';
    graphNote.textContent = `${fmtNum(g.nodes.length)} tasks, ${fmtNum(g.edges.length)} dependencies. ` +
      'Drag to pan; scroll, double-click or use the buttons to zoom; click a task to open it.';
    graphWrap.dataset.ready = 'true';
  }

  function onEvent(ev) {
    if (ev.workflow !== id) return;
    table.onEvent(ev);
    if (!counts) return;
    if (duringLayout) duringLayout.set(ev.task, ev);
    const n = !duringLayout && graph && graph.nodes.get(ev.task);
    if (!duringLayout && graph && !n) {
      // A task added while the graph is shown (decomposition, a compensation task).
      unknownTasks++;
      graphNote.replaceChildren(`${unknownTasks} task(s) added since the layout. `,
        h('button', { type: 'button', testid: 'graph-relayout', onclick: () => load() }, 'Lay out again'));
    }
    if (n) {
      n.node.state = ev.to;
      n.node.attempt = ev.attempt;
      n.el.setAttribute('class', `node s-${ev.to}`);
      n.el.dataset.state = ev.to;
      if (n.el.hasAttribute('aria-label')) n.el.setAttribute('aria-label', `${n.node.key}: ${ev.to}`);
    }
    applyTransition(counts, ev);
    drawLegend();
  }

  page.onLeave(abandonLayouts);
  page.stream(id, { open: load, resync: load, event: onEvent });
}

function nodeLabel(n, w, ht, maxChars) {
  const text = n.key.length > maxChars ? n.key.slice(0, maxChars - 1) + '…' : n.key;
  return s('text', { x: w / 2, y: ht / 2 }, text);
}

/** The paginated, server-filtered task table of one workflow. */
function taskTable(box, workflow) {
  const select = h('select', { id: 'state-filter', testid: 'state-filter' },
    h('option', { value: '' }, 'all states'), STATES.map((st) => h('option', { value: st }, st)));
  const body = h('tbody');
  const status = h('p', { class: 'loading' }, 'Loading…');
  const first = h('button', { type: 'button', testid: 'page-first', disabled: true }, '⇤ First');
  const prev = h('button', { type: 'button', testid: 'page-prev', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', testid: 'page-next', disabled: true }, 'Next →');
  const pageNo = h('span', { class: 'small muted', testid: 'page-number' });
  box.append(
    h('div', { class: 'filters' }, h('label', { for: 'state-filter' }, 'State'), select),
    h('table', { testid: 'task-table' },
      h('thead', null, h('tr', null, h('th', null, 'Task'), h('th', null, 'State'), h('th', { class: 'num' }, 'Attempt'),
        h('th', { class: 'num' }, 'Priority'), h('th', null, 'Updated'), h('th', null, 'Id'))),
      body),
    status,
    h('div', { class: 'pager' }, first, prev, next, pageNo));
  let cursors = [null];
  let nextCursor = null;
  const rows = new Map();

  async function load() {
    const after = cursors[cursors.length - 1];
    const q = new URLSearchParams({ workflow, limit: String(TASKS_PAGE_SIZE) });
    if (select.value) q.set('state', select.value);
    if (after) q.set('after', after);
    try {
      const list = await api(`/v1/tasks?${q}`);
      rows.clear();
      body.replaceChildren();
      for (const t of list.tasks) {
        const stateCell = h('td', null, badge(t.state));
        const row = h('tr', { testid: 'task-row', 'data-task': t.id, 'data-state': t.state },
          h('td', null, taskLink(t.id, t.key)),
          stateCell,
          h('td', { class: 'num' }, String(t.attempt)),
          h('td', { class: 'num' }, String(t.priority)),
          h('td', { class: 'small' }, fmtTime(t.updated_at)),
          h('td', { class: 'small mono muted' }, shortId(t.id)));
        rows.set(t.id, { row, stateCell });
        body.append(row);
      }
      nextCursor = list.next;
      status.textContent = list.tasks.length ? '' : 'No tasks match.';
      status.className = list.tasks.length ? '' : 'muted';
      first.disabled = prev.disabled = cursors.length === 1;
      next.disabled = !nextCursor;
      pageNo.textContent = `page ${cursors.length}`;
      box.dataset.loaded = 'true';
    } catch (err) {
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  select.addEventListener('change', () => {
    cursors = [null];
    load();
  });
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    load();
  });
  prev.addEventListener('click', () => {
    cursors.pop();
    load();
  });
  first.addEventListener('click', () => {
    cursors = [null];
    load();
  });
  return {
    reload: load,
    onEvent(ev) {
      const r = rows.get(ev.task);
      if (!r) return;
      r.row.dataset.state = ev.to;
      r.stateCell.replaceChildren(badge(ev.to));
    },
  };
}

// ---- task page ----------------------------------------------------------------------------------

function waitingText(w) {
  if (!w) return null;
  switch (w.reason) {
    case 'dependencies':
      return ['Waiting for ', String(w.open.length), ' dependenc', w.open.length === 1 ? 'y' : 'ies', ': ',
        w.open.map((d, i) => [i ? ', ' : '', taskLink(d.id, d.key), ' (', d.state, ')'])];
    case 'no_capable_agent':
      return [`Ready, but no online agent offers: ${w.missing.join(', ')}.`];
    case 'agents_busy':
      return [`Ready; ${w.capable_online} capable agent(s) online, all busy.`];
    case 'leased':
      return ['Leased to agent ', h('a', { href: '#/agents', class: 'mono', title: w.agent }, shortId(w.agent)),
        ` (${w.state})`, w.until ? ` until ${fmtTime(w.until)}` : ''];
    case 'backing_off':
      return [`Backing off after attempt ${w.attempt} of ${w.max_attempts}; next attempt at ${fmtTime(w.until)}.`];
    default:
      return [pretty(w)];
  }
}

function eventSummary(entry) {
  const d = entry.data || {};
  const parts = [];
  if (d.agent) parts.push(`agent ${shortId(d.agent)}`);
  if (d.token !== undefined) parts.push(`token ${d.token}`);
  if (d.error) parts.push(`${d.error.kind}: ${d.error.message}`);
  if (d.deadline) parts.push(`deadline ${d.deadline}`);
  if (d.upstream) parts.push(`upstream ${d.upstream}`);
  if (d.dependency) parts.push(`dependency ${d.dependency}`);
  if (d.reason) parts.push(`reason: ${d.reason}`);
  if (d.requested_by) parts.push(`by ${d.requested_by}`);
  if (d.completed && d.completed.length) parts.push(`after ${d.completed.join(', ')}`);
  return parts.join(' · ');
}

function actorText(a) {
  if (!a) return '';
  if (a.actor === 'agent') return `agent ${shortId(a.agent)}`;
  if (a.actor === 'operator') return a.name === 'operator' ? 'operator' : `operator ${a.name}`;
  return a.actor;
}

function taskPage(main, page, id) {
  const body = h('div', null, h('p', { class: 'loading' }, 'Loading task…'));
  main.append(body);
  let streaming = false;
  let current = null; // the task as last loaded
  let actionMsg = null; // kept across reloads: {text, error}
  const reloadSoon = batched(() => load(), 150);

  let loadSeq = 0; // answers can overtake each other: only the latest request's is drawn

  async function load() {
    const seq = ++loadSeq;
    try {
      const t = await api(`/v1/tasks/${encodeURIComponent(id)}`);
      if (!page.live || seq !== loadSeq) return;
      current = t;
      render(t);
      if (!streaming) {
        streaming = true;
        let first = true;
        page.stream(t.workflow, {
          open: () => {
            if (!first) load();
            first = false;
          },
          resync: load,
          event: (ev) => {
            const c = current;
            if (ev.task === id || c.dependencies.some((d) => d.id === ev.task) || c.dependents.includes(ev.task)) reloadSoon();
          },
        });
      }
    } catch (err) {
      body.replaceChildren(h('p', { class: 'error', testid: 'task-error' }, errorText(err)));
    }
  }

  async function act(kind) {
    const cancel = kind === 'cancel';
    const ok = await confirmDialog(cancel
      ? { title: 'Cancel this task?', message: 'Cancelling revokes its lease and cancels the tasks that depend on it.', confirmLabel: 'Cancel task', withReason: true }
      : { title: 'Retry this task?', message: 'The task is reopened with a fresh budget of attempts.', confirmLabel: 'Retry task', withReason: false });
    if (!ok) return;
    try {
      const r = await api(`/v1/tasks/${encodeURIComponent(id)}/${kind}`, { method: 'POST', body: cancel ? { reason: ok.reason } : {} });
      actionMsg = { text: `${cancel ? 'Cancelled' : 'Retried'}: the task is now ${r.state}.`, error: false };
    } catch (err) {
      actionMsg = { text: `Refused: ${errorText(err)}`, error: true };
    }
    await load();
  }

  function render(t) {
    document.title = `${t.key} · Baton`;
    const ended = t.state === 'completed' || t.state === 'cancelled';
    const cancelBtn = h('button', { type: 'button', class: 'danger', testid: 'action-cancel', disabled: ended, onclick: () => act('cancel') }, 'Cancel…');
    const retryBtn = h('button', { type: 'button', class: 'primary', testid: 'action-retry', disabled: t.state !== 'failed', onclick: () => act('retry') }, 'Retry…');
    const msg = actionMsg
      ? h('span', { class: actionMsg.error ? 'error' : 'notice', testid: actionMsg.error ? 'action-error' : 'action-result', role: actionMsg.error ? 'alert' : 'status' }, actionMsg.text)
      : null;

    const lease = t.lease
      ? ['agent ', h('a', { href: '#/agents', class: 'mono', title: t.lease.agent }, shortId(t.lease.agent)),
        ` · token ${t.lease.token} · granted ${fmtTime(t.lease.granted_at)}`]
      : '—';
    const deadlines = Object.entries(t.deadlines).filter(([, v]) => v !== null && v !== undefined);
    const waiting = waitingText(t.waiting);
    const detail = t.detail || {};
    let cancelNote = null;
    if (t.state === 'cancelled' && detail.reason) {
      const r = detail.reason;
      cancelNote = r.by === 'upstream' ? `because its dependency ${r.upstream} failed or was cancelled`
        : `by ${r.requested_by}${r.reason ? `: ${r.reason}` : ''}`;
    }

    const summary = h('section', { class: 'panel', 'aria-labelledby': 'task-h' },
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', workflowLink(t.workflow, 'workflow'), ' / task'),
      h('h1', { id: 'task-h' }, t.key, ' ', h('span', { testid: 'task-state', 'data-state': t.state }, badge(t.state))),
      h('div', { class: 'small muted mono' }, t.id),
      h('dl', { class: 'kv', testid: 'task-facts' },
        h('dt', null, 'Attempt'), h('dd', { testid: 'task-attempt' }, `${t.attempt} of ${t.attempts_allowed}`),
        h('dt', null, 'Lease'), h('dd', { testid: 'task-lease' }, lease),
        h('dt', null, 'Why waiting'), h('dd', { testid: 'task-waiting' }, waiting || (ended || t.state === 'failed' ? 'It has ended.' : '—')),
        cancelNote && [h('dt', null, 'Cancelled'), h('dd', { testid: 'task-cancel-reason' }, cancelNote)],
        h('dt', null, 'Deadlines'), h('dd', { testid: 'task-deadlines' }, deadlines.length
          ? deadlines.map(([k, v], i) => [i ? ' · ' : '', `${k.replaceAll('_', ' ')} ${fmtTime(v)}`]) : 'none armed'),
        h('dt', null, 'Capabilities'), h('dd', null, t.spec.capabilities.length
          ? h('span', { class: 'chips' }, t.spec.capabilities.map((c) => h('span', { class: 'chip' }, c))) : 'any agent'),
        h('dt', null, 'Priority'), h('dd', null, String(t.spec.priority)),
        h('dt', null, 'Created'), h('dd', null, fmtTime(t.created_at)),
        h('dt', null, 'Updated'), h('dd', null, fmtTime(t.updated_at)),
        h('dt', null, 'Version'), h('dd', null, `${t.version} (fencing token ${t.fencing_token})`)),
      h('div', { class: 'actions' }, cancelBtn, retryBtn, msg));

    const links = [];
    if (t.compensation) links.push(h('li', null, 'Compensation task: ', taskLink(t.compensation), ''));
    if (t.compensates) links.push(h('li', null, 'Compensates: ', taskLink(t.compensates)));
    if (t.upstream_cause) links.push(h('li', null, 'Cancelled because of: ', taskLink(t.upstream_cause)));
    const related = h('section', { class: 'panel', 'aria-labelledby': 'rel-h', testid: 'task-related' },
      h('h2', { id: 'rel-h' }, 'Related tasks'),
      h('h3', null, `Dependencies (${t.dependencies.length})`),
      t.dependencies.length
        ? h('ul', { class: 'links', testid: 'task-dependencies' }, t.dependencies.map((d) => h('li', null, taskLink(d.id, d.key), ' ', badge(d.state))))
        : h('p', { class: 'muted' }, 'none'),
      h('h3', null, `Dependents (${t.dependents.length})`),
      t.dependents.length
        ? h('ul', { class: 'links', testid: 'task-dependents' }, t.dependents.map((d) => h('li', null, taskLink(d))))
        : h('p', { class: 'muted' }, 'none'),
      links.length ? [h('h3', null, 'Links'), h('ul', { class: 'links', testid: 'task-links' }, links)] : null);

    const data = h('section', { class: 'panel', 'aria-labelledby': 'data-h' },
      h('h2', { id: 'data-h' }, 'Input and result'),
      h('h3', null, 'Input'), h('pre', { class: 'json', testid: 'task-input' }, pretty(t.spec.input)),
      h('h3', null, 'Result'), t.result !== null && t.result !== undefined
        ? h('pre', { class: 'json', testid: 'task-result' }, pretty(t.result))
        : h('p', { class: 'muted', testid: 'task-result' }, 'no result yet'),
      h('h3', null, `Errors (${t.errors.length})`),
      t.errors.length
        ? h('ol', { class: 'errors', testid: 'task-errors' }, t.errors.map((e) => h('li', null,
          h('strong', null, `attempt ${e.attempt}: ${e.kind}`), ` — ${e.message}`,
          h('div', { class: 'small muted' }, `${fmtTime(e.at)} · ${e.retryable ? 'retryable' : 'not retryable'}${e.token !== null && e.token !== undefined ? ` · token ${e.token}` : ''}`))))
        : h('p', { class: 'muted' }, 'none'));

    const history = h('section', { class: 'panel', 'aria-labelledby': 'hist-h' },
      h('h2', { id: 'hist-h' }, `History (${t.history.length} entries)`),
      h('ol', { class: 'timeline', testid: 'history' }, t.history.map((e) => {
        const extra = Object.assign({}, e.data);
        delete extra.event;
        const hasExtra = Object.keys(extra).length > 0;
        return h('li', { testid: 'history-entry', 'data-event': e.event, 'data-seq': e.seq },
          h('span', { class: 'when' }, fmtTime(e.at)),
          h('span', { class: 'ev' }, e.event),
          h('span', { class: 'muted' }, ` by ${actorText(e.actor)}`),
          h('div', { class: 'small' }, eventSummary(e)),
          hasExtra ? h('details', null, h('summary', null, 'data'), h('pre', { class: 'json' }, pretty(extra))) : null);
      })));

    body.replaceChildren(summary, h('div', { class: 'row' }, data, related), history);
    body.dataset.loaded = 'true';
    body.dataset.testid = 'task-page';
  }

  load();
}

// ---- agents page --------------------------------------------------------------------------------

function agentsPage(main, page) {
  const tbody = h('tbody');
  const status = h('p', { class: 'loading' }, 'Loading agents…');
  main.append(h('h1', null, 'Agents'),
    h('section', { class: 'panel' },
      h('table', { testid: 'agents' },
        h('thead', null, h('tr', null, h('th', null, 'Agent'), h('th', null, 'Status'), h('th', null, 'Capabilities'),
          h('th', { class: 'num' }, 'Concurrency'), h('th', null, 'Tasks in hand'), h('th', null, 'Last seen'))),
        tbody),
      status));

  async function load() {
    try {
      const agents = await api('/v1/agents');
      if (!page.live) return;
      tbody.replaceChildren(...agents.map((a) => h('tr', { testid: 'agent-row', 'data-agent': a.id, 'data-online': String(a.online) },
        h('td', null, h('strong', null, a.name), h('div', { class: 'small muted mono', title: a.id }, a.id)),
        h('td', { testid: 'agent-status' }, h('span', { class: a.online ? 'online' : 'offline' }, a.online ? '● online' : '○ offline')),
        h('td', null, a.capabilities.length
          ? h('span', { class: 'chips' }, a.capabilities.map((c) => h('span', { class: 'chip' }, c))) : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'num' }, String(a.concurrency)),
        h('td', { testid: 'agent-leased' }, `${a.leased.length} of ${a.concurrency}`,
          a.leased.length ? h('ul', { class: 'links' }, a.leased.map((t) => h('li', null, taskLink(t)))) : null),
        h('td', { class: 'small' }, fmtTime(a.last_seen)))));
      status.textContent = agents.length ? '' : 'No agents registered yet.';
      status.className = agents.length ? '' : 'muted';
      tbody.closest('section').dataset.loaded = 'true';
    } catch (err) {
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  const reloadSoon = batched(load, 1000);
  page.every(AGENTS_REFRESH_MS, load);
  page.stream(null, {
    open: load,
    resync: load,
    // Leases come and go with these moves; anything else leaves the agents as they were.
    event: (ev) => {
      if (ev.agent || ev.from === 'assigned' || ev.from === 'executing') reloadSoon();
    },
  });
}

// ---- lifecycle page -----------------------------------------------------------------------------

function lifecyclePage(main, page) {
  const wrap = h('div', { class: 'graph-wrap', testid: 'lifecycle-graph' }, h('p', { class: 'loading' }, 'Loading the lifecycle…'));
  const rulesBox = h('div');
  main.append(h('h1', null, 'Task lifecycle'),
    h('p', { class: 'muted' }, 'Drawn from the engine\'s own table (GET /v1/lifecycle?format=json). ',
      'Each arrow lists the events that make that move; dashed arrows are an operator\'s reopenings.'),
    h('section', { class: 'panel lifecycle' }, legend(null, 'legend'), wrap),
    h('section', { class: 'panel', 'aria-labelledby': 'rules-h' }, h('h2', { id: 'rules-h' }, 'Rules'), rulesBox));

  (async () => {
    let rules;
    try {
      rules = await api('/v1/lifecycle?format=json');
    } catch (err) {
      wrap.replaceChildren(h('p', { class: 'error' }, errorText(err)));
      return;
    }
    if (!page.live) return;
    rulesBox.append(h('table', { testid: 'lifecycle-rules' },
      h('thead', null, h('tr', null, h('th', null, 'From'), h('th', null, 'Event'), h('th', null, 'Guards'), h('th', null, 'To'), h('th', null, 'Effects'))),
      h('tbody', null, rules.map((r) => h('tr', { testid: 'lifecycle-rule' },
        h('td', null, r.from ? badge(r.from) : h('span', { class: 'muted' }, '(new)')),
        h('td', { class: 'mono' }, r.event, r.reopens ? h('span', { class: 'muted' }, ' (reopens)') : ''),
        h('td', { class: 'small' }, r.guards.length ? r.guards.join(', ') : '—'),
        h('td', null, badge(r.to)),
        h('td', { class: 'small' }, r.effects.length ? r.effects.join(', ') : '—'))))));

    // One arrow per (from, to) pair, labelled with its events: 32 rules, about 17 arrows.
    const START = '(new)';
    const states = STATES.filter((st) => rules.some((r) => r.from === st || r.to === st));
    const pairs = new Map();
    for (const r of rules) {
      const k = `${r.from || START}>${r.to}`;
      if (!pairs.has(k)) pairs.set(k, { v: r.from || START, w: r.to, events: [], rules: [], reopens: true });
      const p = pairs.get(k);
      if (!p.events.includes(r.event)) p.events.push(r.event);
      p.rules.push(r);
      p.reopens = p.reopens && r.reopens;
    }
    const edges = [...pairs.values()];
    const flow = edges.filter((e) => e.v !== e.w);
    const loops = edges.filter((e) => e.v === e.w);
    // Arrows back up the lifecycle (a retry, a released lease, a revival) are laid out pointing
    // down and drawn reversed, so the states read top to bottom in the order tasks move.
    const order = (st) => (st === START ? -1 : STATES.indexOf(st));
    for (const e of edges) e.back = order(e.w) < order(e.v);
    const lineH = 13;
    const labelWidth = (e) => Math.max(...e.events.map((ev) => ev.length)) * 6.4 + 10;
    const labelHeight = (e) => e.events.length * lineH + 6;
    const layout = await layoutGraph({
      options: { rankdir: 'TB', nodesep: 40, ranksep: 46, edgesep: 18, marginx: 20, marginy: 20 },
      nodes: [{ id: START, width: 18, height: 18 }, ...states.map((st) => ({ id: st, width: 118, height: 36 }))],
      // Loops (heartbeat, dependency_added) come last: dagre reserves their labels' room
      // beside the node; the loop itself is drawn here, from the node to its label.
      edges: [...flow, ...loops].map((e) => ({
        v: e.back ? e.w : e.v, w: e.back ? e.v : e.w,
        width: labelWidth(e), height: labelHeight(e),
      })),
    });
    if (!page.live) return;
    wrap.replaceChildren();
    const view = new GraphView(wrap, { label: `Lifecycle: ${states.length} states and ${rules.length} rules; the table below lists every rule` });
    const edgeLayer = s('g', { class: 'edges' });
    const labelLayer = s('g');
    const edgeEl = (e, d) => s('path', {
      d, class: e.reopens ? 'edge reopens' : 'edge', 'marker-end': `url(#${view.arrowId})`,
      testid: 'lifecycle-edge', 'data-from': e.v, 'data-to': e.w,
    }, s('title', null, e.rules.map((r) => `${r.event}${r.guards.length ? ` [${r.guards.join(', ')}]` : ''}`).join('\n')));
    const label = (e, x, y, anchor) => {
      const width = labelWidth(e);
      const height = labelHeight(e);
      const left = anchor === 'start' ? 0 : -width / 2;
      return s('g', { transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` },
        s('rect', { class: 'edge-label-bg', x: left, y: -height / 2, width, height, rx: 3 }),
        e.events.map((ev, j) => s('text', { class: 'edge-label', x: left + width / 2, y: -height / 2 + 3 + lineH * (j + 0.5) }, ev)));
    };
    flow.forEach((e, i) => {
      const l = layout.edges[i];
      edgeLayer.append(edgeEl(e, edgePath(e.back ? [...l.points].reverse() : l.points)));
      const mid = l.points[Math.floor(l.points.length / 2)];
      labelLayer.append(label(e, Number.isFinite(l.x) ? l.x : mid.x, Number.isFinite(l.y) ? l.y : mid.y, 'middle'));
    });
    loops.forEach((e, j) => {
      const l = layout.edges[flow.length + j];
      const p = layout.nodes[1 + states.indexOf(e.v)];
      const xr = p.x + 59;
      // dagre's room for the label, unless that is far off: then right beside the loop.
      const near = xr + 40 + labelWidth(e) / 2;
      const lx = Number.isFinite(l.x) ? Math.min(l.x, near) : near;
      const ly = Number.isFinite(l.y) ? l.y : p.y;
      const tip = Math.max(xr + 26, lx - labelWidth(e) / 2 - 2);
      edgeLayer.append(edgeEl(e, `M${xr},${p.y - 8} C${tip},${p.y - 30} ${tip},${p.y + 30} ${xr + 2},${p.y + 9}`));
      labelLayer.append(label(e, lx, ly, 'middle'));
    });
    view.setSize(layout.width, layout.height);
    const nodeLayer = s('g');
    const start = layout.nodes[0];
    nodeLayer.append(s('g', { class: 'node start', testid: 'lifecycle-start', transform: `translate(${start.x},${start.y})` },
      s('circle', { r: 8 }), s('title', null, 'a new task (submitted)')));
    states.forEach((st, i) => {
      const p = layout.nodes[i + 1];
      nodeLayer.append(s('g', {
        class: `node s-${st}`, testid: 'lifecycle-node', 'data-state': st,
        transform: `translate(${(p.x - 59).toFixed(1)},${(p.y - 18).toFixed(1)})`,
      }, s('rect', { width: 118, height: 36, rx: 8 }), s('text', { x: 59, y: 18 }, cap(st))));
    });
    view.content.append(edgeLayer, labelLayer, nodeLayer);
    view.fit();
    wrap.dataset.ready = 'true';
  })();
}

// ---- start --------------------------------------------------------------------------------------

$('#token-button').addEventListener('click', () => {
  askToken('Set the bearer token this dashboard sends to Baton.').then(route, () => {});
});
window.addEventListener('hashchange', route);
route();
