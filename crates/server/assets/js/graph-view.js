// Graph drawing shared by the workflow and lifecycle pages: dagre layouts run in the layout
// Web Worker (assets/layout-worker.js), and GraphView, an SVG canvas with pan and zoom.
// `batonLayout` is the global of the classic script assets/layout.js, which index.html loads
// with dagre for when the worker cannot run.

import { h, s } from './dom.js';

let layoutWorker = null;
let layoutSeq = 0;
const layoutWaiters = new Map();

/** Lays a graph out with dagre in a Web Worker, or on the page if the worker cannot run. */
export async function layoutGraph(graph) {
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
export function abandonLayouts() {
  if (!layoutWorker || layoutWaiters.size === 0) return;
  layoutWorker.terminate();
  layoutWorker = null;
  layoutWaiters.clear();
}

let svgIds = 0;
/** A graph taller than the panel is fitted to its width, but drawn at least this big. */
const FIT_SCALE_MIN = 0.5;

/** SVG path through dagre's edge points, smoothed with quadratic curves. */
export function edgePath(points) {
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
export class GraphView {
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

  /** The scale at which the graph fills the panel's width (at most 1.2). */
  fitScale() {
    const { w } = this.viewport();
    return this.width ? Math.min(1.2, (0.94 * w) / this.width) : 1;
  }

  /**
   * Fits the graph: the whole of it if that keeps it readable, else the panel's width (at
   * most half size), from its top, to pan down from.
   */
  fit() {
    const { w, h: ht } = this.viewport();
    if (!this.width || !this.height) return;
    const kw = this.fitScale();
    const kh = (0.94 * ht) / this.height;
    this.k = Math.min(kw, Math.max(kh, Math.min(kw, FIT_SCALE_MIN)));
    this.x = (w - this.width * this.k) / 2;
    this.y = this.height * this.k > ht ? 8 : (ht - this.height * this.k) / 2;
    this.apply();
  }

  /** Puts the point (x, y) of the drawing at the middle of the panel, at scale k. */
  centreOn(x, y, k) {
    const { w, h: ht } = this.viewport();
    this.k = Math.min(4, Math.max(0.01, k));
    this.x = w / 2 - x * this.k;
    this.y = ht / 2 - y * this.k;
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
