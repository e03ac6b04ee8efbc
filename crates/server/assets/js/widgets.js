// Pieces several pages draw: state badges, links to tasks and workflows, artifact downloads,
// count cards, the progress bar, the state legend, and the confirmation dialog of cancel and
// retry.

import { h } from './dom.js';
import { authHeader, askToken, errorText } from './api.js';
import { cap, fmtNum, shortId } from './format.js';
import { STATES } from './counts.js';

export function badge(state) {
  return h('span', { class: `badge s-${state}`, 'data-state': state }, state);
}

export function taskLink(id, label) {
  return h('a', { href: `#/tasks/${encodeURIComponent(id)}`, class: 'mono', title: id }, label || shortId(id));
}

export function workflowLink(id, label) {
  return h('a', { href: `#/workflows/${encodeURIComponent(id)}`, title: id }, label || shortId(id));
}

/** The artifact references (`{"$artifact": "sha256:…"}`) in a JSON value, each once. */
export function artifactRefs(value, out = new Set()) {
  if (Array.isArray(value)) value.forEach((v) => artifactRefs(v, out));
  else if (value && typeof value === 'object') {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === '$artifact' && typeof value.$artifact === 'string') out.add(value.$artifact);
    else keys.forEach((k) => artifactRefs(value[k], out));
  }
  return out;
}

/** Download links for the artifacts `value` refers to (nothing when none). Without a stored
 *  token the browser streams the download itself; with one, it is fetched with the token. */
export function artifactLinks(value, testid) {
  const refs = [...artifactRefs(value)];
  if (!refs.length) return null;
  return h('ul', { class: 'links artifacts', testid }, refs.map((ref) => {
    const path = `/v1/artifacts/${encodeURIComponent(ref)}`;
    const status = h('span', { class: 'small muted', role: 'status' });
    const link = h('a', { href: path, download: ref.replace('sha256:', ''), class: 'mono', title: ref,
      onclick: (ev) => {
        if (!Object.keys(authHeader()).length) return;
        ev.preventDefault();
        fetchDownload(path, link.getAttribute('download'), status);
      } }, `download ${ref.slice(0, 19)}…`);
    return h('li', null, link, ' ', status);
  }));
}

async function fetchDownload(path, name, status) {
  status.textContent = 'downloading…';
  try {
    for (let tries = 0; ; tries++) {
      const res = await fetch(path, { headers: authHeader(), cache: 'no-store' });
      if (res.status === 401 && tries < 2) { await askToken('Baton asks for a token.'); continue; }
      if (!res.ok) throw new Error(`the server answered ${res.status}`);
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: name });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      status.textContent = '';
      return;
    }
  } catch (err) {
    status.textContent = errorText(err);
  }
}

/** Cards with the count of each state; `update(counts)` redraws the numbers. */
export function countCards() {
  const nums = {};
  const card = (state, label) => {
    nums[state] = h('span', { class: 'n', testid: `count-${state}`, 'data-count': '0' }, '—');
    return h('div', { class: `count s-${state}`, testid: `count-card-${state}` },
      nums[state], h('span', { class: 'label' }, label));
  };
  const el = h('div', { class: 'counts' }, STATES.map((st) => card(st, st)), card('total', 'total'));
  return {
    el,
    update(counts) {
      for (const st of [...STATES, 'total']) {
        const n = counts[st] || 0;
        nums[st].textContent = fmtNum(n);
        nums[st].dataset.count = String(n);
      }
    },
  };
}

/** A progress bar with one segment per state that has tasks, completed first. */
export function progressBar(counts, label) {
  const total = counts.total || 0;
  const bar = h('div', {
    class: 'progress', role: 'progressbar', 'aria-label': label, 'aria-valuemin': 0,
    'aria-valuemax': total, 'aria-valuenow': counts.completed || 0, testid: 'workflow-progress',
    'data-completed': counts.completed || 0, 'data-total': total,
  });
  const order = ['completed', 'failed', 'cancelled', 'executing', 'assigned', 'pending', 'blocked'];
  for (const st of order) {
    const n = counts[st] || 0;
    if (!n || !total) continue;
    const seg = h('span', { class: `s-${st}`, title: `${st}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    bar.append(seg);
  }
  return bar;
}

export function legend(counts, testid) {
  return h('ul', { class: 'legend', testid, 'aria-label': 'Legend: colour of each state' },
    STATES.map((st) => h('li', { 'data-state': st },
      h('span', { class: `swatch s-${st}`, 'aria-hidden': 'true' }),
      cap(st),
      counts ? h('span', { class: 'muted', testid: `legend-count-${st}` }, ` ${fmtNum(counts[st])}`) : null)));
}

/** A confirmation step in a real <dialog>. Resolves {reason} when confirmed, null otherwise.
 *  The confirming button is red (`danger`) unless `confirmClass` says otherwise; `details`
 *  (nodes) are shown under the message. */
export function confirmDialog({ title, message, details, confirmLabel, withReason, confirmClass = 'danger' }) {
  return new Promise((resolve) => {
    const reason = withReason
      ? h('input', { type: 'text', id: 'confirm-reason', testid: 'confirm-reason', autocomplete: 'off',
        placeholder: 'recorded in the task history' })
      : null;
    const dlg = h('dialog', { testid: 'confirm-dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-message' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'confirm-title' }, title),
        h('p', { id: 'confirm-message', testid: 'confirm-message' }, message),
        details ? h('div', { testid: 'confirm-details' }, details) : null,
        reason && [h('label', { for: 'confirm-reason' }, 'Reason'), reason],
        h('div', { class: 'buttons' },
          // Not a submit button: Enter in the reason field confirms, Escape goes back.
          h('button', { type: 'button', testid: 'confirm-no', onclick: () => dlg.close('no') }, 'Back'),
          h('button', { value: 'yes', class: confirmClass, testid: 'confirm-ok' }, confirmLabel))));
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve(dlg.returnValue === 'yes' ? { reason: reason ? reason.value.trim() : '' } : null);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
}
