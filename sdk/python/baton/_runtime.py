"""What the blocking and the asyncio agent runners share: the record of a held task, the
heartbeat cadence, and how outcomes become reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from .context import TaskContext
from .errors import BatonError, Conflict, ConnectionFailed, NonRetryable, NotFound, Unavailable
from .types import JSON, ClaimedTask, Deadlines

BEAT_MIN_S = 0.25
"""Shortest pause between two heartbeats of one task, whatever its deadline says."""
REPORT_ATTEMPTS = 5
"""Tries of a report that fails for transient reasons (connection, 503) before giving up."""
MESSAGE_CHARS_MAX = 8192
"""Longest error message reported; longer ones are cut."""
CLAIM_BACKOFF_MAX_S = 5.0


@dataclass
class Held:
    """A task the agent holds a lease on, from its claim until its final report."""

    claimed: ClaimedTask
    ctx: TaskContext
    executing: bool = False
    finished: bool = False
    released: bool = False
    heartbeat_deadline: Optional[int] = None
    next_beat: float = 0.0

    @property
    def beating(self) -> bool:
        """Whether heartbeats are due for it: started, not done, lease still held."""
        return self.executing and not self.finished and not self.released and not self.ctx.cancelled


def beat_interval(heartbeat_deadline: Optional[int], max_interval: float) -> float:
    """Seconds until the next heartbeat: a third of the time left before the heartbeat
    deadline (ms since the epoch), at most ``max_interval``, at least :data:`BEAT_MIN_S`."""
    if heartbeat_deadline is None:
        return max_interval
    remaining = heartbeat_deadline / 1000.0 - time.time()
    return max(BEAT_MIN_S, min(max_interval, remaining / 3.0))


def schedule(held: Held, deadlines: Deadlines, max_interval: float) -> None:
    """Arms the next heartbeat from the deadlines of the latest answer."""
    held.heartbeat_deadline = deadlines.heartbeat
    held.ctx.deadlines = deadlines
    held.next_beat = time.monotonic() + beat_interval(deadlines.heartbeat, max_interval)


def result_payload(value: Any) -> JSON:
    """A handler's return value as a result: ``None`` becomes ``{}`` (Baton refuses a null
    result); anything else must be JSON-serialisable, else :class:`NonRetryable` of the kind
    ``TypeError`` or ``ValueError`` (running the handler again would not change that)."""
    if value is None:
        return {}
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NonRetryable(
            f"the result is not JSON-serialisable: {exc}", kind=type(exc).__name__
        ) from exc
    return value


def failure_of(exc: BaseException) -> Tuple[str, str, bool]:
    """The error report for a handler's exception: kind, message, retryable."""
    kind = type(exc).__name__
    if isinstance(exc, NonRetryable) and exc.kind:
        kind = exc.kind
    message = str(exc) or kind
    if len(message) > MESSAGE_CHARS_MAX:
        message = message[: MESSAGE_CHARS_MAX - 1] + "…"
    return kind, message, not isinstance(exc, NonRetryable)


def transient(exc: BaseException) -> bool:
    """Whether trying the same request again later may succeed."""
    return isinstance(exc, (ConnectionFailed, Unavailable))


def lease_lost(exc: BaseException) -> Optional[str]:
    """The reason to give up a task after a refused report, if the refusal means the lease is
    gone (cancelled, reassigned, timed out, task deleted)."""
    if isinstance(exc, (Conflict, NotFound)):
        return exc.code
    return None


def retry_pause(attempt: int, exc: BaseException) -> float:
    """Seconds to wait before try ``attempt + 1`` of a request that failed transiently."""
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, (int, float)) and hint > 0:
        return min(float(hint), CLAIM_BACKOFF_MAX_S)
    return min(0.2 * float(2**attempt), CLAIM_BACKOFF_MAX_S)


def describe(exc: BaseException) -> str:
    """A short description of a failed request, for logs."""
    if isinstance(exc, BatonError):
        return f"{exc.status} {exc.code}: {exc.detail}"
    return repr(exc)
