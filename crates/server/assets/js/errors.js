// Errors worth showing: any uncaught error or rejection is put in the banner and recorded in
// window.__batonErrors, which the browser tests read. Imported first by main.js, so that it
// listens before any other module runs.

import { $ } from './dom.js';

window.__batonErrors = [];

function showBanner(text) {
  const b = $('#banner');
  if (!b) return;
  b.textContent = text;
  b.hidden = false;
}

window.addEventListener('error', (e) => {
  window.__batonErrors.push(String(e.message));
  showBanner(`Dashboard error: ${e.message}`);
});
window.addEventListener('unhandledrejection', (e) => {
  const msg = (e.reason && e.reason.message) || String(e.reason);
  window.__batonErrors.push(msg);
  showBanner(`Dashboard error: ${msg}`);
});
