// Operators' controls (pause, resume, skip, fail, rerun; of a task or a whole workflow): the
// dialog that asks why, and for whatever else the control takes, then the confirmation.
//
// Every control needs a reason (the server refuses one without: 422, field `reason`, and
// records it in the audit log), so the dialog's Continue stays disabled until one is typed.
// Continue runs the page's `prepare`: it checks what else was typed (JSON is parsed here, before
// anything is sent) and may ask the server first (a rerun's dry run); what it refuses is said in
// the dialog, which stays open with what was typed. Back from the confirmation returns to the
// dialog as it was. The pages send the control themselves and show the server's answer.
//
// Below the dialog: which controls fit a task as it stands, and what each one's dialog asks
// and says (the task page's), then those of a workflow (the workflow page's).

import { h } from './dom.js';
import { fmtTime, pretty } from './format.js';
import { badge, confirmDialog } from './widgets.js';
import { api, errorText } from './api.js';

/** The server takes reasons of at most 1,024 bytes; as many characters is the field's bound
 *  (a longer one in bytes is refused by the server, and its answer said in the dialog). */
const REASON_CHARS_MAX = 1024;
/** Characters of a JSON value shown in a confirmation. */
const PREVIEW_CHARS = 160;

/** What was typed cannot be sent: said in the dialog, next to `field`, which gets the focus. */
export class Invalid extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

/** A JSON value on one line, cut at PREVIEW_CHARS. */
export function preview(value) {
  const text = JSON.stringify(value);
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
}

/** A JSON editor. `value()` parses what it holds, or throws Invalid (also for null when
 *  `nullRefused` says why null will not do). */
export function jsonField({ id, label, text, nullRefused, disabled }) {
  const area = h('textarea', { id, testid: 'control-json', rows: 8, spellcheck: 'false', disabled }, text);
  return {
    area,
    nodes: [h('label', { for: id }, label), area],
    value() {
      let v;
      try {
        v = JSON.parse(area.value);
      } catch (err) {
        throw new Invalid(`Not valid JSON: ${err.message}`, area);
      }
      if (v === null && nullRefused) throw new Invalid(nullRefused, area);
      return v;
    },
  };
}

/** A checkbox with its label. */
export function checkbox({ id, label, checked, disabled }) {
  const box = h('input', { type: 'checkbox', id, testid: id, checked, disabled });
  return { box, nodes: h('label', { class: 'check', for: id }, box, h('span', null, label)) };
}

/** A text field with its label. */
export function textField({ id, label, placeholder, maxlength }) {
  const input = h('input', { type: 'text', id, testid: id, autocomplete: 'off', placeholder, maxlength });
  return { input, nodes: [h('label', { for: id }, label), input] };
}

/**
 * Asks for a control: a dialog titled `title` with `intro`, a required reason, then `fields`
 * (nodes). Continue, enabled once a reason is typed, awaits `prepare(reason)`, which returns
 * `{body, confirm}` (`confirm`: the confirmDialog options) or throws (Invalid, or the refusal of
 * a request it made), said in the dialog. Resolves `body` once confirmed, null if dismissed.
 */
export function askControl({ title, intro, fields, prepare }) {
  return new Promise((resolve) => {
    const reason = h('input', {
      type: 'text', id: 'control-reason', testid: 'control-reason', autocomplete: 'off',
      maxlength: REASON_CHARS_MAX, placeholder: 'why: recorded in the audit log', 'aria-describedby': 'control-error',
    });
    const errorLine = h('p', { id: 'control-error', class: 'error small', testid: 'control-error', role: 'alert' });
    // The form's only submit button: while it is disabled, Enter in the reason submits nothing.
    const next = h('button', { value: 'yes', class: 'primary', testid: 'control-next', disabled: true }, 'Continue…');
    const dlg = h('dialog', { testid: 'control-dialog', 'aria-labelledby': 'control-title' },
      h('form', { method: 'dialog', onsubmit: (ev) => { ev.preventDefault(); go(); } },
        h('h2', { id: 'control-title' }, title),
        intro ? h('p', { class: 'small' }, intro) : null,
        h('label', { for: 'control-reason' }, 'Reason (required)'),
        reason,
        fields,
        errorLine,
        h('div', { class: 'buttons' },
          h('button', { type: 'button', testid: 'control-back', onclick: () => dlg.close('no') }, 'Back'),
          next)));
    let busy = false; // `prepare` or the confirmation is under way
    let confirming = false; // the dialog is closed for the confirmation, not dismissed
    let done = false;
    const ready = () => { next.disabled = busy || !reason.value.trim(); };

    function finish(value) {
      if (done) return;
      done = true;
      dlg.remove();
      resolve(value);
    }

    async function go() {
      const why = reason.value.trim();
      if (busy || !why) return;
      busy = true;
      ready();
      errorLine.textContent = '';
      let prepared;
      try {
        prepared = await prepare(why);
      } catch (err) {
        busy = false;
        ready();
        errorLine.textContent = err instanceof Invalid ? err.message : `Refused: ${errorText(err)}`;
        if (err.field) {
          err.field.setAttribute('aria-invalid', 'true');
          err.field.focus();
        }
        return;
      }
      if (done) return; // dismissed while the server was asked
      confirming = true;
      dlg.close();
      const ok = await confirmDialog(prepared.confirm);
      confirming = false;
      busy = false;
      ready();
      if (ok) finish(prepared.body);
      else dlg.showModal();
    }

    dlg.addEventListener('close', () => {
      if (!confirming) finish(null);
    });
    // Typing anywhere clears the last complaint; the reason decides whether Continue is enabled.
    for (const type of ['input', 'change']) {
      dlg.addEventListener(type, (ev) => {
        ev.target.removeAttribute('aria-invalid');
        errorLine.textContent = '';
        ready();
      });
    }
    document.body.appendChild(dlg);
    dlg.showModal();
    reason.focus();
  });
}

// ---- the controls of a task --------------------------------------------------------------------

/** The operators' controls that make sense for the task as it stands, as the lifecycle allows
 *  them: an ended task (completed, cancelled, failed for good) can only be rerun (and a failed
 *  one skipped); a paused one resumed, or taken back from an agent that still holds it. */
export function taskControls(t) {
  const retryScheduled = t.state === 'failed' && t.detail && t.detail.retry_at !== null && t.detail.retry_at !== undefined;
  const ended = t.state === 'completed' || t.state === 'cancelled' || (t.state === 'failed' && !retryScheduled);
  const kinds = [];
  if (!ended && (!t.paused || t.lease)) kinds.push('pause');
  if (t.paused) kinds.push('resume');
  if (t.state !== 'completed' && t.state !== 'cancelled') kinds.push('skip');
  if (!ended) kinds.push('fail');
  kinds.push('rerun');
  return kinds;
}

/** The button of control `kind` for task `t`. */
export function controlLabel(kind, t) {
  if (kind === 'pause' && t.paused) return 'Take back now…';
  return { pause: 'Pause…', resume: 'Resume…', skip: 'Skip…', fail: 'Fail…', rerun: 'Rerun…' }[kind];
}

/**
 * The dialog of control `kind` on task `t` (askControl's options), and `done(answer)`: what
 * the page says once the server applied it.
 */
export function taskControlSpec(kind, t) {
  const path = `/v1/tasks/${encodeURIComponent(t.id)}`;
  const key = t.key;
  switch (kind) {
    case 'pause': {
      // Paused already while an agent holds it: what is left is to take it back now.
      const takeBack = Boolean(t.paused);
      const now = checkbox({
        id: 'control-now', checked: takeBack, disabled: takeBack,
        label: 'Take it back from its agent now: its lease is revoked and its agent\u2019s next report refused. Otherwise an agent running it finishes first.',
      });
      return {
        title: takeBack ? `Take ${key} back from its agent?` : `Pause ${key}?`,
        intro: 'A paused task is not handed to any agent, and its timers stand still, until it is resumed.',
        fields: now.nodes,
        prepare: (reason) => ({
          body: { reason, now: now.box.checked },
          confirm: {
            title: takeBack ? 'Take it back?' : 'Pause this task?',
            message: `${key} is paused${now.box.checked ? ' and taken back from its agent at once' : ''}, because: ${reason}`,
            confirmLabel: takeBack ? 'Take back' : 'Pause task', confirmClass: 'primary',
          },
        }),
        done: (r) => `Paused: ${key} is ${r.state} and handed to no agent until it is resumed.`,
      };
    }
    case 'resume':
      return {
        title: `Resume ${key}?`,
        intro: `Paused by ${t.paused.by} since ${fmtTime(t.paused.at)}: ${t.paused.reason}`,
        fields: null,
        prepare: (reason) => ({
          body: { reason },
          confirm: {
            title: 'Resume this task?',
            message: `${key} can be handed to agents again; its timers count on from where they stopped. Because: ${reason}`,
            confirmLabel: 'Resume task', confirmClass: 'primary',
          },
        }),
        done: (r) => `Resumed: ${key} is ${r.state}.`,
      };
    case 'skip': {
      const result = jsonField({ id: 'control-result', label: 'Result (JSON): its dependents get it as its result', text: '{}',
        nullRefused: 'The result cannot be null: any other JSON value will do.' });
      return {
        title: `Skip ${key}?`,
        intro: 'The task completes with the result below in place of an agent (a person did the work, or it is not needed); an agent running it loses its lease.',
        fields: result.nodes,
        prepare: (reason) => {
          const value = result.value();
          return {
            body: { reason, result: value },
            confirm: {
              title: 'Skip this task?',
              message: `${key} completes with ${preview(value)} and its dependents proceed. Because: ${reason}`,
              confirmLabel: 'Skip task', confirmClass: 'primary',
            },
          };
        },
        done: (r) => `Skipped: ${key} is ${r.state}.`,
      };
    }
    case 'fail': {
      const errKind = textField({ id: 'control-error-kind', label: 'Error kind (optional)', placeholder: 'forced', maxlength: 128 });
      const errMessage = textField({ id: 'control-error-message', label: 'Error message (optional)', placeholder: 'by default: who failed it, and why', maxlength: 8192 });
      return {
        title: `Fail ${key} for good?`,
        intro: 'No retry follows: its dependents are cancelled and its compensation runs. An agent running it loses its lease.',
        fields: [errKind.nodes, errMessage.nodes],
        prepare: (reason) => {
          const kindText = errKind.input.value.trim();
          const message = errMessage.input.value.trim();
          // Without either, the server records kind `forced` with who and why.
          const error = kindText || message ? { kind: kindText || 'forced', message: message || reason } : undefined;
          return {
            body: { reason, error },
            confirm: {
              title: 'Fail this task?',
              message: `${key} fails for good${error ? ` (${error.kind}: ${error.message})` : ''}; its dependents are cancelled. Because: ${reason}`,
              confirmLabel: 'Fail task',
            },
          };
        },
        done: (r) => `Failed: ${key} is ${r.state}.`,
      };
    }
    case 'rerun': {
      const replace = checkbox({ id: 'control-new-input', label: 'Run it with a new input (the tasks downstream keep theirs)' });
      const input = jsonField({ id: 'control-input', label: 'New input (JSON)', text: pretty(t.spec.input), disabled: true,
        nullRefused: 'A new input cannot be null: untick the box to keep its input.' });
      replace.box.addEventListener('change', () => { input.area.disabled = !replace.box.checked; });
      return {
        title: `Rerun ${key}?`,
        intro: 'The task and everything downstream of it are reopened (their history is kept) and run again with fresh attempts; tasks upstream keep their results. The next step lists what would rerun.',
        fields: [replace.nodes, input.nodes],
        prepare: async (reason) => {
          const body = { reason, input: replace.box.checked ? input.value() : undefined };
          // Asked first, changing nothing: the confirmation lists what the rerun reopens.
          const plan = await api(`${path}/rerun`, { method: 'POST', body: { ...body, dry_run: true } });
          return {
            body,
            confirm: {
              title: 'Rerun these tasks?',
              message: `${plan.tasks.length} task${plan.tasks.length === 1 ? '' : 's'} will be reopened${body.input !== undefined ? `, ${key} with the input ${preview(body.input)}` : ''}. Because: ${reason}`,
              details: h('ol', { class: 'rerun-plan', testid: 'rerun-plan' }, plan.tasks.map((p) => h('li', { testid: 'rerun-plan-task', 'data-task': p.id },
                p.key, ' ', badge(p.state)))),
              confirmLabel: `Rerun ${plan.tasks.length} task${plan.tasks.length === 1 ? '' : 's'}`, confirmClass: 'primary',
            },
          };
        },
        done: (r) => `Rerun: ${r.tasks.length} task${r.tasks.length === 1 ? '' : 's'} reopened (${r.tasks.map((p) => p.key).join(', ')}).`,
      };
    }
    default:
      throw new Error(`no control ${kind}`);
  }
}

// ---- the controls of a workflow ----------------------------------------------------------------

/** The dialog of pausing or resuming (`kind`) workflow `wf` (as last read; null before). */
export function workflowControlSpec(kind, wf) {
  const pause = kind === 'pause';
  const name = (wf && wf.name) || 'this workflow';
  const now = pause ? checkbox({
    id: 'control-now',
    label: 'Take its running tasks back from their agents now: their leases are revoked. Otherwise agents finish what they run.',
  }) : null;
  return {
    title: pause ? `Pause ${name}?` : `Resume ${name}?`,
    intro: pause
      ? 'Every task of it that has not ended is paused: none is handed to an agent, and their timers stand still, until it is resumed. Tasks added to it meanwhile start paused.'
      : 'Every paused task of it (those paused one by one too) can be handed to agents again.',
    fields: now ? now.nodes : null,
    prepare: (reason) => ({
      body: pause ? { reason, now: now.box.checked } : { reason },
      confirm: {
        title: pause ? 'Pause this workflow?' : 'Resume this workflow?',
        message: pause
          ? `Every task of ${name} that has not ended is paused${now.box.checked ? ', and those running are taken back from their agents' : ''}. Because: ${reason}`
          : `Every paused task of ${name} goes on. Because: ${reason}`,
        confirmLabel: pause ? 'Pause workflow' : 'Resume workflow', confirmClass: 'primary',
      },
    }),
  };
}
