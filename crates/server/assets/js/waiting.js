// The waiting page (#/waiting): every task of every workflow that waits for a signal, a page
// at a time, kept live, with Approve and Reject. Approving sends the signal with a JSON payload
// (edited, checked as JSON before anything is sent), rejecting sends `{"reject": reason}`; each
// goes through a confirmation and is sent once: one Idempotency-Key per dialog, kept when the
// same dialog sends again after a failure, so a repeat is applied once. Also the header's count
// of waiting tasks.

import { $, batched, h } from './dom.js';
import { fmtTime, shortId } from './format.js';
import { confirmDialog, taskLink, workflowLink } from './widgets.js';
import { api, errorText, hasToken } from './api.js';

/** Tasks per page of the waiting list. */
const WAITING_PAGE_SIZE = 50;
/** The header counts up to this many waiting tasks (one page of `GET /v1/waiting`), then `N+`. */
const WAITING_COUNT_MAX = 100;
/** Characters of a task's input shown in its row; the rest behind "show all". */
const INPUT_PREVIEW_CHARS = 120;
/** Where the "sent by" name is remembered in this browser. */
const SENT_BY_KEY = 'baton.signal.by';
const APPROVAL_DEFAULT = '{\n  "approved": true\n}';

/** Shows how many tasks wait for a signal on the header's Waiting link (hidden when none). */
function showCount(n, more) {
  const el = $('#waiting-count');
  if (!el) return;
  el.hidden = n === 0;
  el.textContent = more ? `${n}+` : String(n);
  el.dataset.count = String(n);
}

/** Re-reads the header's count: one bounded request, made when a page opens. A failure leaves
 *  the count as it was (the page itself reports what went wrong). */
export async function refreshWaitingCount() {
  try {
    const list = await api(`/v1/waiting?limit=${WAITING_COUNT_MAX}`);
    showCount(list.tasks.length, Boolean(list.next));
  } catch (_) { /* shown by the page, if it matters there */ }
}

/** A random Idempotency-Key. `crypto.randomUUID` exists only in secure contexts (https,
 *  loopback); a dashboard served over plain http elsewhere still has `getRandomValues`. */
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A JSON value on one line, cut at INPUT_PREVIEW_CHARS. */
function preview(value) {
  const text = JSON.stringify(value);
  return text.length > INPUT_PREVIEW_CHARS ? `${text.slice(0, INPUT_PREVIEW_CHARS)}…` : text;
}

function inputCell(input) {
  const text = JSON.stringify(input === undefined ? null : input);
  if (text.length <= INPUT_PREVIEW_CHARS) return h('code', { class: 'compact', testid: 'waiting-input' }, text);
  return h('details', { class: 'compact' },
    h('summary', null, h('code', { testid: 'waiting-input' }, `${text.slice(0, INPUT_PREVIEW_CHARS)}…`)),
    h('pre', { class: 'json' }, JSON.stringify(input, null, 2)));
}

/**
 * The approve or reject dialog: a JSON editor (approve) or a reason (reject), and who sends it
 * (asked only without a token: with one, Baton records the token's name). Resolves
 * {payload, text, by} once what was typed is valid, null if dismissed. `error` is shown at once
 * (a refusal of the previous send).
 */
function signalDialog({ reject, row, text, by, error }) {
  return new Promise((resolve) => {
    const what = reject ? 'Reject' : 'Approve';
    const field = reject
      ? h('input', { type: 'text', id: 'signal-text', testid: 'signal-reason', autocomplete: 'off',
        value: text, placeholder: 'why: recorded as the tasks\u2019 error', 'aria-describedby': 'signal-error' })
      : h('textarea', { id: 'signal-text', testid: 'signal-data', rows: 8, spellcheck: 'false',
        'aria-describedby': 'signal-error' }, text);
    const named = !hasToken();
    const byInput = h('input', { type: 'text', id: 'signal-by', testid: 'signal-by', autocomplete: 'off',
      value: named ? by : '', placeholder: 'local', maxlength: 128 });
    const sender = named
      ? [h('label', { for: 'signal-by' }, 'Sent by'),
        byInput,
        h('p', { class: 'small muted' }, 'Recorded in the tasks\u2019 history; remembered in this browser.')]
      : [h('p', { class: 'small muted' }, 'Recorded in the tasks\u2019 history under your token\u2019s name.')];
    const errorLine = h('p', { id: 'signal-error', class: 'error small', testid: 'signal-dialog-error', role: 'alert' }, error || '');
    // The submit button: Enter in the name field continues too (once what was typed is valid).
    const next = h('button', { value: 'yes', class: reject ? 'danger' : 'primary', testid: 'signal-next' }, 'Continue…');
    const dlg = h('dialog', { testid: 'signal-dialog', 'aria-labelledby': 'signal-title' },
      h('form', { method: 'dialog', onsubmit: (ev) => { if (!check()) ev.preventDefault(); } },
        h('h2', { id: 'signal-title' }, `${what}: signal `, h('code', null, row.signal)),
        h('p', { class: 'small' }, 'To workflow ', h('strong', null, row.workflow_name || shortId(row.workflow)),
          `: every task of it waiting for "${row.signal}" ${reject ? 'fails (error kind rejected)' : 'completes with this data as its result'}.`),
        h('label', { for: 'signal-text' }, reject ? 'Reason (required)' : 'Data (JSON)'),
        field,
        errorLine,
        ...sender,
        h('div', { class: 'buttons' },
          h('button', { type: 'button', testid: 'signal-back', onclick: () => dlg.close('no') }, 'Back'),
          next)));
    let answer = null;
    // Whether what was typed can be sent (then `answer` holds it); else says why, inline.
    function check() {
      const value = field.value;
      if (reject) {
        if (!value.trim()) {
          errorLine.textContent = 'A reason is required.';
          field.setAttribute('aria-invalid', 'true');
          field.focus();
          return false;
        }
        answer = { payload: { reject: value.trim() }, text: value, by: byInput.value.trim() };
        return true;
      }
      let data;
      try {
        data = JSON.parse(value);
      } catch (err) {
        errorLine.textContent = `Not valid JSON: ${err.message}`;
        field.setAttribute('aria-invalid', 'true');
        field.focus();
        return false;
      }
      // Sent as a literal: data that looks like a rejection (`{"reject": …}`) completes the
      // tasks with exactly what was typed.
      answer = { payload: { $literal: data }, text: value, by: byInput.value.trim() };
      return true;
    }
    field.addEventListener('input', () => {
      errorLine.textContent = '';
      field.removeAttribute('aria-invalid');
    });
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve(dlg.returnValue === 'yes' ? answer : null);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    field.focus();
  });
}

function outcomeText(reject, row, r) {
  const verb = reject ? 'Rejected' : 'Approved';
  const head = `${verb}: signal "${row.signal}" #${r.signal.id} to ${row.workflow_name || shortId(row.workflow)} by ${r.signal.sent_by}`;
  if (!r.created) return `${head} was sent before with this key: applied once, nothing more happened.`;
  if (!r.delivered_to.length) {
    return `${head}. No task waited for it any more, so it is kept for the next task of that workflow that waits for "${row.signal}".`;
  }
  return [`${head}, delivered to `, r.delivered_to.map((d, i) => [i ? ', ' : '', taskLink(d.id, d.key), ` (${d.state})`]), '.'];
}

export function waitingPage(main, page) {
  const tbody = h('tbody');
  const status = h('p', { class: 'loading' }, 'Loading…');
  const outcome = h('p', { class: 'small', role: 'status', testid: 'signal-outcome' });
  const first = h('button', { type: 'button', testid: 'waiting-first', disabled: true }, '⇤ First');
  const next = h('button', { type: 'button', testid: 'waiting-next', disabled: true }, 'Next →');
  const pageNo = h('span', { class: 'small muted', testid: 'waiting-page' });
  const panel = h('section', { class: 'panel', testid: 'waiting-panel', 'aria-labelledby': 'waiting-h' },
    h('h2', { id: 'waiting-h' }, 'Tasks waiting for a signal (live)'),
    h('p', { class: 'small muted' }, 'Approve sends the signal with a JSON payload, which becomes the result of every task of that ',
      'workflow waiting for it; Reject fails them (error kind ', h('code', null, 'rejected'), '). Both ask for confirmation.'),
    outcome,
    h('table', { testid: 'waiting' },
      h('thead', null, h('tr', null, h('th', null, 'Workflow'), h('th', null, 'Task'), h('th', null, 'Signal'),
        h('th', null, 'Since'), h('th', null, 'Times out'), h('th', null, 'Input'), h('th', null, 'Decide'))),
      tbody),
    status,
    h('div', { class: 'pager' }, first, next, pageNo));
  main.append(h('h1', null, 'Waiting'), panel);
  document.title = 'Waiting · Baton';

  let cursors = [null]; // `after` of each page visited; the last is the current page
  let shown = new Set(); // ids of the tasks on the page
  let drawnRows = null; // what the rows drawn show, to redraw only when it changed
  let listGen = 0; // answers can overtake each other: only the latest request's is drawn

  async function load() {
    const gen = ++listGen;
    const after = cursors[cursors.length - 1];
    const q = new URLSearchParams({ limit: String(WAITING_PAGE_SIZE) });
    if (after) q.set('after', after);
    panel.dataset.loaded = 'false';
    try {
      const list = await api(`/v1/waiting?${q}`);
      if (!page.live || gen !== listGen) return;
      shown = new Set(list.tasks.map((t) => t.id));
      // The same rows as drawn are left alone: a reload for an unrelated transition neither
      // closes an input the user opened nor replaces the button about to be clicked.
      const drawn = JSON.stringify(list.tasks.map((t) => [t.id, t.attempt, t.since, t.until]));
      if (drawn !== drawnRows) tbody.replaceChildren(...list.tasks.map(renderRow));
      drawnRows = drawn;
      status.textContent = list.tasks.length ? ''
        : cursors.length > 1 ? 'No more tasks wait.' : 'No task waits for a signal.';
      status.className = list.tasks.length ? '' : 'muted';
      if (cursors.length === 1) showCount(list.tasks.length, Boolean(list.next));
      first.disabled = cursors.length === 1;
      next.disabled = !list.next;
      next.onclick = () => {
        cursors.push(list.next);
        load();
      };
      pageNo.textContent = `page ${cursors.length}`;
      panel.dataset.loaded = 'true';
    } catch (err) {
      if (gen !== listGen) return;
      status.textContent = errorText(err);
      status.className = 'error';
    }
  }

  first.addEventListener('click', () => {
    cursors = [null];
    load();
  });

  function renderRow(t) {
    const approveBtn = h('button', { type: 'button', class: 'primary', testid: 'waiting-approve' }, 'Approve…');
    const rejectBtn = h('button', { type: 'button', class: 'danger', testid: 'waiting-reject' }, 'Reject…');
    const buttons = [approveBtn, rejectBtn];
    approveBtn.addEventListener('click', () => decide(t, false, buttons));
    rejectBtn.addEventListener('click', () => decide(t, true, buttons));
    return h('tr', { testid: 'waiting-row', 'data-task': t.id, 'data-workflow': t.workflow, 'data-signal': t.signal },
      h('td', null, workflowLink(t.workflow, t.workflow_name || '(unnamed)'), h('div', { class: 'small muted mono' }, shortId(t.workflow))),
      h('td', null, taskLink(t.id, t.key), t.attempt > 1 ? h('div', { class: 'small muted' }, `attempt ${t.attempt}`) : null),
      h('td', null, h('code', { testid: 'waiting-signal' }, t.signal)),
      h('td', { class: 'small' }, fmtTime(t.since)),
      h('td', { class: 'small', testid: 'waiting-until' }, t.until ? fmtTime(t.until) : 'never'),
      h('td', { class: 'input-cell' }, inputCell(t.input)),
      h('td', null, h('div', { class: 'row-actions' }, buttons)));
  }

  /** One dialog's life: edit, confirm, send; a refusal or a failure to reach Baton goes back
   *  to the editor with the error, and sending again reuses the same key. */
  async function decide(row, reject, buttons) {
    const key = newKey();
    let text = reject ? '' : APPROVAL_DEFAULT;
    let by = localStorage.getItem(SENT_BY_KEY) || '';
    let error = null;
    for (;;) {
      const form = await signalDialog({ reject, row, text, by, error });
      if (!form || !page.live) return;
      ({ text, by } = form);
      error = null;
      const who = hasToken() ? 'your token' : (by || 'local');
      const ok = await confirmDialog({
        title: reject ? 'Reject?' : 'Approve?',
        message: reject
          ? `Send "${row.signal}" as a rejection, by ${who}, to workflow ${row.workflow_name || row.workflow}: its tasks waiting for it fail (error kind rejected), reason: ${form.payload.reject}`
          : `Send "${row.signal}", by ${who}, to workflow ${row.workflow_name || row.workflow}: its tasks waiting for it complete with ${preview(form.payload.$literal)}.`,
        confirmLabel: reject ? 'Send rejection' : 'Send approval',
        confirmClass: reject ? 'danger' : 'primary',
      });
      if (!page.live) return;
      if (!ok) continue; // back to the editor, as it was
      if (by) localStorage.setItem(SENT_BY_KEY, by);
      buttons.forEach((b) => { b.disabled = true; });
      try {
        const q = by && !hasToken() ? `?${new URLSearchParams({ by })}` : '';
        const r = await api(`/v1/workflows/${encodeURIComponent(row.workflow)}/signals/${encodeURIComponent(row.signal)}${q}`,
          { method: 'POST', body: form.payload, headers: { 'Idempotency-Key': key } });
        if (!page.live) return;
        outcome.className = 'small notice';
        outcome.dataset.outcome = r.created ? (r.delivered_to.length ? 'delivered' : 'kept') : 'repeat';
        outcome.replaceChildren(...[outcomeText(reject, row, r)].flat(Infinity));
        load();
        return;
      } catch (err) {
        if (!page.live) return;
        error = `Not sent: ${errorText(err)}`;
        buttons.forEach((b) => { b.disabled = false; });
      }
    }
  }

  const reloadSoon = batched(load, 300);
  page.stream(null, {
    open: load,
    resync: load,
    // A task that becomes pending may wait for a signal; one on the page that moves on waits
    // no more. Anything else leaves the list as it was.
    event: (ev) => {
      if (ev.to === 'pending' || shown.has(ev.task)) reloadSoon();
    },
  });
}
