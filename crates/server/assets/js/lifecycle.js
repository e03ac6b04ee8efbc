// The lifecycle page (#/lifecycle): the state machine drawn from the engine's own rules
// table, and the table itself.

import { h, s } from './dom.js';
import { cap } from './format.js';
import { STATES } from './counts.js';
import { badge, legend } from './widgets.js';
import { api, errorText } from './api.js';
import { GraphView, edgePath, layoutGraph } from './graph-view.js';

export function lifecyclePage(main, page) {
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
