// The audit page (#/audit): every operator action (pause, resume, skip, fail, rerun, cancel,
// retry, signal), newest first, from `GET /v1/audit`: when (this browser's time), who, what, on
// which task or workflow, why, and what it changed. Filters by actor, action and workflow (kept
// in the address: `#/audit?workflow=ID`, as the workflow page links it); older entries a page at
// a time (`before` = the previous page's `next`). Read-only. The audit log makes no events, so
// the page re-reads it every few seconds while open.

import { h } from './dom.js';
import { fmtTime } from './format.js';
import { taskLink, workflowLink } from './widgets.js';
import { api, errorText } from './api.js';

/** How often the open page re-reads its entries. */
const AUDIT_REFRESH_MS = 3000;
/** Entries per page. */
const AUDIT_PAGE_SIZE = 50;
/** Typing in a filter is read once it pauses this long. */
const FILTER_PAUSE_MS = 300;
/** Characters of an entry's detail shown in its row; all of it behind "show all". */
const DETAIL_CHARS = 120;
/** What `GET /v1/audit?action=` filters on. */
const ACTIONS = ['pause', 'resume', 'skip', 'fail', 'rerun', 'cancel', 'retry', 'signal'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** One value of an entry's detail, on one line. */
function detailValue(v) {
  if (Array.isArray(v)) return v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ');
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** An entry's detail as `key: value` pairs, cut at DETAIL_CHARS; the whole of it as JSON when
 *  that was cut. */
function detailCell(detail) {
  const pairs = detail && typeof detail === 'object' && !Array.isArray(detail)
    ? Object.entries(detail).filter(([, v]) => v !== null && v !== undefined && v !== false)
      .map(([k, v]) => `${k.replaceAll('_', ' ')}: ${detailValue(v)}`).join(' · ')
    : detailValue(detail);
  if (pairs.length <= DETAIL_CHARS) return h('td', { class: 'small', testid: 'audit-detail' }, pairs);
  return h('td', { class: 'small', testid: 'audit-detail' },
    h('details', { class: 'compact' }, h('summary', null, `${pairs.slice(0, DETAIL_CHARS)}…`),
      h('pre', { class: 'json' }, JSON.stringify(detail, null, 2))));
}

/** What the action was done to: a task (in its workflow) or a whole workflow. */
function targetCell(e) {
  const parts = [];
  if (e.task) parts.push('task ', taskLink(e.task));
  if (e.task && e.workflow) parts.push(h('div', { class: 'small muted' }, 'in ', workflowLink(e.workflow)));
  else if (e.workflow) parts.push('workflow ', workflowLink(e.workflow));
  return h('td', { testid: 'audit-target' }, parts.length ? parts : h('span', { class: 'muted' }, '—'));
}

function renderRow(e) {
  return h('tr', { testid: 'audit-row', 'data-id': e.id, 'data-action': e.action, 'data-task': e.task || null,
    'data-workflow': e.workflow || null },
  h('td', { class: 'small', title: new Date(e.at).toISOString() }, fmtTime(e.at)),
  h('td', { testid: 'audit-actor' }, e.actor),
  h('td', null, h('code', { testid: 'audit-action' }, e.action)),
  targetCell(e),
  h('td', { testid: 'audit-reason' }, e.reason || h('span', { class: 'muted' }, '—')),
  detailCell(e.detail));
}

/** `query`: the filters in the address (URLSearchParams), read as the page opens. */
export function auditPage(main, page, query) {
  const actor = h('input', { type: 'text', id: 'audit-actor', testid: 'audit-filter-actor', autocomplete: 'off',
    placeholder: 'operator', value: query.get('actor') || '' });
  const action = h('select', { id: 'audit-action', testid: 'audit-filter-action' },
    h('option', { value: '' }, 'any action'), ACTIONS.map((a) => h('option', { value: a }, a)));
  action.value = ACTIONS.includes(query.get('action')) ? query.get('action') : '';
  const workflow = h('input', { type: 'text', id: 'audit-workflow', testid: 'audit-filter-workflow', autocomplete: 'off',
    placeholder: 'workflow id', size: 38, value: query.get('workflow') || '' });
  const tbody = h('tbody');
  const table = h('table', { testid: 'audit' },
    h('thead', null, h('tr', null, h('th', null, 'When'), h('th', null, 'Actor'), h('th', null, 'Action'),
      h('th', null, 'Target'), h('th', null, 'Reason'), h('th', null, 'Detail'))),
    tbody);
  const status = h('p', { class: 'loading', testid: 'audit-status' }, 'Loading…');
  const newest = h('button', { type: 'button', testid: 'audit-newest', disabled: true }, '⇤ Newest');
  const older = h('button', { type: 'button', testid: 'audit-older', disabled: true }, 'Older →');
  const pageNo = h('span', { class: 'small muted', testid: 'audit-page' });
  const panel = h('section', { class: 'panel', testid: 'audit-panel', 'aria-labelledby': 'audit-h' },
    h('h2', { id: 'audit-h' }, 'Operator actions, newest first'),
    h('p', { class: 'small muted' }, 'Every pause, resume, skip, fail, rerun, cancel, retry and signal, with who did it and why. ',
      `Times are this browser\u2019s; re-read every ${AUDIT_REFRESH_MS / 1000} s.`),
    h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); refilter(); } },
      h('label', { for: 'audit-actor' }, 'Actor'), actor,
      h('label', { for: 'audit-action' }, 'Action'), action,
      h('label', { for: 'audit-workflow' }, 'Workflow'), workflow),
    table, status,
    h('div', { class: 'pager' }, newest, older, pageNo));
  main.append(h('h1', null, 'Audit'), panel);
  document.title = 'Audit · Baton';

  let cursors = [null]; // `before` of each page visited; the last is the current page
  let drawn = null; // what the rows drawn show, to redraw only when it changed
  let gen = 0; // answers can overtake each other: only the latest request's is drawn

  function filters() {
    const q = new URLSearchParams();
    if (actor.value.trim()) q.set('actor', actor.value.trim());
    if (action.value) q.set('action', action.value);
    if (workflow.value.trim()) q.set('workflow', workflow.value.trim());
    return q;
  }

  async function load() {
    const mine = ++gen;
    const q = filters();
    const wf = q.get('workflow');
    if (wf && !UUID.test(wf)) {
      status.textContent = 'The workflow filter takes a workflow\u2019s whole id (as its page shows it).';
      status.className = 'error';
      tbody.replaceChildren();
      drawn = null;
      return;
    }
    q.set('limit', String(AUDIT_PAGE_SIZE));
    const before = cursors[cursors.length - 1];
    if (before !== null) q.set('before', String(before));
    try {
      const list = await api(`/v1/audit?${q}`);
      if (!page.live || mine !== gen) return;
      // The same rows as drawn are left alone: a re-read does not close a detail the user opened.
      const now = JSON.stringify(list.entries);
      if (now !== drawn) tbody.replaceChildren(...list.entries.map(renderRow));
      drawn = now;
      table.hidden = !list.entries.length;
      const filtered = [...filters().keys()].length > 0;
      status.textContent = list.entries.length ? ''
        : cursors.length > 1 ? 'No older entries.'
          : filtered ? 'No operator action matches these filters.' : 'No operator action recorded yet.';
      status.className = list.entries.length ? '' : 'muted';
      newest.disabled = cursors.length === 1;
      older.disabled = list.next === null || list.next === undefined;
      older.onclick = () => {
        cursors.push(list.next);
        load();
      };
      pageNo.textContent = `page ${cursors.length}`;
      panel.dataset.loaded = 'true';
    } catch (err) {
      if (!page.live || mine !== gen) return;
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  /** New filters: back to the newest entries, and into the address (without a new page). */
  function refilter() {
    cursors = [null];
    panel.dataset.loaded = 'false';
    const q = filters();
    history.replaceState(null, '', `#/audit${[...q.keys()].length ? `?${q}` : ''}`);
    load();
  }

  let typing = null;
  for (const input of [actor, workflow]) {
    input.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(refilter, FILTER_PAUSE_MS);
    });
  }
  page.onLeave(() => clearTimeout(typing));
  action.addEventListener('change', refilter);
  newest.addEventListener('click', () => {
    cursors = [null];
    load();
  });

  page.every(AUDIT_REFRESH_MS, load);
  load();
}
