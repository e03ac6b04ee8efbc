// Baton's dashboard: a one-page app over the /v1 JSON API and the /v1/events stream.
//
// Plain modern JavaScript in ES modules, no framework and no build step: the server embeds
// these files as they are, and the browser follows their static imports. This one is the
// entry point (index.html loads it with <script type="module">): it routes the #/… address to
// a page and owns what the page holds (its stream, its timers) until it is left.
//
// The modules: one per page, overview.js, workflow.js, task.js, waiting.js, schedules.js,
// agents.js, audit.js, lifecycle.js, limits.js; under
// them api.js (requests, the bearer token), events.js (the live stream), errors.js (the error
// banner), controls.js (the dialog of an operator's control: a reason, a confirmation),
// widgets.js (pieces several pages draw), graph-view.js (dagre layouts in the worker,
// the pan-and-zoom SVG), counts.js (states and counts), dom.js and format.js. Imports go from
// pages down to helpers, never back up, so there is no cycle.
//
// Rules these modules keep:
// - Every piece of data reaches the page through textContent or setAttribute, never innerHTML,
//   so nothing the API returns is ever parsed as markup.
// - Lists are paginated on the server (tasks, workflows, waiting tasks); the only whole-collection fetch is a
//   single workflow's graph, and only up to GRAPH_NODES_MAX tasks (workflow.js). Agents and
//   schedules are read whole: the API lists them in one answer.
// - Live state comes from the event stream: counts move by each transition's from/to; nothing
//   polls a list of tasks. A `lagged` event or a reconnect re-fetches what the page shows.
//   Schedules and the audit log make no events: their pages re-read them every few seconds;
//   so does the Limits page, whose buckets refill with time (and it re-reads as tasks move).

// First, so that it listens for errors before any other module runs.
import './errors.js';
import { $, h } from './dom.js';
import { askToken } from './api.js';
import { EventStream, setStreamStatus } from './events.js';
import { overviewPage } from './overview.js';
import { workflowPage } from './workflow.js';
import { taskPage } from './task.js';
import { agentsPage } from './agents.js';
import { lifecyclePage } from './lifecycle.js';
import { refreshWaitingCount, waitingPage } from './waiting.js';
import { schedulePage, schedulesPage } from './schedules.js';
import { auditPage } from './audit.js';
import { limitsPage } from './limits.js';

/** What a page owns: its stream, its timers. All are stopped when the page is left. */
class Page {
  constructor() {
    this.live = true;
    this.cleanups = [];
  }

  stream(workflow, handlers) {
    const st = new EventStream(workflow, handlers);
    this.cleanups.push(() => st.stop());
    return st;
  }

  every(ms, fn) {
    const t = setInterval(fn, ms);
    this.cleanups.push(() => clearInterval(t));
  }

  onLeave(fn) {
    this.cleanups.push(fn);
  }

  leave() {
    this.live = false;
    for (const fn of this.cleanups) fn();
  }
}

let currentPage = null;

function route() {
  if (currentPage) currentPage.leave();
  const page = new Page();
  currentPage = page;
  setStreamStatus('idle', 'no live data on this page');
  const main = $('#main');
  main.replaceChildren();
  const [path, query] = (location.hash.replace(/^#/, '') || '/').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  let nav = null;
  if (parts.length === 0) {
    nav = 'overview';
    overviewPage(main, page);
  } else if (parts[0] === 'workflows' && parts[1]) {
    nav = 'overview';
    workflowPage(main, page, parts[1]);
  } else if (parts[0] === 'tasks' && parts[1]) {
    taskPage(main, page, parts[1]);
  } else if (parts[0] === 'waiting') {
    nav = 'waiting';
    waitingPage(main, page);
  } else if (parts[0] === 'schedules') {
    nav = 'schedules';
    if (parts[1]) schedulePage(main, page, parts.slice(1).join('/'));
    else schedulesPage(main, page);
  } else if (parts[0] === 'limits') {
    nav = 'limits';
    limitsPage(main, page);
  } else if (parts[0] === 'agents') {
    nav = 'agents';
    agentsPage(main, page);
  } else if (parts[0] === 'audit') {
    nav = 'audit';
    auditPage(main, page, new URLSearchParams(query || ''));
  } else if (parts[0] === 'lifecycle') {
    nav = 'lifecycle';
    lifecyclePage(main, page);
  } else {
    main.append(h('section', { class: 'panel', testid: 'not-found' },
      h('h1', null, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '#/' }, 'Back to the overview'))));
  }
  // The waiting page keeps the header's count itself; elsewhere it is read as a page opens.
  if (nav !== 'waiting') refreshWaitingCount();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

// ---- start --------------------------------------------------------------------------------------

$('#token-button').addEventListener('click', () => {
  askToken('Set the bearer token this dashboard sends to Baton.').then(route, () => {});
});
window.addEventListener('hashchange', route);
route();
// Every module loaded and ran. The browser tests wait for this mark: a module that fails to
// load stops the whole graph silently, before errors.js could listen.
document.documentElement.dataset.ready = '1';
