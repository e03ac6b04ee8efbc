// The Limits page (#/limits): every named rate limit (a token bucket of UNITS per PERIOD) with
// the units it has now, when it is full again and how many tasks are parked waiting for it,
// kept live; an admin sets one (key, units, period) or deletes one after a confirmation, and a
// refusal shows the server's detail beside the form.

import { batched, h } from './dom.js';
import { fmtNum, fmtTime } from './format.js';
import { confirmDialog } from './widgets.js';
import { api, ApiError, errorText } from './api.js';

/** How often the open Limits page re-reads the limits: buckets refill with time, not events. */
const LIMITS_REFRESH_MS = 2000;
/** A period's units, as `baton limits set --per` takes them, largest first. */
const PERIOD_UNITS = [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000], ['ms', 1]];

const limitPath = (key) => `/v1/limits/${encodeURIComponent(key)}`;

/** A period in milliseconds in the largest unit that divides it: 1m, 1h, 500ms, 90s. */
function periodText(ms) {
  const [unit, scale] = PERIOD_UNITS.find(([, n]) => ms % n === 0);
  return `${ms / scale}${unit}`;
}

/** A period as typed (`500ms`, `30s`, `1m`, `1h`, `1d`, or bare milliseconds); null if not one. */
function parsePeriod(text) {
  const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) return null;
  const scale = PERIOD_UNITS.find(([unit]) => unit === (m[2] || 'ms'))[1];
  return Number(m[1]) * scale;
}

/** The units now in a bucket, as a bar and `N of M`. */
function availableCell(l) {
  const seg = h('span', { class: l.available ? 's-completed' : 's-pending' });
  seg.style.width = `${(100 * l.available) / l.units}%`;
  return h('td', { testid: 'limit-available', 'data-available': l.available },
    h('div', { class: 'avail' },
      h('div', { class: 'progress', role: 'meter', 'aria-label': `${l.key}: ${l.available} of ${l.units} units available`,
        'aria-valuemin': 0, 'aria-valuemax': l.units, 'aria-valuenow': l.available }, seg),
      h('span', { class: 'progress-text' }, `${fmtNum(l.available)} of ${fmtNum(l.units)}`)));
}

/** Every named rate limit with its bucket now, kept live; set and delete (admin tokens). */
export function limitsPage(main, page) {
  const tbody = h('tbody');
  const table = h('table', { testid: 'limits', hidden: true },
    h('thead', null, h('tr', null, ...['Limit', 'Rate', 'Available now', 'Full again', 'Tasks parked', 'Updated', 'Actions']
      .map((c) => h('th', { class: c === 'Tasks parked' ? 'num' : null }, c)))),
    tbody);
  const status = h('p', { class: 'loading' }, 'Loading…');
  const empty = h('p', { class: 'muted', testid: 'limits-empty', hidden: true }, 'There are no rate limits. Set one below, with ',
    h('code', null, 'baton limits set KEY --units N --per 1m'), ' or ', h('code', null, 'PUT /v1/limits/KEY {"units": N, "per_ms": MS}'), '.');
  const outcome = h('p', { class: 'small', role: 'status', testid: 'limit-outcome' });
  const panel = h('section', { class: 'panel limits', testid: 'limits-panel', 'aria-labelledby': 'limits-h' },
    h('h2', { id: 'limits-h' }, 'Rate limits'),
    h('p', { class: 'small muted' }, 'Token buckets shared by every node: a task whose ', h('code', null, 'rate'),
      ' names a limit is handed out only while it has the units the task draws; others pass it by meanwhile. ',
      `Buckets refill continuously. Times are this browser\u2019s; re-read every ${LIMITS_REFRESH_MS / 1000} s and as tasks move.`),
    outcome, table, status, empty);

  const field = (id, label, attrs) => {
    const input = h('input', { type: 'text', id, testid: id, autocomplete: 'off', 'aria-describedby': 'limit-error', ...attrs });
    return { input, nodes: [h('label', { for: id }, label), input] };
  };
  const key = field('limit-key', 'Key', { placeholder: 'openai', maxlength: 256 });
  const units = field('limit-units', 'Units', { placeholder: '3000', inputmode: 'numeric', size: 10 });
  const period = field('limit-period', 'per', { placeholder: '1m', size: 8, title: 'milliseconds, or a number with ms, s, m, h or d' });
  const submit = h('button', { class: 'primary', testid: 'limit-set' }, 'Set limit');
  const error = h('p', { id: 'limit-error', class: 'error small', role: 'alert', testid: 'limit-error' });
  const inputs = { key: key.input, units: units.input, per_ms: period.input };
  // The server judges the values (its refusal names the field at fault); only the period is read
  // here, as it is typed (`1m`) and sent in milliseconds.
  const form = h('form', { class: 'filters limit-form', testid: 'limit-form', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); setLimit(); } },
    key.nodes, units.nodes, period.nodes, submit);
  form.addEventListener('input', (ev) => {
    ev.target.removeAttribute('aria-invalid');
    error.textContent = '';
  });
  const formPanel = h('section', { class: 'panel', testid: 'limit-form-panel', 'aria-labelledby': 'limit-set-h' },
    h('h2', { id: 'limit-set-h' }, 'Set a limit'),
    h('p', { class: 'small muted' }, 'Needs an admin token. Setting an existing key changes it: what it handed out stays drawn, ',
      'so a bigger limit has its extra units at once. The period is milliseconds, or a number with ms, s, m, h or d (at most 1d).'),
    form, error);
  main.append(h('h1', null, 'Limits'), panel, formPanel);
  document.title = 'Limits · Baton';

  let drawn = null; // what the rows drawn show, to redraw only when it changed
  let known = new Set(); // the keys as last read: setting one of them changes it
  let gen = 0; // answers can overtake each other: only the latest request's is drawn

  async function load() {
    const mine = ++gen;
    try {
      const list = await api('/v1/limits');
      if (!page.live || mine !== gen) return;
      // The same rows as drawn are left alone: a re-read does not replace the button about to be clicked.
      const now = JSON.stringify(list.limits);
      if (now !== drawn) tbody.replaceChildren(...list.limits.map(renderRow));
      drawn = now;
      known = new Set(list.limits.map((l) => l.key));
      table.hidden = !list.limits.length;
      empty.hidden = Boolean(list.limits.length);
      status.textContent = '';
      status.className = '';
      panel.dataset.loaded = 'true';
    } catch (err) {
      if (mine !== gen || !page.live) return;
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  function tell(text, ok) {
    outcome.className = ok ? 'small notice' : 'small error';
    outcome.textContent = text;
  }

  function refuse(text, input) {
    error.textContent = text;
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  async function setLimit() {
    const k = key.input.value.trim();
    if (!k) return refuse('Key: the limit\u2019s name is needed (tasks name it in rate[].key).', key.input);
    const per = parsePeriod(period.input.value);
    if (per === null) return refuse('Period: milliseconds, or a number with ms, s, m, h or d (1m, 30s, 500ms).', period.input);
    const u = units.input.value.trim();
    // Sent as typed when it is no number: the server's refusal says what it wants.
    const body = { units: u === '' ? undefined : Number.isFinite(Number(u)) ? Number(u) : u, per_ms: per };
    const verb = known.has(k) ? 'Changed' : 'Created';
    submit.disabled = true;
    try {
      const l = await api(limitPath(k), { method: 'PUT', body });
      if (!page.live) return;
      form.reset();
      error.textContent = '';
      tell(`${verb} limit "${l.key}": ${fmtNum(l.units)} / ${periodText(l.per_ms)}.`, true);
      load();
    } catch (err) {
      if (!page.live) return;
      const at = err instanceof ApiError && err.problem ? inputs[err.problem.field] : null;
      refuse(`Not set: ${errorText(err)}`, at);
    } finally {
      submit.disabled = false;
    }
  }

  function edit(l) {
    key.input.value = l.key;
    units.input.value = String(l.units);
    period.input.value = periodText(l.per_ms);
    error.textContent = '';
    form.scrollIntoView({ block: 'nearest' });
    units.input.focus();
  }

  async function remove(l, button) {
    const ok = await confirmDialog({
      title: 'Delete this limit?',
      message: `"${l.key}" is deleted: the tasks that draw from it are no longer held by it${l.parked ? ` (${l.parked} parked now)` : ''}, and new tasks naming it are refused until it is set again.`,
      confirmLabel: 'Delete limit',
    });
    if (!ok || !page.live) return;
    button.disabled = true;
    try {
      await api(limitPath(l.key), { method: 'DELETE' });
      if (page.live) tell(`Deleted limit "${l.key}".`, true);
    } catch (err) {
      if (!page.live) return;
      button.disabled = false;
      tell(`Not deleted: ${errorText(err)}`, false);
    }
    if (page.live) load();
  }

  function renderRow(l) {
    const full = l.available >= l.units;
    const del = h('button', { type: 'button', class: 'danger', testid: 'limit-delete' }, 'Delete…');
    del.addEventListener('click', () => remove(l, del));
    return h('tr', { testid: 'limit-row', 'data-key': l.key, 'data-units': l.units, 'data-per-ms': l.per_ms,
      'data-available': l.available, 'data-parked': l.parked },
    h('td', null, h('code', { testid: 'limit-name' }, l.key)),
    h('td', { testid: 'limit-rate', title: `${l.units} units per ${l.per_ms} ms, refilled continuously` },
      `${fmtNum(l.units)} / ${periodText(l.per_ms)}`),
    availableCell(l),
    h('td', { class: full ? 'small muted' : 'small', testid: 'limit-full', 'data-at': full ? null : l.full_at },
      full ? 'full now' : fmtTime(l.full_at)),
    h('td', { class: 'num', testid: 'limit-parked' }, fmtNum(l.parked)),
    h('td', { class: 'small', testid: 'limit-updated' }, fmtTime(l.updated_at)),
    h('td', null, h('div', { class: 'row-actions' },
      h('button', { type: 'button', testid: 'limit-edit', onclick: () => edit(l) }, 'Edit'), del)));
  }

  const reloadSoon = batched(load, 500);
  page.every(LIMITS_REFRESH_MS, load);
  // A claim draws units and a task parks or leaves: those move with transitions.
  page.stream(null, { open: load, resync: load, event: reloadSoon });
}
