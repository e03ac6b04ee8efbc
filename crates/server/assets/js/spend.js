// What a workflow's agents reported spending, against its budgets (workflow page): one row a
// unit, with a bar for the share of the budget spent and the policy that applies once reached.

import { h } from './dom.js';

/** An amount as agents report it: up to six decimals. */
const amount = (n) => Number(n || 0).toLocaleString('en-US', { maximumFractionDigits: 6 });

/** The share of a budget spent, as a bar (red once reached). */
function bar(unit, share, reached) {
  const pct = Math.round(share * 100);
  const seg = h('span', { class: reached ? 's-failed' : 's-completed' });
  seg.style.width = `${share * 100}%`;
  return h('div', {
    class: 'progress', role: 'progressbar', 'aria-label': `${unit}: ${pct}% of the budget spent`,
    'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, title: `${pct}% of the budget`,
  }, seg);
}

/** A panel that shows a workflow's spend; `show(wf)` redraws it from the workflow as read. */
export function spendPanel() {
  const body = h('div', { testid: 'workflow-spend' });
  const el = h('section', { class: 'panel', 'aria-labelledby': 'spend-h' },
    h('h2', { id: 'spend-h' }, 'Spend'), body);
  function show(wf) {
    const usage = wf.usage || {};
    const budgets = wf.budgets || {};
    const units = [...new Set([...Object.keys(usage), ...Object.keys(budgets)])].sort();
    if (units.length === 0) {
      body.replaceChildren(h('p', { class: 'muted small' },
        'No usage reported and no budgets. Agents report usage with their heartbeats and results; budgets are set at submission or with PUT /v1/workflows/{id}/budgets (baton budget).'));
      return;
    }
    const rows = units.map((unit) => {
      const spent = usage[unit] || 0;
      const b = budgets[unit];
      const share = b ? Math.min(1, spent / b.limit) : 0;
      const reached = b && spent >= b.limit;
      return h('tr', { testid: 'spend-row', 'data-unit': unit, 'data-reached': String(Boolean(reached)) },
        h('td', { class: 'mono' }, unit),
        h('td', { class: 'num', testid: 'spend-spent' }, amount(spent)),
        h('td', { class: 'num', testid: 'spend-limit' }, b ? amount(b.limit) : '—'),
        h('td', { class: 'progress-cell' }, b ? bar(unit, share, reached) : ''),
        h('td', null, b ? `${b.policy}${reached ? ' (reached)' : ''}` : 'no budget'));
    });
    body.replaceChildren(h('table', null,
      h('thead', null, h('tr', null, ...['Unit', 'Spent', 'Budget', '', 'Once reached'].map((c) => h('th', null, c)))),
      h('tbody', null, ...rows)));
  }
  return { el, show };
}
