// Formatting of times, numbers and ids for display. No DOM, no state.

const pad = (n) => String(n).padStart(2, '0');

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export const fmtNum = (n) => Number(n || 0).toLocaleString('en-US');
/** UUIDv7 ids share their leading (time) digits, so the tail tells tasks apart. */
export const shortId = (id) => '…' + String(id).slice(-8);
export const cap = (str) => str.charAt(0).toUpperCase() + str.slice(1);
export const pretty = (v) => JSON.stringify(v, null, 2);
