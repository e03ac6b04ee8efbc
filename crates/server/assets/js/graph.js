// The workflow page's dependency graph: tasks coloured by state, sub-tasks and fan-out items
// grouped under their parent (a collapsed group is one node with a count and a state summary;
// click it to expand, click the − on its parent to collapse), decomposition and compensation
// edges in their own styles, search-to-task, live colours, and paused tasks outlined. Layout
// is dagre's, left to right, in the layout worker (graph-view.js); what it is given comes from
// groups.js in a stable order, so the same workflow gives the same picture.

import { h, s } from './dom.js';
import { fmtNum } from './format.js';
import { GraphView, edgePath, layoutGraph } from './graph-view.js';
import { Groups, SUMMARY_ORDER } from './groups.js';
import { pausedAfter } from './counts.js';

/** Above this many vertices, labels are drawn only when zoomed in, and edges as one path. */
const LABELS_VERTICES_MAX = 300;
/** Zoom from which a big graph shows its labels. */
const LABEL_ZOOM_MIN = 0.7;
/** Most vertices laid out (groups count as one); beyond, the table below is the view. */
const VERTICES_MAX = 5000;
const GROUP_W = 190;
const GROUP_H = 40;

/**
 * The graph panel over `wrap` (the drawing) and `note` (a line under it). `show(g, current)`
 * lays out a graph answer; `onEvent(ev)` applies a transition and returns false for a task it
 * does not know; `groups` is the grouping the timeline shares.
 */
export function graphPanel(wrap, note, searchBox) {
  const panel = { groups: null, onEvent, show, recolour };
  let shown = null; // {view, tasks: Map id -> el, groupEls: Map parent -> el, big}
  let current = () => true;
  let found = null;

  const input = h('input', { type: 'text', id: 'graph-search', testid: 'graph-search', placeholder: 'task key',
    autocomplete: 'off', 'aria-describedby': 'graph-search-result' });
  const result = h('span', { id: 'graph-search-result', class: 'small muted', testid: 'graph-search-result', role: 'status' });
  searchBox.append(h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); search(input.value); } },
    h('label', { for: 'graph-search' }, 'Find task'), input,
    h('button', { type: 'submit', testid: 'graph-search-go' }, 'Find'), result));

  async function show(g, isCurrent) {
    current = isCurrent;
    panel.groups = new Groups(g);
    await render();
  }

  async function render() {
    const groups = panel.groups;
    const { vertices, edges } = groups.visible();
    if (vertices.length > VERTICES_MAX) {
      shown = null;
      wrap.replaceChildren(h('p', { class: 'loading', testid: 'graph-too-big' },
        `${fmtNum(vertices.length)} nodes to draw even with groups collapsed; graphs are drawn up to ${fmtNum(VERTICES_MAX)}. Use the table below.`));
      return;
    }
    const started = performance.now();
    const big = vertices.length > LABELS_VERTICES_MAX;
    const nodeH = big ? 22 : 30;
    const size = (v) => (v.group ? { w: GROUP_W, h: GROUP_H }
      : { w: big ? 120 : Math.min(220, Math.max(64, v.task.key.length * 7.2 + 24)) + (groups.children.has(v.id) ? 18 : 0), h: nodeH });
    if (!shown) wrap.replaceChildren(h('p', { class: 'loading', testid: 'graph-loading' }, `Laying out ${fmtNum(vertices.length)} nodes…`));
    wrap.dataset.ready = 'false';
    const layout = await layoutGraph({
      options: big
        ? { rankdir: 'LR', nodesep: 6, ranksep: 70, edgesep: 4, marginx: 20, marginy: 20, ranker: 'longest-path' }
        : { rankdir: 'LR', nodesep: 14, ranksep: 60, edgesep: 8, marginx: 20, marginy: 20 },
      nodes: vertices.map((v) => ({ id: v.id, width: size(v).w, height: size(v).h })),
      edges: edges.map((e) => ({ v: e.v, w: e.w })),
    });
    if (!current() || groups !== panel.groups) return;
    wrap.replaceChildren();
    let labelsMade = !big;
    const tasks = new Map();
    const groupEls = new Map();
    const view = new GraphView(wrap, {
      label: `Dependency graph: ${vertices.length} nodes; the table below lists every task`,
      onZoom: (k) => {
        if (!big) return;
        const on = k >= LABEL_ZOOM_MIN;
        if (on && !labelsMade) {
          labelsMade = true;
          for (const [id, el] of tasks) el.append(label(groups.nodes.get(id).key, 120, nodeH, 15));
        }
        view.svg.classList.toggle('labels-off', !on);
      },
    });
    view.setSize(layout.width, layout.height);
    wrap.style.height = `${Math.round(Math.min(640, Math.max(220, layout.height * Math.min(1, view.fitScale()) + 40)))}px`;
    const paths = { dep: [], parent: [], comp: [] };
    layout.edges.forEach((p, i) => paths[edges[i].type].push({ d: edgePath(p.points), e: edges[i] }));
    for (const type of ['dep', 'parent', 'comp']) {
      const cls = `edges e-${type}${big ? ' dense' : ''}`;
      if (big && type === 'dep') view.content.append(s('g', { class: cls }, s('path', { d: paths.dep.map((p) => p.d).join('') })));
      else {
        view.content.append(s('g', { class: cls }, paths[type].map((p) => s('path', {
          d: p.d, 'marker-end': big ? null : `url(#${view.arrowId})`, testid: 'graph-edge', 'data-type': type,
          'data-from': p.e.v, 'data-to': p.e.w,
        }))));
      }
    }
    const layer = s('g', { class: 'nodes' });
    vertices.forEach((v, i) => {
      const { w, h: ht } = size(v);
      const p = layout.nodes[i];
      const at = `translate(${(p.x - w / 2).toFixed(1)},${(p.y - ht / 2).toFixed(1)})`;
      const el = v.group ? groupNode(groups, v.group, at) : taskNode(groups, v.task, at, w, ht, big);
      el.dataset.x = p.x.toFixed(1);
      el.dataset.y = p.y.toFixed(1);
      (v.group ? groupEls : tasks).set(v.group || v.id, el);
      layer.append(el);
    });
    view.content.append(layer);
    shown = { view, tasks, groupEls, big };
    bind(view);
    view.fit();
    if (big && view.k < LABEL_ZOOM_MIN) view.status.textContent = 'Zoom in to read task names.';
    const n = groups.nodes.size;
    note.textContent = `${fmtNum(n)} tasks, ${fmtNum(groups.edges.length)} dependencies, ${fmtNum(groups.children.size)} groups ` +
      `(${fmtNum(groups.collapsed.size)} collapsed). Drag to pan; scroll, double-click or use the buttons to zoom; ` +
      'click a task to open it, a group to expand it, − to collapse one. Dashed: parent to sub-task; dotted red: compensation.';
    wrap.dataset.nodes = String(n);
    wrap.dataset.vertices = String(vertices.length);
    wrap.dataset.groups = String(groupEls.size);
    wrap.dataset.layoutMs = String(Math.round(performance.now() - started));
    wrap.dataset.ready = 'true';
  }

  function bind(view) {
    const act = (target) => {
      const toggle = target.closest && target.closest('[data-toggle]');
      const el = target.closest && target.closest('[data-group], [data-task]');
      if (toggle) {
        panel.groups.toggle(toggle.dataset.toggle);
        render();
      } else if (el && el.dataset.group) {
        panel.groups.toggle(el.dataset.group);
        render();
      } else if (el) location.hash = `#/tasks/${encodeURIComponent(el.dataset.task)}`;
    };
    view.svg.addEventListener('click', (e) => {
      if (!view.wasDrag()) act(e.target);
    });
    view.svg.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') act(e.target);
    });
    view.svg.addEventListener('mouseover', (e) => {
      const el = e.target.closest && e.target.closest('[data-group], [data-task]');
      if (!el) return;
      if (el.dataset.group) {
        view.status.textContent = `${panel.groups.label(el.dataset.group)} of ${panel.groups.nodes.get(el.dataset.group).key} (click to expand)`;
      } else {
        const n = panel.groups.nodes.get(el.dataset.task);
        view.status.textContent = `${n.key} · ${n.state}${n.paused ? ' · paused' : ''} · attempt ${n.attempt} (click to open)`;
      }
    });
  }

  /** Finds a task by key (exact, else the first containing it), shows and highlights it. */
  async function search(query) {
    const q = query.trim().toLowerCase();
    const groups = panel.groups;
    if (!q || !groups) return;
    const n = groups.order.find((t) => t.key.toLowerCase() === q) || groups.order.find((t) => t.key.toLowerCase().includes(q));
    if (!n) {
      result.textContent = `No task's key contains “${query.trim()}”.`;
      result.dataset.found = '';
      return;
    }
    if (groups.reveal(n.id)) await render();
    if (!shown) return;
    if (found) found.classList.remove('found');
    found = shown.tasks.get(n.id);
    if (!found) return;
    found.classList.add('found');
    shown.view.centreOn(+found.dataset.x, +found.dataset.y, Math.max(shown.view.k, 1));
    result.textContent = `${n.key}: ${n.state}.`;
    result.dataset.found = n.id;
  }

  /** Applies a transition; false if the task is not in the graph (added since the layout). */
  function onEvent(ev) {
    const groups = panel.groups;
    const n = groups && groups.nodes.get(ev.task);
    if (!n) return false;
    n.state = ev.to;
    n.attempt = ev.attempt;
    if (ev.event) n.paused = pausedAfter(Boolean(n.paused), ev);
    if (!shown) return true;
    const el = shown.tasks.get(ev.task);
    if (el) paintTask(el, n);
    const g = groups.hiddenIn(ev.task);
    if (g && shown.groupEls.has(g)) dirtyGroups.add(g);
    if (dirtyGroups.size) paintGroupsSoon();
    return true;
  }

  const dirtyGroups = new Set();
  let groupTimer = null;
  function paintGroupsSoon() {
    if (groupTimer) return;
    groupTimer = setTimeout(() => {
      groupTimer = null;
      for (const g of dirtyGroups) {
        const el = shown && shown.groupEls.get(g);
        if (el) el.replaceWith(groupNode(panel.groups, g, el.getAttribute('transform'), el.dataset));
      }
      dirtyGroups.clear();
    }, 200);
  }

  /** Same tasks, new states (a reconnect): colours only. */
  function recolour(g) {
    for (const fresh of g.nodes) {
      const n = panel.groups.nodes.get(fresh.id);
      if (n) n.paused = Boolean(fresh.paused);
      onEvent({ task: fresh.id, to: fresh.state, attempt: fresh.attempt });
    }
  }

  return panel;
}

/** A task node's classes and what it says: its state, and whether it is paused (outlined). */
const nodeClass = (n) => `node s-${n.state}${n.paused ? ' paused' : ''}`;
const nodeLabel = (n) => `${n.key}: ${n.state}${n.paused ? ', paused' : ''}`;

function paintTask(el, n) {
  el.setAttribute('class', nodeClass(n));
  el.dataset.state = n.state;
  el.dataset.paused = String(Boolean(n.paused));
  if (el.hasAttribute('aria-label')) el.setAttribute('aria-label', nodeLabel(n));
}

function taskNode(groups, n, at, w, ht, big) {
  const el = s('g', { class: nodeClass(n), testid: 'graph-node', 'data-task': n.id, 'data-key': n.key,
    'data-state': n.state, 'data-paused': String(Boolean(n.paused)), transform: at }, s('rect', { width: w, height: ht, rx: 5 }));
  const hasGroup = groups.children.has(n.id);
  if (!big) {
    el.setAttribute('tabindex', '0');
    el.setAttribute('role', 'link');
    el.setAttribute('aria-label', nodeLabel(n));
    el.append(label(n.key, hasGroup ? w - 18 : w, ht, 28));
  }
  if (hasGroup && !groups.collapsed.has(n.id)) {
    // Its group is open: a − to close it again.
    el.append(s('g', { class: 'toggle', testid: 'group-collapse', 'data-toggle': n.id, role: 'button', tabindex: big ? null : 0,
      'aria-label': `Collapse the ${groups.label(n.id)} of ${n.key}` },
    s('rect', { x: w - 17, y: 3, width: 14, height: ht - 6, rx: 3 }),
    s('text', { x: w - 10, y: ht / 2 }, '−')));
  }
  return el;
}

/** A collapsed group: its size, what it is, and a bar of its members' states. */
function groupNode(groups, parent, at, keep) {
  const c = groups.counts(parent);
  const what = groups.label(parent);
  const owner = groups.nodes.get(parent).key;
  const el = s('g', { class: 'node group', testid: 'graph-group', 'data-group': parent, 'data-count': c.total,
    'data-key': owner, tabindex: 0, role: 'button', transform: at,
    'aria-label': `${what} of ${owner}, collapsed: ${SUMMARY_ORDER.filter((st) => c[st]).map((st) => `${c[st]} ${st}`).join(', ')}. Enter to expand.` },
  s('rect', { class: 'group-box', width: GROUP_W, height: GROUP_H, rx: 7 }),
  s('text', { class: 'group-label', x: 10, y: 13 }, `⊞ ${what}`),
  s('title', null, `${what} of ${owner}\n${SUMMARY_ORDER.filter((st) => c[st]).map((st) => `${st}: ${c[st]}`).join('\n')}`));
  let x = 10;
  const barW = GROUP_W - 20;
  for (const st of SUMMARY_ORDER) {
    if (!c[st]) continue;
    const w = (barW * c[st]) / c.total;
    el.append(s('rect', { class: `bar s-${st}`, x: x.toFixed(1), y: 24, width: Math.max(0.5, w).toFixed(1), height: 9, 'data-state': st }));
    x += w;
  }
  if (keep) {
    el.dataset.x = keep.x;
    el.dataset.y = keep.y;
  }
  return el;
}

function label(key, w, ht, maxChars) {
  const text = key.length > maxChars ? key.slice(0, maxChars - 1) + '…' : key;
  return s('text', { x: w / 2, y: ht / 2 }, text);
}
