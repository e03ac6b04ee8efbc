// The overview page (#/): live counts per state, the throughput chart, and the workflows
// with their progress, a page at a time.

import { batched, h, s } from './dom.js';
import { fmtClock, fmtNum, fmtTime, shortId } from './format.js';
import { applyTransition } from './counts.js';
import { countCards, progressBar, workflowLink } from './widgets.js';
import { api, errorText } from './api.js';

/** What GET /v1/workflows?status= filters on. */
const WORKFLOW_STATUSES = ['running', 'completed', 'failed', 'cancelled'];
/** Typing in the name filter is read once it pauses this long. */
const NAME_FILTER_PAUSE_MS = 250;
/** Workflows per page of the overview. */
const WORKFLOWS_PAGE_SIZE = 20;
/** Throughput chart: completions per bucket over the last BUCKETS buckets. */
const THROUGHPUT_BUCKET_MS = 10000;
const THROUGHPUT_BUCKETS = 30;
/** Counts are re-read this often on the overview to correct any drift (a cheap O(1) read). */
const COUNTS_RECONCILE_MS = 60000;

export function overviewPage(main, page) {
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
  const statusFilter = h('select', { id: 'workflow-status-filter', testid: 'workflow-status-filter' },
    h('option', { value: '' }, 'any status'), WORKFLOW_STATUSES.map((st) => h('option', { value: st }, st)));
  const nameFilter = h('input', { type: 'search', id: 'workflow-name-filter', testid: 'workflow-name-filter',
    placeholder: 'name contains…', autocomplete: 'off' });
  const wfPanel = h('section', { class: 'panel', 'aria-labelledby': 'wf-h' },
    h('h2', { id: 'wf-h' }, 'Workflows'),
    h('div', { class: 'filters' }, h('label', { for: 'workflow-status-filter' }, 'Status'), statusFilter,
      h('label', { for: 'workflow-name-filter' }, 'Name'), nameFilter),
    h('table', { testid: 'workflows' },
      h('thead', null, h('tr', null, h('th', null, 'Workflow'), h('th', null, 'Status'), h('th', null, 'Created'),
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
  let listGen = 0; // answers can overtake each other: only the latest request's is drawn

  const refilter = () => {
    cursors.length = 1;
    loadWorkflows();
  };
  statusFilter.addEventListener('change', refilter);
  let nameTimer = null;
  nameFilter.addEventListener('input', () => {
    clearTimeout(nameTimer);
    nameTimer = setTimeout(refilter, NAME_FILTER_PAUSE_MS);
  });

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
    const q = new URLSearchParams({ limit: String(WORKFLOWS_PAGE_SIZE) });
    if (before) q.set('before', before);
    if (statusFilter.value) q.set('status', statusFilter.value);
    if (nameFilter.value.trim()) q.set('name', nameFilter.value.trim());
    const filtered = q.has('status') || q.has('name');
    const gen = ++listGen;
    wfPanel.dataset.loaded = 'false';
    byId.clear();
    try {
      const list = await api(`/v1/workflows?${q}`);
      if (!page.live || gen !== listGen) return;
      workflows = [];
      byId.clear();
      wfBody.replaceChildren();
      for (const view of list.workflows) {
        const w = { view, row: h('tr', { testid: 'workflow-row', 'data-workflow': view.id }) };
        renderWorkflowRow(w);
        workflows.push(w);
        byId.set(view.id, w);
        wfBody.append(w.row);
      }
      wfStatus.textContent = list.workflows.length ? ''
        : filtered ? (list.next ? 'None match among the workflows looked at; Older → looks further.' : 'No workflow matches.')
          : 'No workflows yet. Submit one with POST /v1/workflows.';
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
    } else if (!ev.from && cursors.length === 1 && !statusFilter.value && !nameFilter.value.trim()) {
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
  w.row.dataset.status = v.status;
  const label = v.name || '(unnamed)';
  w.row.replaceChildren(
    h('td', null, workflowLink(v.id, label), h('div', { class: 'small muted mono' }, shortId(v.id))),
    h('td', null, h('span', { class: `badge ${v.status === 'running' ? 's-executing' : `s-${v.status}`}`, testid: 'workflow-status', 'data-status': v.status }, v.status)),
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
