// The workflow page's timeline (a Gantt chart): one row per task, grouped as in the graph (a
// collapsed group is one row with its members' bars over each other), and per attempt the
// periods it spent blocked, queued (pending), assigned, executing and failed (waiting for its
// retry), from the tasks' histories (GET /v1/workflows/{id}/history, a page of tasks at a
// time: entries' times and events, no data). Redrawn on Refresh, not live.

import { h, s } from './dom.js';
import { fmtClock, fmtNum, fmtTime } from './format.js';
import { api, errorText } from './api.js';
import { byKey } from './groups.js';

/** Tasks per history request (the server's most). */
const HISTORY_TASKS_PER_PAGE = 500;
/** Most rows drawn; past them, the chart says how many it left out. */
const ROWS_MAX = 1500;
const ROW_H = 18;
const LABEL_W = 230;
const AXIS_H = 24;

/** The state a task is in before each event, where that is certain. */
const FROM = {
  agent_assigned: 'pending', execution_started: 'assigned', heartbeat: 'executing', subtasks_added: 'executing',
  execution_succeeded: 'executing', execution_failed: 'executing', retry: 'failed', retry_requested: 'failed',
  dependencies_met: 'blocked', for_each_expanded: 'blocked', upstream_failed: 'blocked', upstream_revived: 'cancelled',
};
/** The state after each event when the next event does not tell (or it is the last). */
const TO = {
  submitted: 'blocked', agent_assigned: 'assigned', execution_started: 'executing', heartbeat: 'executing',
  subtasks_added: 'executing', execution_succeeded: 'completed', execution_failed: 'failed', retry: 'pending',
  retry_requested: 'pending', dependencies_met: 'pending', for_each_expanded: 'blocked', upstream_failed: 'cancelled',
  upstream_revived: 'blocked', assignment_released: 'pending', timeout_expired: 'failed', agent_lost: 'failed',
  cancel_requested: 'cancelled',
};
const ENDED = new Set(['completed', 'failed', 'cancelled']);

/**
 * A task's periods from its history entries: [{state, from, to, attempt}], the last one open
 * (`to` = `now`) unless the task has ended. `state` is the task's state now, which decides
 * what its last entry led to.
 */
export function periods(entries, state, now) {
  const out = [];
  let attempt = 1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const next = entries[i + 1];
    if (e.event === 'retry' || e.event === 'retry_requested') attempt++;
    let st = next ? (FROM[next.event] || TO[e.event]) : state;
    if (e.event === 'dependency_added' && out.length) st = out[out.length - 1].state;
    if (!st) continue;
    const until = next ? next.at : now;
    const last = out[out.length - 1];
    if (last && last.state === st && last.attempt === attempt) last.to = until;
    else out.push({ state: st, from: e.at, to: until, attempt });
  }
  // An ended task's last period is a moment, not a bar.
  if (out.length && ENDED.has(out[out.length - 1].state)) out.end = out.pop();
  return out;
}

/** The timeline panel over `box`; `load(groups)` reads the histories and draws. */
export function timelinePanel(box, workflow, page) {
  const refresh = h('button', { type: 'button', testid: 'timeline-refresh' }, 'Refresh');
  const status = h('span', { class: 'small muted', role: 'status', testid: 'timeline-status' });
  const chart = h('div', { class: 'timeline-chart', testid: 'timeline' });
  box.append(h('div', { class: 'filters' }, refresh, status), timelineLegend(), chart);
  let groups = null;
  let marks = null; // Map task -> entries
  let seq = 0;

  async function load(g) {
    if (g) groups = g;
    if (!groups) return;
    const mine = ++seq;
    status.textContent = 'Reading histories…';
    chart.dataset.ready = 'false';
    const read = new Map();
    try {
      let after = null;
      for (;;) {
        const q = new URLSearchParams({ limit: String(HISTORY_TASKS_PER_PAGE) });
        if (after) q.set('after', after);
        const pageOf = await api(`/v1/workflows/${encodeURIComponent(workflow)}/history?${q}`);
        if (!page.live || mine !== seq) return;
        for (const t of pageOf.tasks) read.set(t.task, t.entries);
        status.textContent = `Read the histories of ${fmtNum(read.size)} tasks…`;
        if (!pageOf.next) break;
        after = pageOf.next;
      }
    } catch (err) {
      status.textContent = errorText(err);
      return;
    }
    marks = read;
    draw();
  }

  function draw() {
    // Open periods run to the latest event recorded, not to this browser's clock: the
    // server's clock decides every time shown, and a refresh extends them.
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const entries of marks.values()) {
      for (const e of entries) {
        t0 = Math.min(t0, e.at);
        t1 = Math.max(t1, e.at);
      }
    }
    if (!(t1 > t0)) t1 = t0 + 1000;
    const now = t1;
    const spans = (n) => periods(marks.get(n.id) || [], n.state, now);
    // Rows in the order tasks were created, then by key: the same histories, the same chart.
    const first = (n) => {
      const e = marks.get(n.id);
      return e && e.length ? e[0].at : Infinity;
    };
    const rows = groups.rows((a, b) => first(a) - first(b) || byKey(a, b));
    const shownRows = rows.slice(0, ROWS_MAX);
    const width = Math.max(600, Math.round(chart.clientWidth || 1000));
    const plotW = width - LABEL_W - 12;
    const x = (t) => LABEL_W + ((t - t0) / (t1 - t0)) * plotW;
    const svg = s('svg', { width, height: AXIS_H + shownRows.length * ROW_H + 4, class: 'gantt', role: 'img',
      'aria-label': `Timeline of ${rows.length} rows from ${fmtTime(t0)} to ${fmtTime(t1)}` });
    svg.append(axis(t0, t1, x, shownRows.length * ROW_H + AXIS_H));
    shownRows.forEach((row, i) => {
      const y = AXIS_H + i * ROW_H;
      const members = row.group ? groups.members(row.group) : [row.task];
      const key = row.group ? `${groups.label(row.group)} of ${groups.nodes.get(row.group).key}` : row.task.key;
      const g = s('g', { class: `row${row.group ? ' group-row' : ''}`, testid: 'timeline-row', 'data-key': row.group ? '' : row.task.key,
        'data-task': row.group ? null : row.task.id, 'data-group': row.group || null });
      if (i % 2) g.append(s('rect', { class: 'stripe', x: 0, y, width, height: ROW_H }));
      g.append(s('text', { class: 'row-label', x: 6 + row.depth * 12, y: y + ROW_H / 2 }, (row.group ? '⊞ ' : '') + clip(key, 34 - row.depth * 2)));
      for (const m of members) {
        const ps = spans(m);
        for (const p of ps) {
          g.append(s('rect', { class: `bar s-${p.state}`, testid: 'timeline-bar', 'data-state': p.state, 'data-attempt': p.attempt,
            x: x(p.from).toFixed(1), y: y + 3, width: Math.max(1, x(p.to) - x(p.from)).toFixed(1), height: ROW_H - 6 },
          s('title', null, `${m.key} · ${p.state} · attempt ${p.attempt}\n${fmtTime(p.from)} → ${fmtTime(p.to)} (${duration(p.to - p.from)})`)));
        }
        if (ps.end) {
          g.append(s('rect', { class: `end s-${ps.end.state}`, testid: 'timeline-end', 'data-state': ps.end.state,
            x: (x(ps.end.from) - 1.5).toFixed(1), y: y + 1, width: 3, height: ROW_H - 2 },
          s('title', null, `${m.key} · ${ps.end.state} at ${fmtTime(ps.end.from)}`)));
        }
      }
      svg.append(g);
    });
    svg.addEventListener('click', (e) => {
      const row = e.target.closest && e.target.closest('[data-testid=timeline-row]');
      if (!row) return;
      if (row.dataset.group) {
        groups.toggle(row.dataset.group);
        draw();
      } else if (row.dataset.task) location.hash = `#/tasks/${encodeURIComponent(row.dataset.task)}`;
    });
    chart.replaceChildren(svg);
    status.textContent = `${fmtNum(marks.size)} tasks, ${fmtTime(t0)} to ${fmtTime(t1)}` +
      (rows.length > shownRows.length ? `; the first ${fmtNum(shownRows.length)} of ${fmtNum(rows.length)} rows` : '') +
      '. Hover a bar for its times; click a group to expand it, a task to open it.';
    chart.dataset.rows = String(shownRows.length);
    chart.dataset.ready = 'true';
  }

  /** A big workflow: its histories are read when asked for. */
  function wait(g) {
    groups = g;
    status.textContent = `${fmtNum(g.nodes.size)} tasks: Refresh reads their histories (${fmtNum(Math.ceil(g.nodes.size / HISTORY_TASKS_PER_PAGE))} requests).`;
  }

  refresh.addEventListener('click', () => load());
  return { load, wait };
}

/** Ticks at a round step, about eight over the span. */
function axis(t0, t1, x, height) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400].map((v) => v * 1000);
  const step = steps.find((st) => (t1 - t0) / st <= 8) || 86400000 * Math.ceil((t1 - t0) / 86400000 / 8);
  const g = s('g', { class: 'axis' });
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    g.append(s('line', { x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: height }),
      s('text', { x: x(t), y: AXIS_H - 8 }, step < 60000 || t % 60000 ? fmtClock(t) : fmtClock(t).slice(0, 5)));
  }
  return g;
}

function timelineLegend() {
  const item = (st, text) => h('li', null, h('span', { class: `swatch s-${st}`, 'aria-hidden': 'true' }), text);
  return h('ul', { class: 'legend', 'aria-label': 'Timeline colours' },
    item('blocked', 'blocked (waiting for dependencies)'), item('pending', 'queued'), item('assigned', 'assigned'),
    item('executing', 'executing'), item('failed', 'failed (retry wait)'), item('completed', 'ended'));
}

function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

const clip = (text, n) => (text.length > n ? text.slice(0, n - 1) + '…' : text);
