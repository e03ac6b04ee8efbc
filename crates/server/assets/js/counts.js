// The task states in lifecycle order, and counts per state moved by transitions.

export const STATES = ['blocked', 'pending', 'assigned', 'executing', 'completed', 'failed', 'cancelled'];

export function emptyCounts() {
  const c = { total: 0 };
  for (const st of STATES) c[st] = 0;
  return c;
}

/** Moves a counts object by one transition: `from` (absent for a new task) to `to`. */
export function applyTransition(counts, ev) {
  if (ev.from) counts[ev.from] = Math.max(0, (counts[ev.from] || 0) - 1);
  else counts.total = (counts.total || 0) + 1;
  counts[ev.to] = (counts[ev.to] || 0) + 1;
}
