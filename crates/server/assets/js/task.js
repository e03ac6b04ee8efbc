// The task page (#/tasks/ID): its facts, why it waits, whether an operator paused or overruled
// it, input, result, errors, related tasks and history, kept live; cancel and retry after a
// confirmation, and the operators' controls that fit its state (pause, resume, skip, fail,
// rerun), each with a reason and a confirmation (controls.js).

import { batched, h } from './dom.js';
import { fmtTime, pretty, shortId } from './format.js';
import { artifactLinks, badge, confirmDialog, taskLink, workflowLink } from './widgets.js';
import { api, errorText } from './api.js';
import { askControl, controlLabel, preview, taskControls, taskControlSpec } from './controls.js';

/** What the operators' controls that overrule an agent are called on the page. */
const OVERRULED_BY = {
  pause_requested: 'taken back from its agent by a pause',
  skip_requested: 'skipped',
  fail_requested: 'failed by an operator',
  reopened: 'rerun',
};

function waitingText(w) {
  if (!w) return null;
  switch (w.reason) {
    case 'dependencies':
      return ['Waiting for ', String(w.open.length), ' dependenc', w.open.length === 1 ? 'y' : 'ies', ': ',
        w.open.map((d, i) => [i ? ', ' : '', taskLink(d.id, d.key), ' (', d.state, ')'])];
    case 'no_capable_agent':
      return [`Ready, but no online agent offers: ${w.missing.join(', ')}.`];
    case 'agents_busy':
      return [`Ready; ${w.capable_online} capable agent(s) online, all busy.`];
    case 'rate_limited':
      return ['Ready; rate limit ', h('a', { href: '#/limits' }, w.limit),
        ` has ${w.available} of the ${w.units} unit(s) it draws, enough at ${fmtTime(w.until)}.`];
    case 'concurrency_full':
      return ['Ready; concurrency key ', h('code', null, w.key), ` is full (${w.held} of ${w.max} running).`];
    case 'leased':
      return ['Leased to agent ', h('a', { href: '#/agents', class: 'mono', title: w.agent }, shortId(w.agent)),
        ` (${w.state})`, w.until ? ` until ${fmtTime(w.until)}` : ''];
    case 'backing_off':
      return [`Backing off after attempt ${w.attempt} of ${w.max_attempts}; next attempt at ${fmtTime(w.until)}.`];
    case 'signal':
      return ['Waiting for signal ', h('code', null, w.signal),
        w.until ? ` until ${fmtTime(w.until)}` : '', ' (see ', h('a', { href: '#/waiting' }, 'Waiting'), ').'];
    case 'timer':
      return [`${w.sleeps ? 'Asleep' : 'Delayed'} until ${fmtTime(w.until)}.`];
    case 'paused':
      return [`Paused by ${w.by} since ${fmtTime(w.since)}: ${w.why}`];
    default:
      return [pretty(w)];
  }
}

function eventSummary(entry) {
  const d = entry.data || {};
  const parts = [];
  if (d.agent) parts.push(`agent ${shortId(d.agent)}`);
  if (d.token !== undefined) parts.push(`token ${d.token}`);
  if (d.error) parts.push(`${d.error.kind}: ${d.error.message}`);
  if (d.deadline) parts.push(`deadline ${d.deadline}`);
  if (d.upstream) parts.push(`upstream ${d.upstream}`);
  if (d.dependency) parts.push(`dependency ${d.dependency}`);
  if (d.reason) parts.push(`reason: ${d.reason}`);
  if (d.requested_by) parts.push(`by ${d.requested_by}`);
  if (d.now) parts.push('taken back from its agent at once');
  if (d.root) parts.push(`rerun from ${d.root}${d.input !== undefined ? ' with a new input' : ''}`);
  if (d.event === 'skip_requested') parts.push(`result ${preview(d.result)}`);
  if (d.event === 'signal_received') {
    parts.push(`signal ${d.signal} #${d.id} from ${d.sent_by}`);
    if (d.reject !== undefined) parts.push(`rejected: ${d.reject}`);
  }
  if (d.completed && d.completed.length) parts.push(`after ${d.completed.join(', ')}`);
  return parts.join(' · ');
}

function actorText(a) {
  if (!a) return '';
  if (a.actor === 'agent') return `agent ${shortId(a.agent)}`;
  if (a.actor === 'operator') return a.name === 'operator' ? 'operator' : `operator ${a.name}`;
  return a.actor;
}

export function taskPage(main, page, id) {
  const body = h('div', null, h('p', { class: 'loading' }, 'Loading task…'));
  main.append(body);
  let streaming = false;
  let current = null; // the task as last loaded
  let actionMsg = null; // kept across reloads: {text, error}
  const reloadSoon = batched(() => load(), 150);

  let loadSeq = 0; // answers can overtake each other: only the latest request's is drawn

  async function load() {
    const seq = ++loadSeq;
    try {
      const [t, upstream] = await Promise.all([
        api(`/v1/tasks/${encodeURIComponent(id)}`),
        api(`/v1/tasks/${encodeURIComponent(id)}/upstream`),
      ]);
      if (!page.live || seq !== loadSeq) return;
      current = t;
      render(t, upstream);
      if (!streaming) {
        streaming = true;
        let first = true;
        page.stream(t.workflow, {
          open: () => {
            if (!first) load();
            first = false;
          },
          resync: load,
          event: (ev) => {
            const c = current;
            if (ev.task === id || c.dependencies.some((d) => d.id === ev.task) || c.dependents.includes(ev.task)) reloadSoon();
          },
        });
      }
    } catch (err) {
      body.replaceChildren(h('p', { class: 'error', testid: 'task-error' }, errorText(err)));
    }
  }

  async function act(kind) {
    const cancel = kind === 'cancel';
    const ok = await confirmDialog(cancel
      ? { title: 'Cancel this task?', message: 'Cancelling revokes its lease and cancels the tasks that depend on it.', confirmLabel: 'Cancel task', withReason: true }
      : { title: 'Retry this task?', message: 'The task is reopened with a fresh budget of attempts.', confirmLabel: 'Retry task', withReason: false });
    if (!ok) return;
    try {
      const r = await api(`/v1/tasks/${encodeURIComponent(id)}/${kind}`, { method: 'POST', body: cancel ? { reason: ok.reason } : {} });
      actionMsg = { text: `${cancel ? 'Cancelled' : 'Retried'}: the task is now ${r.state}.`, error: false };
    } catch (err) {
      actionMsg = { text: `Refused: ${errorText(err)}`, error: true };
    }
    await load();
  }

  /** An operator's control: its dialog (a reason, what else it takes, a confirmation), then
   *  the request; the outcome, or the server's refusal, is said beside the buttons. */
  async function control(kind) {
    const spec = taskControlSpec(kind, current);
    const body = await askControl(spec);
    if (!body || !page.live) return;
    try {
      const r = await api(`/v1/tasks/${encodeURIComponent(id)}/${kind}`, { method: 'POST', body });
      actionMsg = { text: spec.done(r), error: false };
    } catch (err) {
      actionMsg = { text: `Refused: ${errorText(err)}`, error: true };
    }
    if (page.live) await load();
  }

  function render(t, upstream) {
    document.title = `${t.key} · Baton`;
    const ended = t.state === 'completed' || t.state === 'cancelled';
    const cancelBtn = h('button', { type: 'button', class: 'danger', testid: 'action-cancel', disabled: ended, onclick: () => act('cancel') }, 'Cancel…');
    const retryBtn = h('button', { type: 'button', class: 'primary', testid: 'action-retry', disabled: t.state !== 'failed', onclick: () => act('retry') }, 'Retry…');
    const controls = taskControls(t).map((kind) => h('button', {
      type: 'button', class: kind === 'fail' ? 'danger' : null, testid: `action-${kind}`, onclick: () => control(kind),
    }, controlLabel(kind, t)));
    const msg = actionMsg
      ? h('span', { class: actionMsg.error ? 'error' : 'notice', testid: actionMsg.error ? 'action-error' : 'action-result', role: actionMsg.error ? 'alert' : 'status' }, actionMsg.text)
      : null;

    const lease = t.lease
      ? ['agent ', h('a', { href: '#/agents', class: 'mono', title: t.lease.agent }, shortId(t.lease.agent)),
        ` · token ${t.lease.token} · granted ${fmtTime(t.lease.granted_at)}`]
      : '—';
    const deadlines = Object.entries(t.deadlines).filter(([, v]) => v !== null && v !== undefined);
    const waiting = waitingText(t.waiting);
    const detail = t.detail || {};
    let cancelNote = null;
    if (t.state === 'cancelled' && detail.reason) {
      const r = detail.reason;
      cancelNote = r.by === 'upstream' ? `because its dependency ${r.upstream} failed or was cancelled`
        : r.by === 'superseded' ? `superseded by a rerun of ${r.parent}, which created it`
        : `by ${r.requested_by}${r.reason ? `: ${r.reason}` : ''}`;
    }

    const paused = t.paused
      ? h('div', { class: 'paused-banner', testid: 'task-paused', role: 'status' },
        h('strong', null, 'Paused'), ` by ${t.paused.by} since ${fmtTime(t.paused.at)}: `,
        h('span', { testid: 'task-paused-reason' }, t.paused.reason),
        h('div', { class: 'small' }, t.lease
          ? 'An agent still holds it and may finish it; no agent is handed it again until it is resumed.'
          : 'No agent is handed it, and its timers stand still, until it is resumed.'))
      : null;
    const o = t.overruled;
    const summary = h('section', { class: 'panel', 'aria-labelledby': 'task-h' },
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', workflowLink(t.workflow, 'workflow'), ' / task'),
      h('h1', { id: 'task-h' }, t.key, ' ', h('span', { testid: 'task-state', 'data-state': t.state }, badge(t.state)),
        t.paused ? [' ', h('span', { class: 'badge paused', testid: 'task-paused-badge' }, 'paused')] : null),
      h('div', { class: 'small muted mono' }, t.id),
      paused,
      h('dl', { class: 'kv', testid: 'task-facts' },
        h('dt', null, 'Attempt'), h('dd', { testid: 'task-attempt' }, `${t.attempt} of ${t.attempts_allowed}`),
        h('dt', null, 'Lease'), h('dd', { testid: 'task-lease' }, lease),
        // An ended task says when it ended, not why it waits.
        waiting || !(ended || t.state === 'failed')
          ? [h('dt', null, 'Why waiting'), h('dd', { testid: 'task-waiting' }, waiting || '—')]
          : [h('dt', null, 'Ended'), h('dd', { testid: 'task-waiting' },
            `${t.state}${t.entered_at && t.entered_at[t.state] ? ' ' + fmtTime(t.entered_at[t.state]) : ''}`)],
        cancelNote && [h('dt', null, 'Cancelled'), h('dd', { testid: 'task-cancel-reason' }, cancelNote)],
        o && [h('dt', null, 'Overruled'), h('dd', { testid: 'task-overruled', 'data-event': o.event },
          `${OVERRULED_BY[o.event] || o.event} by ${o.by}: ${o.reason}`)],
        h('dt', null, 'Deadlines'), h('dd', { testid: 'task-deadlines' }, deadlines.length
          ? deadlines.map(([k, v], i) => [i ? ' · ' : '', `${k.replaceAll('_', ' ')} ${fmtTime(v)}`]) : 'none armed'),
        h('dt', null, 'Capabilities'), h('dd', null, t.spec.capabilities.length
          ? h('span', { class: 'chips' }, t.spec.capabilities.map((c) => h('span', { class: 'chip' }, c))) : 'any agent'),
        h('dt', null, 'Priority'), h('dd', null, String(t.spec.priority)),
        h('dt', null, 'Created'), h('dd', null, fmtTime(t.created_at)),
        h('dt', null, 'Updated'), h('dd', null, fmtTime(t.updated_at)),
        h('dt', null, 'Version'), h('dd', null, `${t.version} (fencing token ${t.fencing_token})`)),
      h('div', { class: 'actions', testid: 'task-actions' }, cancelBtn, retryBtn, controls, msg));

    const links = [];
    // Related tasks by key: the spec names the compensation, its input the task compensated,
    // the cancellation the upstream that caused it.
    const compensationKey = t.spec.compensation && t.spec.compensation.key;
    const compensatesKey = t.spec.input && typeof t.spec.input.compensates === 'string' ? t.spec.input.compensates : null;
    const causeKey = detail.reason && detail.reason.upstream;
    if (t.compensation) links.push(h('li', null, 'Compensation task: ', taskLink(t.compensation, compensationKey)));
    if (t.compensates) links.push(h('li', null, 'Compensates: ', taskLink(t.compensates, compensatesKey)));
    if (t.upstream_cause) links.push(h('li', null, 'Cancelled because of: ', taskLink(t.upstream_cause, causeKey)));
    const related = h('section', { class: 'panel', 'aria-labelledby': 'rel-h', testid: 'task-related' },
      h('h2', { id: 'rel-h' }, 'Related tasks'),
      h('h3', null, `Dependencies (${t.dependencies.length})`),
      t.dependencies.length
        ? h('ul', { class: 'links', testid: 'task-dependencies' }, t.dependencies.map((d) => h('li', null, taskLink(d.id, d.key), ' ', badge(d.state))))
        : h('p', { class: 'muted' }, 'none'),
      h('h3', null, `Dependents (${t.dependents.length})`),
      t.dependents.length
        ? h('ul', { class: 'links', testid: 'task-dependents' }, t.dependents.map((d) => h('li', null, taskLink(d))))
        : h('p', { class: 'muted' }, 'none'),
      links.length ? [h('h3', null, 'Links'), h('ul', { class: 'links', testid: 'task-links' }, links)] : null);

    const data = h('section', { class: 'panel', 'aria-labelledby': 'data-h' },
      h('h2', { id: 'data-h' }, 'Input and result'),
      // A template's resolved input is what the agent got; the template stays beside it.
      t.input !== undefined
        ? [h('h3', null, 'Input (resolved)'), h('pre', { class: 'json', testid: 'task-input' }, pretty(t.input)),
          artifactLinks(t.input, 'task-input-artifacts'),
          h('h3', null, 'Input as submitted (template)'), h('pre', { class: 'json', testid: 'task-input-template' }, pretty(t.spec.input))]
        : [h('h3', null, 'Input'), h('pre', { class: 'json', testid: 'task-input' }, pretty(t.spec.input)),
          artifactLinks(t.spec.input, 'task-input-artifacts')],
      h('h3', null, `Upstream results (${Object.keys(upstream).length})`),
      Object.keys(upstream).length
        ? h('dl', { class: 'upstream', testid: 'task-upstream' }, Object.entries(upstream).map(([key, u]) => [
          h('dt', null, taskLink(u.task, key)),
          h('dd', null, u.result === undefined
            ? h('p', { class: 'muted', 'data-key': key }, `${u.withheld_bytes} bytes: too large to show with the others`)
            : h('pre', { class: 'json', 'data-key': key }, pretty(u.result)))]))
        : h('p', { class: 'muted', testid: 'task-upstream' }, 'none: no dependency has completed'),
      h('h3', null, 'Result'), t.result !== null && t.result !== undefined
        ? [h('pre', { class: 'json', testid: 'task-result' }, pretty(t.result)),
          artifactLinks(t.result, 'task-result-artifacts')]
        : h('p', { class: 'muted', testid: 'task-result' }, 'no result yet'),
      h('h3', null, `Errors (${t.errors.length})`),
      t.errors.length
        ? h('ol', { class: 'errors', testid: 'task-errors' }, t.errors.map((e) => h('li', null,
          h('strong', null, `attempt ${e.attempt}: ${e.kind}`), ` — ${e.message}`,
          h('div', { class: 'small muted' }, `${fmtTime(e.at)} · ${e.retryable ? 'retryable' : 'not retryable'}${e.token !== null && e.token !== undefined ? ` · token ${e.token}` : ''}`))))
        : h('p', { class: 'muted' }, 'none'));

    const history = h('section', { class: 'panel', 'aria-labelledby': 'hist-h' },
      h('h2', { id: 'hist-h' }, `History (${t.history.length} entries)`),
      h('ol', { class: 'timeline', testid: 'history' }, t.history.map((e) => {
        const extra = Object.assign({}, e.data);
        delete extra.event;
        const hasExtra = Object.keys(extra).length > 0;
        return h('li', { testid: 'history-entry', 'data-event': e.event, 'data-seq': e.seq },
          h('span', { class: 'when' }, fmtTime(e.at)),
          h('span', { class: 'ev' }, e.event),
          h('span', { class: 'muted' }, ` by ${actorText(e.actor)}`),
          h('div', { class: 'small' }, eventSummary(e)),
          hasExtra ? h('details', null, h('summary', null, 'data'), h('pre', { class: 'json' }, pretty(extra))) : null);
      })));

    body.replaceChildren(summary, h('div', { class: 'row' }, data, related), history);
    body.dataset.loaded = 'true';
    body.dataset.testid = 'task-page';
  }

  load();
}
