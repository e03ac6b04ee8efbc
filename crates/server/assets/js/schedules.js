// The schedules pages: #/schedules lists the schedules (cron and time zone, overlap and
// catch-up policies, active or paused, next fire times, last tick; the first 1,000 by name,
// then it says how to list the rest) with Pause/Resume and Delete, each after a confirmation;
// #/schedules/NAME shows one, with its next five fire times, its workflow template as JSON and
// its recent runs. Schedules make no events, so both re-read the schedule every few seconds
// while open.

import { h } from './dom.js';
import { fmtTime, pretty, shortId } from './format.js';
import { confirmDialog, workflowLink } from './widgets.js';
import { api, errorText } from './api.js';

/** Schedules the list shows (`GET /v1/schedules?limit=`, the most a page holds), by name;
 * past them it says how to list the rest. */
const SCHEDULES_SHOWN_MAX = 1000;
/** How often the open page re-reads its schedules (next fire times move on as ticks pass). */
const SCHEDULES_REFRESH_MS = 2000;
/** Recent runs asked for per page of `GET /v1/workflows?name=` (filtered by key here). */
const RUNS_PAGE_SIZE = 20;
const OVERLAP_TEXT = {
  skip: 'skip: a tick is skipped while the previous run goes on',
  allow: 'allow: runs may overlap',
  cancel_previous: 'cancel previous: a tick cancels the previous run, then submits',
};
const EXAMPLE = pretty({
  name: 'digest', cron: '0 0 9 * * MON-FRI', timezone: 'Europe/Berlin',
  workflow: { tasks: [{ key: 'collect', capabilities: ['report'] }] },
  overlap: 'skip', catch_up: { policy: 'latest' },
});

const schedulePath = (name) => `/v1/schedules/${encodeURIComponent(name)}`;
const scheduleHref = (name) => `#/schedules/${encodeURIComponent(name)}`;

function catchUpText(c) {
  return c.policy === 'all' ? `all (at most ${c.max})` : c.policy;
}

/** `ms` as a wall-clock time in the schedule's zone; null when the browser does not know it. */
function zoned(ms, tz) {
  try {
    return new Intl.DateTimeFormat('en-GB', {
      timeZone: tz, weekday: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
    }).format(new Date(ms));
  } catch (_) {
    return null;
  }
}

/** A fire time in this browser's time, and in the schedule's zone when that differs. */
function fireTime(ms, tz) {
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const there = tz !== local ? zoned(ms, tz) : null;
  return [fmtTime(ms), there ? h('span', { class: 'muted' }, ` (${there} ${tz})`) : null];
}

function stateBadge(paused) {
  return h('span', { class: `badge ${paused ? 'sched-paused' : 'sched-active'}`, testid: 'schedule-state' },
    paused ? 'paused' : 'active');
}

/** The workflow a tick submitted from its idempotency key `schedule:NAME:TICK_MS`, or null. */
function tickOf(key, name) {
  const prefix = `schedule:${name}:`;
  if (!key || !key.startsWith(prefix)) return null;
  const rest = key.slice(prefix.length);
  return /^\d+$/.test(rest) ? Number(rest) : null;
}

/**
 * Pause, Resume and Delete buttons for schedule `s`, each confirmed first. `done(what, view)`
 * is told what happened (`view` is the schedule as it now is, null once deleted); `failed(text)`
 * what went wrong.
 */
function actionButtons(page, s, done, failed) {
  const toggle = h('button', { type: 'button', testid: s.paused ? 'schedule-resume' : 'schedule-pause' },
    s.paused ? 'Resume…' : 'Pause…');
  const del = h('button', { type: 'button', class: 'danger', testid: 'schedule-delete' }, 'Delete…');
  const buttons = [toggle, del];
  async function act(confirm, request, what) {
    if (!(await confirmDialog(confirm)) || !page.live) return;
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const view = await api(request.path, { method: request.method });
      if (page.live) done(what, view);
    } catch (err) {
      if (!page.live) return;
      buttons.forEach((b) => { b.disabled = false; });
      failed(`Not ${what}: ${errorText(err)}`);
    }
  }
  toggle.addEventListener('click', () => (s.paused
    ? act({
      title: 'Resume this schedule?',
      message: `"${s.name}" fires again from its next tick after now; the ticks it slept through are not caught up.`,
      confirmLabel: 'Resume', confirmClass: 'primary',
    }, { path: `${schedulePath(s.name)}/resume`, method: 'POST' }, 'resumed')
    : act({
      title: 'Pause this schedule?',
      message: `No tick of "${s.name}" fires until it is resumed. Workflows it already submitted go on.`,
      confirmLabel: 'Pause', confirmClass: 'primary',
    }, { path: `${schedulePath(s.name)}/pause`, method: 'POST' }, 'paused')));
  del.addEventListener('click', () => act({
    title: 'Delete this schedule?',
    message: `"${s.name}" is deleted and fires no more. Workflows it already submitted are not affected: they run on as they are.`,
    confirmLabel: 'Delete',
  }, { path: schedulePath(s.name), method: 'DELETE' }, 'deleted'));
  return buttons;
}

function outcomeText(what, name, view) {
  if (what === 'resumed' && view && view.next.length) return `Resumed "${name}": next fire at ${fmtTime(view.next[0])}.`;
  return `${what.charAt(0).toUpperCase()}${what.slice(1)} "${name}".`;
}

function nextCell(s) {
  if (s.paused) return h('td', { class: 'small muted', testid: 'schedule-next' }, 'none while paused');
  if (!s.next.length) return h('td', { class: 'small muted', testid: 'schedule-next' }, 'never again');
  const tz = s.spec.timezone;
  const [first, ...rest] = s.next;
  const all = s.next.map((t) => fmtTime(t)).join('\n');
  return h('td', { class: 'small', testid: 'schedule-next', 'data-at': first, title: `Next fire times (this browser's time):\n${all}` },
    rest.length
      ? h('details', { class: 'compact' },
        h('summary', null, fireTime(first, tz)),
        h('ol', { class: 'fire-times', start: 2 }, rest.map((t) => h('li', null, fireTime(t, tz)))))
      : fireTime(first, tz));
}

/** The list of every schedule, kept live. */
export function schedulesPage(main, page) {
  const tbody = h('tbody');
  const table = h('table', { testid: 'schedules' },
    h('thead', null, h('tr', null, h('th', null, 'Schedule'), h('th', null, 'When'), h('th', null, 'Overlap'),
      h('th', null, 'Catch-up'), h('th', null, 'State'), h('th', null, 'Next fire'), h('th', null, 'Last tick'),
      h('th', null, 'Actions'))),
    tbody);
  const status = h('p', { class: 'loading' }, 'Loading…');
  const empty = h('div', { testid: 'schedules-empty', hidden: true },
    h('p', null, 'There are no schedules. Create one with ', h('code', null, 'baton schedules create FILE'), ' or ',
      h('code', null, 'POST /v1/schedules'), ', with a body such as:'),
    h('pre', { class: 'json' }, EXAMPLE));
  const outcome = h('p', { class: 'small', role: 'status', testid: 'schedule-outcome' });
  const panel = h('section', { class: 'panel sched', testid: 'schedules-panel', 'aria-labelledby': 'schedules-h' },
    h('h2', { id: 'schedules-h' }, 'Schedules'),
    h('p', { class: 'small muted' }, 'Each tick submits the schedule\u2019s workflow (idempotency key ',
      h('code', null, 'schedule:NAME:TICK_MS'), '). Times are this browser\u2019s; re-read every ',
      `${SCHEDULES_REFRESH_MS / 1000} s. Pause, Resume and Delete ask for confirmation.`),
    outcome, table, status, empty);
  main.append(h('h1', null, 'Schedules'), panel);
  document.title = 'Schedules · Baton';

  let drawn = null; // what the rows drawn show, to redraw only when it changed
  let gen = 0; // answers can overtake each other: only the latest request's is drawn

  async function load() {
    const mine = ++gen;
    try {
      const list = await api(`/v1/schedules?limit=${SCHEDULES_SHOWN_MAX}`);
      if (!page.live || mine !== gen) return;
      // The same rows as drawn are left alone: a re-read neither closes the fire times the
      // user opened nor replaces the button about to be clicked.
      const now = JSON.stringify(list.schedules);
      if (now !== drawn) tbody.replaceChildren(...list.schedules.map(renderRow));
      drawn = now;
      table.hidden = !list.schedules.length;
      empty.hidden = Boolean(list.schedules.length);
      const more = list.next !== null && list.next !== undefined;
      status.textContent = more
        ? `Showing the first ${SCHEDULES_SHOWN_MAX.toLocaleString('en')} schedules by name; list the rest with baton schedules or GET /v1/schedules?after=…`
        : '';
      status.className = more ? 'small muted' : '';
      panel.dataset.loaded = 'true';
    } catch (err) {
      if (mine !== gen || !page.live) return;
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  function tell(text, ok) {
    outcome.className = ok ? 'small notice' : 'small error';
    outcome.textContent = text;
  }

  function renderRow(s) {
    const buttons = actionButtons(page, s, (what, view) => {
      tell(outcomeText(what, s.name, view), true);
      load();
    }, (text) => {
      tell(text, false);
      load();
    });
    const wf = s.spec.workflow;
    return h('tr', { testid: 'schedule-row', 'data-name': s.name, 'data-paused': String(s.paused) },
      h('td', null, h('a', { href: scheduleHref(s.name), testid: 'schedule-link' }, s.name),
        h('div', { class: 'small muted', testid: 'schedule-submits' },
          `submits ${wf.name || s.name}, ${wf.tasks.length} task${wf.tasks.length === 1 ? '' : 's'}`)),
      h('td', null, h('code', { class: 'cron', testid: 'schedule-cron' }, s.spec.cron), h('div', { class: 'small muted' }, s.spec.timezone)),
      h('td', { class: 'small', title: OVERLAP_TEXT[s.spec.overlap] || '' }, s.spec.overlap),
      h('td', { class: 'small' }, catchUpText(s.spec.catch_up)),
      h('td', null, stateBadge(s.paused)),
      nextCell(s),
      h('td', { class: 'small', testid: 'schedule-last' }, s.last_tick_at ? fmtTime(s.last_tick_at) : 'never',
        s.last_workflow ? h('div', null, workflowLink(s.last_workflow, `run ${shortId(s.last_workflow)}`)) : null),
      h('td', null, h('div', { class: 'row-actions' }, buttons)));
  }

  page.every(SCHEDULES_REFRESH_MS, load);
  load();
}

/** One schedule: its facts, next five fire times, workflow template and recent runs, live. */
export function schedulePage(main, page, name) {
  const facts = h('div');
  const outcome = h('p', { class: 'small', role: 'status', testid: 'schedule-outcome' });
  const runs = h('div', { testid: 'schedule-runs' }, h('p', { class: 'loading' }, 'Loading…'));
  const status = h('p', { class: 'loading' }, 'Loading…');
  const panel = h('section', { class: 'panel sched', testid: 'schedule-page' }, status, outcome, facts);
  main.append(h('div', { class: 'crumbs' }, h('a', { href: '#/schedules' }, 'Schedules'), ' / ', name),
    h('h1', null, name), panel,
    h('section', { class: 'panel', 'aria-labelledby': 'runs-h' }, h('h2', { id: 'runs-h' }, 'Recent runs'), runs));
  document.title = `${name} · Schedules · Baton`;

  let drawn = null;
  let lastRun;

  async function load() {
    try {
      const s = await api(schedulePath(name));
      if (!page.live) return;
      const now = JSON.stringify(s);
      if (now !== drawn) facts.replaceChildren(...renderFacts(s));
      drawn = now;
      status.textContent = '';
      status.className = '';
      panel.dataset.loaded = 'true';
      if (s.last_workflow !== lastRun) {
        lastRun = s.last_workflow;
        loadRuns(s, null, true);
      }
    } catch (err) {
      if (!page.live) return;
      if (err.status === 404) {
        facts.replaceChildren();
        drawn = null;
      }
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  function renderFacts(s) {
    const buttons = actionButtons(page, s, (what, view) => {
      if (!view) {
        location.hash = '#/schedules';
        return;
      }
      outcome.className = 'small notice';
      outcome.textContent = outcomeText(what, name, view);
      load();
    }, (text) => {
      outcome.className = 'small error';
      outcome.textContent = text;
    });
    const tz = s.spec.timezone;
    return [
      h('div', { class: 'actions' }, stateBadge(s.paused), buttons),
      h('dl', { class: 'kv' },
        h('dt', null, 'Cron'), h('dd', null, h('code', null, s.spec.cron)),
        h('dt', null, 'Time zone'), h('dd', null, tz),
        h('dt', null, 'Overlap'), h('dd', null, OVERLAP_TEXT[s.spec.overlap] || s.spec.overlap),
        h('dt', null, 'Catch-up'), h('dd', null, catchUpText(s.spec.catch_up)),
        h('dt', null, 'Last tick'), h('dd', null, s.last_tick_at ? fmtTime(s.last_tick_at) : 'never',
          s.last_workflow ? [' → ', workflowLink(s.last_workflow)] : null),
        h('dt', null, 'Created'), h('dd', null, fmtTime(s.created_at)),
        h('dt', null, 'Updated'), h('dd', null, fmtTime(s.updated_at))),
      h('h3', null, 'Next fire times'),
      s.next.length
        ? h('ol', { class: 'fire-times', testid: 'schedule-next-list' },
          s.next.map((t) => h('li', { 'data-at': t }, fireTime(t, tz))))
        : h('p', { class: 'muted', testid: 'schedule-next-list' }, s.paused ? 'None while paused.' : 'It fires no more.'),
      h('h3', null, 'Workflow template'),
      h('pre', { class: 'json', testid: 'schedule-template' }, pretty(s.spec.workflow)),
    ];
  }

  /** The workflows this schedule submitted, newest first: those named as it names them, whose
   *  key is one of its ticks. `before` goes on from an earlier page. */
  async function loadRuns(s, before, fresh) {
    const wfName = s.spec.workflow.name || s.name;
    const q = new URLSearchParams({ name: wfName, limit: String(RUNS_PAGE_SIZE) });
    if (before) q.set('before', before);
    try {
      const list = await api(`/v1/workflows?${q}`);
      if (!page.live) return;
      const mine = list.workflows.filter((w) => tickOf(w.idempotency_key, s.name) !== null);
      const rows = mine.map((w) => h('tr', { testid: 'schedule-run', 'data-workflow': w.id },
        h('td', null, workflowLink(w.id, `${w.name} ${shortId(w.id)}`)),
        h('td', { class: 'small' }, fmtTime(tickOf(w.idempotency_key, s.name))),
        h('td', null, h('span', { class: `badge ${w.status === 'running' ? 's-executing' : `s-${w.status}`}` }, w.status))));
      let table = runs.querySelector('table');
      if (fresh || !table) {
        table = h('table', null, h('thead', null, h('tr', null, h('th', null, 'Workflow'), h('th', null, 'Tick'),
          h('th', null, 'Status'))), h('tbody'));
        runs.replaceChildren(table);
      }
      table.tBodies[0].append(...rows);
      runs.querySelector('[data-testid=runs-more]')?.remove();
      runs.querySelector('[data-testid=runs-none]')?.remove();
      const none = !table.tBodies[0].rows.length;
      table.hidden = none;
      if (none) runs.prepend(h('p', { class: 'muted', testid: 'runs-none' }, list.next ? 'None among the latest workflows.' : 'None yet.'));
      if (list.next) {
        runs.append(h('button', { type: 'button', testid: 'runs-more', onclick: () => loadRuns(s, list.next, false) },
          'Look further back'));
      }
    } catch (err) {
      if (!page.live) return;
      runs.replaceChildren(h('p', { class: 'error' }, errorText(err)));
    }
  }

  page.every(SCHEDULES_REFRESH_MS, load);
  load();
}
