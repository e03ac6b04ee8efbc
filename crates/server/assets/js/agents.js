// The agents page (#/agents): who is registered, online, and what each holds.

import { batched, h } from './dom.js';
import { fmtTime } from './format.js';
import { taskLink } from './widgets.js';
import { api, errorText } from './api.js';

/** Agents go offline without any transition, so the agents page re-reads its (short) list. */
const AGENTS_REFRESH_MS = 15000;

export function agentsPage(main, page) {
  const tbody = h('tbody');
  const status = h('p', { class: 'loading' }, 'Loading agents…');
  main.append(h('h1', null, 'Agents'),
    h('section', { class: 'panel' },
      h('table', { testid: 'agents' },
        h('thead', null, h('tr', null, h('th', null, 'Agent'), h('th', null, 'Status'), h('th', null, 'Capabilities'),
          h('th', { class: 'num' }, 'Concurrency'), h('th', null, 'Tasks in hand'), h('th', null, 'Last seen'))),
        tbody),
      status));

  async function load() {
    try {
      const agents = await api('/v1/agents');
      if (!page.live) return;
      tbody.replaceChildren(...agents.map((a) => h('tr', { testid: 'agent-row', 'data-agent': a.id, 'data-online': String(a.online) },
        h('td', null, h('strong', null, a.name), h('div', { class: 'small muted mono', title: a.id }, a.id)),
        h('td', { testid: 'agent-status' }, h('span', { class: a.online ? 'online' : 'offline' }, a.online ? '● online' : '○ offline')),
        h('td', null, a.capabilities.length
          ? h('span', { class: 'chips' }, a.capabilities.map((c) => h('span', { class: 'chip' }, c))) : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'num' }, String(a.concurrency)),
        h('td', { testid: 'agent-leased' }, `${a.leased.length} of ${a.concurrency}`,
          a.leased.length ? h('ul', { class: 'links' }, a.leased.map((t) => h('li', null, taskLink(t)))) : null),
        h('td', { class: 'small' }, fmtTime(a.last_seen)))));
      status.textContent = agents.length ? '' : 'No agents registered yet.';
      status.className = agents.length ? '' : 'muted';
      tbody.closest('section').dataset.loaded = 'true';
    } catch (err) {
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

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
