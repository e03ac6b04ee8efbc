"""What a task handler is told about the task it runs, and how it talks back."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from .types import JSON, ClaimedTask, Deadlines

__all__ = ["TaskContext", "Upstream"]

FetchUpstream = Callable[[str, str], JSON]
"""Reads one withheld result: ``fetch(task_id, key)``."""


class Upstream(Mapping[str, JSON]):
    """The results of the task's dependencies, by dependency key: ``ctx.upstream["plan"]``.

    Results come with the claim; one the claim answer withheld over its size budget is read
    from Baton on first access (a blocking request) and kept.
    """

    def __init__(self, task_id: str, sent: Mapping[str, Any], fetch: FetchUpstream) -> None:
        self._task_id = task_id
        self._sent = dict(sent)
        self._fetch = fetch
        self._read: Dict[str, JSON] = {}
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> JSON:
        item = self._sent[key]
        if "result" in item:
            return item["result"]
        with self._lock:
            if key not in self._read:
                self._read[key] = self._fetch(self._task_id, key)
            return self._read[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sent)

    def __len__(self) -> int:
        return len(self._sent)

    def task_id(self, key: str) -> str:
        """The id of the dependency ``key``."""
        return str(self._sent[key]["task"])


class TaskContext:
    """Passed to every handler with the task's input.

    Identifies the task (``task_id``, ``workflow_id``, ``key``, ``attempt``), carries what a
    handler needs to behave well (``idempotency_key`` to make side effects idempotent across
    redeliveries, ``traceparent`` to continue the workflow's trace), and lets it report
    progress. ``deadlines`` are the task's deadlines as of the latest answer from Baton (ms since
    the epoch). ``cancelled`` turns true when Baton says the task was cancelled, the lease was
    lost (another agent may now run it), or the agent is shutting down and gave the task back:
    a handler should then stop soon; whatever it returns is not reported. ``agent_id`` and
    ``token`` identify the lease, for calls such as :meth:`baton.Client.add_subtasks`.
    ``upstream`` maps each completed dependency's key to its result.
    """

    def __init__(
        self,
        claimed: ClaimedTask,
        agent_id: str,
        wake: Callable[[], None],
        fetch_upstream: Optional[FetchUpstream] = None,
    ) -> None:
        self.task_id: str = claimed.task
        self.workflow_id: str = claimed.workflow
        self.key: str = claimed.key
        self.attempt: int = claimed.attempt
        self.token: int = claimed.token
        self.agent_id: str = agent_id
        self.idempotency_key: str = claimed.idempotency_key
        self.traceparent: str = claimed.traceparent
        self.deadlines: Deadlines = claimed.deadlines
        self.upstream: Upstream = Upstream(
            claimed.task, claimed.upstream, fetch_upstream or _no_fetch
        )
        self._wake = wake
        self._cancelled = threading.Event()
        self._reason: Optional[str] = None
        self._lock = threading.Lock()
        self._progress: JSON = None
        self._progress_pending = False
        self._usage: Dict[str, float] = {}

    @property
    def cancelled(self) -> bool:
        """Whether the handler should stop: cancelled, lease lost, or agent stopping."""
        return self._cancelled.is_set()

    @property
    def cancel_reason(self) -> Optional[str]:
        """Why ``cancelled`` is set: the refusal's code (``task_cancelled``, ``stale_lease``,
        ``not_accepted``...) or ``agent_stopping``."""
        return self._reason

    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Blocks up to ``timeout`` seconds for cancellation; returns ``cancelled``. Use it as
        an interruptible sleep in blocking handlers."""
        return self._cancelled.wait(timeout)

    def progress(self, value: JSON) -> None:
        """Records progress (any JSON value) and asks for a heartbeat carrying it right away.

        Does not block: the agent's heartbeat loop sends it; if calls come faster than it can
        send, only the latest value goes out.
        """
        with self._lock:
            self._progress = value
            self._progress_pending = True
        self._wake()

    def report_usage(self, **units: float) -> None:
        """Adds what the handler just spent, by unit: ``ctx.report_usage(tokens=1532,
        usd=0.012)``. The running total goes to Baton with the next heartbeat and with the
        outcome, adds up per task and workflow, and counts against the workflow's budgets
        (a budget reached may pause the workflow: this task still finishes)."""
        for unit, amount in units.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                raise ValueError(f"usage {unit}: expected a number of at least 0, not {amount!r}")
        with self._lock:
            for unit, amount in units.items():
                self._usage[unit] = self._usage.get(unit, 0) + amount

    @property
    def usage(self) -> Dict[str, float]:
        """What the handler has reported spending so far, by unit."""
        with self._lock:
            return dict(self._usage)

    def _take_progress(self) -> JSON:
        """The progress recorded since the last heartbeat, if any, else ``None``."""
        with self._lock:
            value = self._progress if self._progress_pending else None
            self._progress_pending = False
            return value

    def _cancel(self, reason: str) -> None:
        if not self._cancelled.is_set():
            self._reason = reason
            self._cancelled.set()


def _no_fetch(task_id: str, key: str) -> JSON:
    raise LookupError(
        f"the result of {key!r} for task {task_id} was withheld and this context cannot read it"
    )
