// Groups in a workflow's graph: sub-tasks under the task that added them (decomposition) and
// fan-out items (`KEY[0]`, `KEY[1]`, …) under their `for_each` task, each group collapsible
// into one node. Pure: no DOM. The graph panel and the timeline share one Groups, so both show
// the same grouping.
//
// Same input, same picture: tasks are ordered by key (numbers in keys compared as numbers, so
// `write[2]` comes before `write[10]`), then id, and every list handed to the layout follows
// that order.

import { emptyCounts } from './counts.js';

/** Groups with more members than this start collapsed. */
export const GROUP_EXPANDED_MAX = 20;
/** Deepest nesting of groups followed (a guard: the server never sends a cycle). */
const GROUP_DEPTH_MAX = 64;

const collator = new Intl.Collator('en', { numeric: true });

/** Natural order of tasks by key, then id. */
export function byKey(a, b) {
  return collator.compare(a.key, b.key) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export class Groups {
  /** `g`: the workflow's graph as GET /v1/workflows/{id}/graph answers it. */
  constructor(g) {
    this.edges = g.edges;
    this.order = [...g.nodes].sort(byKey);
    this.nodes = new Map(this.order.map((n) => [n.id, n]));
    this.rank = new Map(this.order.map((n, i) => [n.id, i]));
    this.children = new Map();
    for (const n of this.order) {
      if (!n.parent || !this.nodes.has(n.parent)) continue;
      if (!this.children.has(n.parent)) this.children.set(n.parent, []);
      this.children.get(n.parent).push(n);
    }
    const depends = new Set(g.edges.map((e) => `${e.dependency} ${e.dependent}`));
    this.collapsed = new Set();
    this.items = new Set(); // parents whose members are fan-out items (they feed their parent)
    for (const [p, kids] of this.children) {
      if (kids.length > GROUP_EXPANDED_MAX) this.collapsed.add(p);
      if (kids.every((k) => depends.has(`${k.id} ${p}`))) this.items.add(p);
    }
  }

  /** The task's parents, nearest first. */
  ancestors(id) {
    const out = [];
    let p = this.nodes.get(id) && this.nodes.get(id).parent;
    while (p && this.nodes.has(p) && out.length < GROUP_DEPTH_MAX) {
      out.push(p);
      p = this.nodes.get(p).parent;
    }
    return out;
  }

  /** The collapsed group the task is hidden in (its outermost collapsed parent), or null. */
  hiddenIn(id) {
    let group = null;
    for (const p of this.ancestors(id)) if (this.collapsed.has(p)) group = p;
    return group;
  }

  /** The vertex a task is drawn as: itself, or `g:PARENT` for the collapsed group holding it. */
  vertexOf(id) {
    const g = this.hiddenIn(id);
    return g ? `g:${g}` : id;
  }

  /** Every task under `parent`, at any depth. */
  members(parent) {
    const out = [];
    const stack = [...(this.children.get(parent) || [])].reverse();
    while (stack.length && out.length <= this.nodes.size) {
      const n = stack.pop();
      out.push(n);
      for (const k of [...(this.children.get(n.id) || [])].reverse()) stack.push(k);
    }
    return out;
  }

  /** What a group holds, in words: "248 sub-tasks" or "12 items". */
  label(parent) {
    const n = this.members(parent).length;
    const what = this.items.has(parent) ? (n === 1 ? 'item' : 'items') : (n === 1 ? 'sub-task' : 'sub-tasks');
    return `${n.toLocaleString('en-US')} ${what}`;
  }

  /** Counts per state of a group's members. */
  counts(parent) {
    const c = emptyCounts();
    for (const m of this.members(parent)) {
      c[m.state]++;
      c.total++;
    }
    return c;
  }

  toggle(parent) {
    if (this.collapsed.has(parent)) this.collapsed.delete(parent);
    else if (this.children.has(parent)) this.collapsed.add(parent);
  }

  /** Opens every group hiding the task; true if one was collapsed. */
  reveal(id) {
    let changed = false;
    for (const p of this.ancestors(id)) changed = this.collapsed.delete(p) || changed;
    return changed;
  }

  /**
   * What to draw: vertices (tasks shown, then collapsed groups, in key order) and edges
   * between them, each once: `dep` (dependency), `parent` (decomposition: parent to
   * sub-task) and `comp` (a task to its compensation task).
   */
  visible() {
    const vertices = [];
    const groupsSeen = new Set();
    for (const n of this.order) {
      const g = this.hiddenIn(n.id);
      if (!g) vertices.push({ id: n.id, task: n });
      else if (!groupsSeen.has(g)) {
        groupsSeen.add(g);
        vertices.push({ id: `g:${g}`, group: g });
      }
    }
    const index = new Map(vertices.map((v, i) => [v.id, i]));
    const edges = new Map();
    const add = (from, to, type) => {
      const v = this.vertexOf(from);
      const w = this.vertexOf(to);
      if (v === w) return;
      const k = `${v} ${w}`;
      // A dependency wins over the other kinds between the same two vertices.
      if (!edges.has(k) || type === 'dep') edges.set(k, { v, w, type });
    };
    for (const e of this.edges) add(e.dependency, e.dependent, 'dep');
    for (const [p, kids] of this.children) {
      if (this.items.has(p)) continue; // items already feed their fan-out task
      for (const k of kids) add(p, k.id, 'parent');
    }
    for (const n of this.order) if (n.compensates && this.nodes.has(n.compensates)) add(n.compensates, n.id, 'comp');
    const list = [...edges.values()].sort((a, b) => index.get(a.v) - index.get(b.v) || index.get(a.w) - index.get(b.w));
    return { vertices, edges: list };
  }

  /**
   * The rows of a timeline: tasks depth first in key order, each group's members after their
   * parent (one row for a collapsed group), siblings in `order` (key order by default). Each
   * row: {task, depth} or {group, depth}.
   */
  rows(order = byKey) {
    const out = [];
    const visit = (n, depth) => {
      out.push({ task: n, depth });
      if (!this.children.has(n.id)) return;
      if (this.collapsed.has(n.id)) out.push({ group: n.id, depth: depth + 1 });
      else for (const k of [...this.children.get(n.id)].sort(order)) visit(k, depth + 1);
    };
    const roots = this.order.filter((n) => !n.parent || !this.nodes.has(n.parent)).sort(order);
    for (const n of roots) visit(n, 0);
    return out;
  }
}

/** Order of a group's state summary: what is done first, what waits last. */
export const SUMMARY_ORDER = ['completed', 'failed', 'cancelled', 'executing', 'assigned', 'pending', 'blocked'];
