// The workflow page (#/workflows/ID): its status and result, its dependency graph coloured by
// state and kept live, cancel, and the paginated table of its tasks.

import { batched, h, s } from './dom.js';
import { fmtNum, fmtTime, pretty, shortId } from './format.js';
import { STATES, applyTransition, emptyCounts } from './counts.js';
import { badge, confirmDialog, legend, taskLink } from './widgets.js';
import { api, errorText } from './api.js';
import { GraphView, abandonLayouts, edgePath, layoutGraph } from './graph-view.js';

/** Tasks per page of a workflow's task table. */
const TASKS_PAGE_SIZE = 50;
/** Largest workflow whose graph is fetched and laid out; beyond it the table alone is shown. */
const GRAPH_NODES_MAX = 5000;
/** Above this many nodes, labels are drawn only when zoomed in, and edges as one path. */
const GRAPH_LABELS_NODES_MAX = 300;
/** Zoom from which a big graph shows its labels. */
const LABEL_ZOOM_MIN = 0.7;

export function workflowPage(main, page, id) {
  const title = h('h1', null, 'Workflow');
  const idLine = h('div', { class: 'small muted mono' }, id);
  const notice = h('p', { class: 'small', role: 'status', testid: 'action-result' });
  const cancelBtn = h('button', { type: 'button', class: 'danger', testid: 'workflow-cancel' }, 'Cancel workflow…');
  const legendBox = h('div');
  const graphWrap = h('div', { class: 'graph-wrap', testid: 'graph' });
  const graphNote = h('p', { class: 'small muted', testid: 'graph-note' });
  const tableBox = h('div');
  const statusLine = h('p', { testid: 'workflow-status' });
  const resultBox = h('div', { testid: 'workflow-result' });
  main.append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / workflow'),
    title, idLine, statusLine,
    h('div', { class: 'actions' }, cancelBtn, notice),
    h('section', { class: 'panel', 'aria-labelledby': 'result-h' },
      h('h2', { id: 'result-h' }, 'Result'), resultBox),
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

  // Where the workflow stands as a whole, and its result once it has ended.
  function showStatus(wf) {
    const cls = wf.status === 'running' ? 's-executing' : `s-${wf.status}`;
    statusLine.replaceChildren('Status: ',
      h('span', { class: `badge ${cls}`, 'data-status': wf.status }, wf.status));
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
    if (ev.to === 'completed' || ev.to === 'failed' || ev.to === 'cancelled') refreshStatusSoon();
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
