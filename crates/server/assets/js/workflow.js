// The workflow page (#/workflows/ID): its status and result, whether an operator paused it,
// its dependency graph (graph.js) kept live, its timeline (timeline.js), cancel, pause and
// resume (each with a reason and a confirmation, controls.js), its spend against its budgets
// (spend.js), the paginated table of its tasks (paused ones marked), and the signals it was sent.

import { batched, h } from './dom.js';
import { fmtNum, fmtTime, pretty, shortId } from './format.js';
import { STATES, applyTransition, emptyCounts, pausedAfter } from './counts.js';
import { badge, confirmDialog, legend, taskLink } from './widgets.js';
import { api, errorText } from './api.js';
import { abandonLayouts } from './graph-view.js';
import { graphPanel } from './graph.js';
import { timelinePanel } from './timeline.js';
import { askControl, workflowControlSpec } from './controls.js';
import { spendPanel } from './spend.js';

/** Tasks per page of a workflow's task table. */
const TASKS_PAGE_SIZE = 50;
/** Signals per page of a workflow's signals. */
const SIGNALS_PAGE_SIZE = 20;
/** Characters of a signal's data shown in its row. */
const SIGNAL_DATA_CHARS = 80;
/** Largest workflow whose graph is fetched (and grouped); beyond it the table alone is shown. */
const GRAPH_TASKS_MAX = 20000;
/** Largest workflow whose timeline is read as the page opens; a bigger one waits for Refresh. */
const TIMELINE_AUTO_TASKS_MAX = 2000;

export function workflowPage(main, page, id) {
  const title = h('h1', null, 'Workflow');
  const idLine = h('div', { class: 'small muted mono' }, id);
  const notice = h('p', { class: 'small', role: 'status', testid: 'action-result' });
  const cancelBtn = h('button', { type: 'button', class: 'danger', testid: 'workflow-cancel' }, 'Cancel workflow…');
  const pauseBtn = h('button', { type: 'button', testid: 'workflow-pause', hidden: true }, 'Pause workflow…');
  const resumeBtn = h('button', { type: 'button', class: 'primary', testid: 'workflow-resume', hidden: true }, 'Resume workflow…');
  const pausedBox = h('div');
  let shownWorkflow = null; // the workflow as last read
  const legendBox = h('div');
  const searchBox = h('div');
  const graphWrap = h('div', { class: 'graph-wrap', testid: 'graph' });
  const graphNote = h('p', { class: 'small muted', testid: 'graph-note' });
  const timelineBox = h('div');
  const tableBox = h('div');
  const signalsBox = h('div');
  const statusLine = h('p', { testid: 'workflow-status' });
  const resultBox = h('div', { testid: 'workflow-result' });
  const spend = spendPanel();
  main.append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / workflow'),
    title, idLine, statusLine, pausedBox,
    h('div', { class: 'actions' }, pauseBtn, resumeBtn, cancelBtn,
      h('a', { href: `#/audit?${new URLSearchParams({ workflow: id })}`, class: 'small', testid: 'workflow-audit' }, 'Audit log'),
      notice),
    h('section', { class: 'panel', 'aria-labelledby': 'result-h' },
      h('h2', { id: 'result-h' }, 'Result'), resultBox), spend.el,
    h('section', { class: 'panel', 'aria-labelledby': 'graph-h' },
      h('h2', { id: 'graph-h' }, 'Dependency graph (live)'), legendBox, searchBox, graphWrap, graphNote),
    h('section', { class: 'panel', 'aria-labelledby': 'timeline-h' },
      h('h2', { id: 'timeline-h' }, 'Timeline'), timelineBox),
    h('section', { class: 'panel', 'aria-labelledby': 'tasks-h' },
      h('h2', { id: 'tasks-h' }, 'Tasks'), tableBox),
    h('section', { class: 'panel', 'aria-labelledby': 'signals-h' },
      h('h2', { id: 'signals-h' }, 'Signals'), signalsBox));

  let counts = null;
  let unknownTasks = 0;
  let duringLayout = null; // transitions seen while a layout runs: Map task -> last event
  const table = taskTable(tableBox, id);
  const signals = signalTable(signalsBox, id);
  const graph = graphPanel(graphWrap, graphNote, searchBox);
  const timeline = timelinePanel(timelineBox, id, page);

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

  /** Pause or resume the workflow: the dialog (a reason, `now` for a pause, a confirmation),
   *  then the request; the outcome or the server's refusal is said beside the buttons. */
  async function control(kind) {
    const pause = kind === 'pause';
    const body = await askControl(workflowControlSpec(kind, shownWorkflow));
    if (!body || !page.live) return;
    notice.className = 'small';
    try {
      const r = await api(`/v1/workflows/${encodeURIComponent(id)}/${kind}`, { method: 'POST', body });
      notice.textContent = `${pause ? 'Paused' : 'Resumed'}: ${r.tasks_changed} task(s) ${pause ? 'paused' : 'resumed'}.`;
      notice.classList.add('notice');
      notice.dataset.testid = 'action-result';
    } catch (err) {
      notice.textContent = `Refused: ${errorText(err)}`;
      notice.classList.add('error');
      notice.dataset.testid = 'action-error';
    }
    if (!page.live) return;
    refreshStatusSoon();
    table.reload();
  }
  pauseBtn.addEventListener('click', () => control('pause'));
  resumeBtn.addEventListener('click', () => control('resume'));

  // Where the workflow stands as a whole, whether it is paused, and its result once it has ended.
  function showStatus(wf) {
    shownWorkflow = wf;
    const cls = wf.status === 'running' ? 's-executing' : `s-${wf.status}`;
    statusLine.replaceChildren('Status: ',
      h('span', { class: `badge ${cls}`, 'data-status': wf.status }, wf.status),
      ...(wf.paused ? [' ', h('span', { class: 'badge paused' }, 'paused')] : []));
    pausedBox.replaceChildren(wf.paused
      ? h('div', { class: 'paused-banner', testid: 'workflow-paused', role: 'status' },
        h('strong', null, 'Paused'), ` by ${wf.paused.by} since ${fmtTime(wf.paused.at)}: `,
        h('span', { testid: 'workflow-paused-reason' }, wf.paused.reason),
        h('div', { class: 'small' }, 'No task of it is handed to an agent (tasks added to it start paused) until it is resumed.'))
      : '');
    spend.show(wf);
    pauseBtn.hidden = Boolean(wf.paused) || wf.status !== 'running';
    resumeBtn.hidden = !wf.paused;
    if (wf.result !== undefined) {
      resultBox.replaceChildren(h('pre', { class: 'json', testid: 'workflow-result-json' }, pretty(wf.result)));
    } else if (wf.unresolved) {
      const u = wf.unresolved;
      resultBox.replaceChildren(h('p', { class: 'error' },
        `No result: ${u.at} refers to ${u.from}${u.pointer ? ' ' + u.pointer : ''}: ${u.reason || 'found nothing'}.`));
    } else {
      resultBox.replaceChildren(h('p', { class: 'muted' }, wf.outputs
        ? 'Its outputs are resolved once every task has ended.'
        : 'This workflow declares no outputs.'));
    }
  }

  // Re-read the status once tasks end; several endings in a row are read once.
  let statusTimer = null;
  function refreshStatusSoon() {
    if (statusTimer) return;
    statusTimer = setTimeout(async () => {
      statusTimer = null;
      try {
        const wf = await api(`/v1/workflows/${encodeURIComponent(id)}`);
        if (page.live) showStatus(wf);
      } catch { /* the next ending or a reload tries again */ }
    }, 300);
  }

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
      showStatus(wf);
      drawLegend();
      table.reload();
      signals.reload();
      if (wf.counts.total > GRAPH_TASKS_MAX) {
        graphWrap.replaceChildren(h('p', { class: 'loading', testid: 'graph-too-big' },
          `This workflow has ${fmtNum(wf.counts.total)} tasks; graphs are drawn up to ${fmtNum(GRAPH_TASKS_MAX)}. Use the table below.`));
        return;
      }
      const known = graph.groups;
      const g = await api(`/v1/workflows/${encodeURIComponent(id)}/graph`);
      if (!current()) return;
      if (known && g.nodes.length === known.nodes.size && g.nodes.every((n) => known.nodes.has(n.id))) {
        graph.recolour(g); // same tasks (a reconnect, a lagged stream): no new layout needed
        recount();
      } else {
        await drawGraph(g, current);
      }
    } catch (err) {
      graphWrap.replaceChildren(h('p', { class: 'error', testid: 'graph-error' }, errorText(err)));
    }
  }

  // Counts follow the graph's own states from here on (exact per task).
  function recount() {
    counts = emptyCounts();
    for (const n of graph.groups.nodes.values()) {
      counts[n.state]++;
      counts.total++;
    }
    drawLegend();
  }

  async function drawGraph(g, current) {
    duringLayout = new Map();
    const started = performance.now();
    await graph.show(g, current);
    if (!current()) return;
    const seen = duringLayout;
    duringLayout = null;
    unknownTasks = 0;
    for (const ev of seen.values()) if (!graph.onEvent(ev)) unknownTasks++;
    recount();
    graphWrap.dataset.loadMs = String(Math.round(performance.now() - started));
    if (g.nodes.length <= TIMELINE_AUTO_TASKS_MAX) timeline.load(graph.groups);
    else timeline.wait(graph.groups);
  }

  function onEvent(ev) {
    if (ev.workflow !== id) return;
    table.onEvent(ev);
    signals.onEvent(ev);
    // Paused or resumed from elsewhere (the command line, a task's page): the banner follows.
    if (ev.event === 'pause_requested' || ev.event === 'resume_requested') refreshStatusSoon();
    if (!counts) return;
    if (duringLayout) duringLayout.set(ev.task, ev);
    else if (graph.groups && !graph.onEvent(ev)) {
      // A task added while the graph is shown (decomposition, a compensation task).
      unknownTasks++;
      graphNote.replaceChildren(`${unknownTasks} task(s) added since the layout. `,
        h('button', { type: 'button', testid: 'graph-relayout', onclick: () => load() }, 'Lay out again'));
    }
    applyTransition(counts, ev);
    drawLegend();
    if (ev.to === 'completed' || ev.to === 'failed' || ev.to === 'cancelled') refreshStatusSoon();
  }

  page.onLeave(abandonLayouts);
  page.stream(id, { open: load, resync: load, event: onEvent });
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
        const stateCell = h('td', null, stateCellContent(t.state, t.paused));
        const row = h('tr', { testid: 'task-row', 'data-task': t.id, 'data-state': t.state, 'data-paused': String(Boolean(t.paused)) },
          h('td', null, taskLink(t.id, t.key)),
          stateCell,
          h('td', { class: 'num' }, String(t.attempt)),
          h('td', { class: 'num' }, String(t.priority)),
          h('td', { class: 'small' }, fmtTime(t.updated_at)),
          h('td', { class: 'small mono muted' }, shortId(t.id)));
        rows.set(t.id, { row, stateCell, paused: Boolean(t.paused) });
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
      r.paused = pausedAfter(r.paused, ev);
      r.row.dataset.state = ev.to;
      r.row.dataset.paused = String(r.paused);
      r.stateCell.replaceChildren(...stateCellContent(ev.to, r.paused));
    },
  };
}

/** A task's state badge, and a "paused" tag when an operator paused it. */
function stateCellContent(state, paused) {
  return [badge(state), paused ? [' ', h('span', { class: 'badge paused', testid: 'task-row-paused' }, 'paused')] : ''].flat();
}

/** The signals sent to one workflow, oldest first, a page at a time: delivered, or kept for a
 *  task to come. Re-read when a task of the workflow takes one (a signal that no task takes
 *  sends no transition: it shows on the next load). */
function signalTable(box, workflow) {
  const body = h('tbody');
  const status = h('p', { class: 'loading' }, 'Loading…');
  const first = h('button', { type: 'button', testid: 'signals-first', disabled: true }, '⇤ First');
  const next = h('button', { type: 'button', testid: 'signals-next', disabled: true }, 'Next →');
  box.append(
    h('table', { testid: 'signals' },
      h('thead', null, h('tr', null, h('th', { class: 'num' }, '#'), h('th', null, 'Signal'), h('th', null, 'Data'),
        h('th', null, 'Sent by'), h('th', null, 'Sent'), h('th', null, 'Delivered'))),
      body),
    status,
    h('div', { class: 'pager' }, first, next));
  let cursors = [null];
  let gen = 0;

  async function load() {
    const mine = ++gen;
    const after = cursors[cursors.length - 1];
    const q = new URLSearchParams({ limit: String(SIGNALS_PAGE_SIZE) });
    if (after !== null) q.set('after', String(after));
    try {
      const list = await api(`/v1/workflows/${encodeURIComponent(workflow)}/signals?${q}`);
      if (mine !== gen) return;
      body.replaceChildren(...list.signals.map((sg) => {
        const data = sg.reject !== undefined ? `rejected: ${sg.reject}` : JSON.stringify(sg.data);
        return h('tr', { testid: 'signal-row', 'data-signal': sg.name, 'data-delivered': String(sg.delivered_at !== undefined) },
          h('td', { class: 'num' }, String(sg.id)),
          h('td', null, h('code', null, sg.name)),
          h('td', { class: sg.reject !== undefined ? 'error' : null, title: data },
            h('code', null, data.length > SIGNAL_DATA_CHARS ? `${data.slice(0, SIGNAL_DATA_CHARS)}…` : data)),
          h('td', null, sg.sent_by),
          h('td', { class: 'small' }, fmtTime(sg.sent_at)),
          h('td', { class: 'small' }, sg.delivered_at !== undefined ? fmtTime(sg.delivered_at) : 'kept for a task to come'));
      }));
      status.textContent = list.signals.length ? '' : 'No signal sent to this workflow.';
      status.className = list.signals.length ? '' : 'muted';
      first.disabled = cursors.length === 1;
      next.disabled = list.next === undefined || list.next === null;
      next.onclick = () => {
        cursors.push(list.next);
        load();
      };
      box.dataset.loaded = 'true';
    } catch (err) {
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  first.addEventListener('click', () => {
    cursors = [null];
    load();
  });
  const reloadSoon = batched(load, 300);
  return {
    reload: load,
    onEvent(ev) {
      if (ev.event === 'signal_received') reloadSoon();
    },
  };
}
