// The /v1 JSON API: requests with the bearer token (asked for in a dialog on a 401, kept in
// localStorage), refusals as ApiError carrying the problem document.

import { h } from './dom.js';

const TOKEN_KEY = 'baton.token';

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `the server answered ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Whether a bearer token is in use: then the server records who acts as the token's name. */
export function hasToken() {
  return Boolean(localStorage.getItem(TOKEN_KEY));
}

export function authHeader() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

let tokenPrompt = null;

/** Asks for a bearer token in a dialog; resolves once one is saved, rejects if dismissed. */
export function askToken(why) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve, reject) => {
    const input = h('input', {
      type: 'password', id: 'token-input', testid: 'token-input', autocomplete: 'off',
      value: localStorage.getItem(TOKEN_KEY) || '',
    });
    const dlg = h('dialog', { testid: 'token-dialog', 'aria-labelledby': 'token-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'token-title' }, 'Bearer token'),
        h('p', { class: 'small' }, why),
        h('p', { class: 'small muted' },
          'Kept in this browser (localStorage) and sent as "Authorization: Bearer". Save it empty to forget it.'),
        h('label', { for: 'token-input' }, 'Token'),
        input,
        h('div', { class: 'buttons' },
          h('button', { type: 'button', testid: 'token-dismiss', onclick: () => dlg.close('no') }, 'Cancel'),
          h('button', { value: 'yes', class: 'primary', testid: 'token-save' }, 'Save'))));
    dlg.addEventListener('close', () => {
      dlg.remove();
      tokenPrompt = null;
      if (dlg.returnValue === 'yes') {
        const token = input.value.trim();
        if (token) localStorage.setItem(TOKEN_KEY, token);
        else localStorage.removeItem(TOKEN_KEY);
        resolve();
      } else {
        reject(new ApiError(401, { detail: 'this Baton needs a token: use the Token button' }));
      }
    });
    document.body.appendChild(dlg);
    dlg.showModal();
  });
  return tokenPrompt;
}

/** A JSON request; a refusal throws an ApiError carrying the problem document. `opts.headers`
 *  adds request headers (an `Idempotency-Key`). */
export async function api(path, opts = {}) {
  for (let tries = 0; ; tries++) {
    const headers = Object.assign({ Accept: 'application/json' }, opts.headers, authHeader());
    const init = { method: opts.method || 'GET', headers, signal: opts.signal, cache: 'no-store' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, init);
    if (res.status === 401 && tries < 2) {
      await askToken(tries === 0 ? 'Baton asks for a token.' : 'That token was refused; try another.');
      continue;
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
}

export function errorText(err) {
  if (err instanceof ApiError) return err.message;
  return `could not reach Baton: ${(err && err.message) || err}`;
}
