// The task states in lifecycle order, counts per state moved by transitions, and whether a
// task is paused after one.

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

/** Whether a task is paused after transition `ev`, given whether it was before: a pause or a
 *  resume says so, and a task that completes or is cancelled is paused no more. (A paused task
 *  whose attempt fails stays paused only if a retry follows, which the event does not say: the
 *  next read of the task does.) */
export function pausedAfter(paused, ev) {
  if (ev.event === 'pause_requested') return true;
  if (ev.event === 'resume_requested') return false;
  if (ev.to === 'completed' || ev.to === 'cancelled') return false;
  return paused;
}
