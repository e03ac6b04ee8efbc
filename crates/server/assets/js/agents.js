// The agents page (#/agents): who is registered, online, and what each holds.

import { batched, h } from './dom.js';
import { fmtTime } from './format.js';
import { taskLink } from './widgets.js';
import { api, errorText } from './api.js';

/** Agents go offline without any transition, so the agents page re-reads its page of them. */
const AGENTS_REFRESH_MS = 15000;
/** Agents shown per page (`GET /v1/agents?limit=`), in registration order. */
const AGENTS_PAGE_SIZE = 100;

export function agentsPage(main, page) {
  const tbody = h('tbody');
  const status = h('p', { class: 'loading' }, 'Loading agents…');
  const first = h('button', { type: 'button', testid: 'agents-first', disabled: true }, '⇤ First');
  const next = h('button', { type: 'button', testid: 'agents-next', disabled: true }, 'Next →');
  const pageNo = h('span', { class: 'small muted', testid: 'agents-page' });
  main.append(h('h1', null, 'Agents'),
    h('section', { class: 'panel' },
      h('p', { class: 'small muted' },
        'In the order they registered. An agent silent for the agent retention (7 days unless baton serve --agent-retention says otherwise) and holding no task is deleted; it registers again if it comes back.'),
      h('table', { testid: 'agents' },
        h('thead', null, h('tr', null, h('th', null, 'Agent'), h('th', null, 'Status'), h('th', null, 'Capabilities'),
          h('th', { class: 'num' }, 'Concurrency'), h('th', null, 'Tasks in hand'), h('th', null, 'Last seen'),
          h('th', null, 'Registered by'))),
        tbody),
      status,
      h('div', { class: 'pager' }, first, next, pageNo)));

  let cursors = [null]; // `after` of each page visited; the last is the current page
  let gen = 0; // answers can overtake each other: only the latest request's is drawn

  async function load() {
    const mine = ++gen;
    const q = new URLSearchParams({ limit: String(AGENTS_PAGE_SIZE) });
    const after = cursors[cursors.length - 1];
    if (after !== null) q.set('after', after);
    try {
      const list = await api(`/v1/agents?${q}`);
      if (!page.live || mine !== gen) return;
      const agents = list.agents;
      tbody.replaceChildren(...agents.map((a) => h('tr', { testid: 'agent-row', 'data-agent': a.id, 'data-online': String(a.online) },
        h('td', null, h('strong', null, a.name), h('div', { class: 'small muted mono', title: a.id }, a.id)),
        h('td', { testid: 'agent-status' }, h('span', { class: a.online ? 'online' : 'offline' }, a.online ? '● online' : '○ offline')),
        h('td', null, a.capabilities.length
          ? h('span', { class: 'chips' }, a.capabilities.map((c) => h('span', { class: 'chip' }, c))) : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'num' }, String(a.concurrency)),
        h('td', { testid: 'agent-leased' }, `${a.leased.length} of ${a.concurrency}`,
          a.leased.length ? h('ul', { class: 'links' }, a.leased.map((t) => h('li', null, taskLink(t)))) : null),
        h('td', { class: 'small' }, fmtTime(a.last_seen)),
        h('td', { class: 'small mono' }, a.registered_by || '—'))));
      status.textContent = agents.length ? ''
        : cursors.length > 1 ? 'No more agents.' : 'No agents registered yet.';
      status.className = agents.length ? '' : 'muted';
      first.disabled = cursors.length === 1;
      next.disabled = list.next === null || list.next === undefined;
      next.onclick = () => {
        cursors.push(list.next);
        load();
      };
      pageNo.textContent = `page ${cursors.length}`;
      tbody.closest('section').dataset.loaded = 'true';
    } catch (err) {
      if (!page.live || mine !== gen) return;
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }
  first.onclick = () => {
    cursors = [null];
    load();
  };

  const reloadSoon = batched(load, 1000);
  page.every(AGENTS_REFRESH_MS, load);
  page.stream(null, {
    open: load,
    resync: load,
    // Leases come and go with these moves; anything else leaves the agents as they were.
    event: (ev) => {
      if (ev.agent || ev.from === 'assigned' || ev.from === 'executing') reloadSoon();
    },
  });
}
