"""Report batching for the agent's runners: reports go to one sender, which sends whatever
queued while its previous batch was in flight as one ``POST /v1/reports``
(:meth:`~baton.Client.reports`). A lone report goes at once; under load, reports share
requests (and the server's commits) without waiting on a timer.

:class:`ReportBatcher` serves the blocking runner (a thread sends), :class:`AsyncReportBatcher`
the asyncio one (a task sends). Both hand each report's outcome (its answer, or the error its
own request would have raised) to the callback it was submitted with; a request that fails as
a whole (not delivered, 5xx, 429) hands every report in it that same error, so the core tries
each again as it would a single report (reports are safe to resend).

Bounds: a batch carries at most :data:`~baton.REPORTS_PER_BATCH_MAX` reports and at most
:data:`BATCH_BYTES_MAX` bytes of JSON, whatever the size of the results in it (the server refuses
a body over 8 MiB whole, with 413 for every report in it): each report's size is measured when
the sender takes it from the queue, one that would take the batch past the cap waits for the
next batch, and one larger than the cap on its own is sent alone, as its own request
(``POST /v1/tasks/{task}/{report}``), its outcome handed back the same way. At most
``queued_max`` wait (the runner passes its concurrency: the core has at most one request per
held task out), and more is a bug in the caller (asserted).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from typing import Callable, Deque, List, Optional, Tuple, Union

from . import _ops
from .client import AsyncClient, Client
from .types import REPORTS_PER_BATCH_MAX, Report, ReportAnswer, report_to_json

BATCH_BYTES_MAX = 1024 * 1024
"""Most bytes of JSON (UTF-8, as sent) the reports of one batch carry: well under the server's
body limit (8 MiB) however large the results in them (up to 1 MiB each by default, more with a
raised ``--payload-bytes-max``). A report larger than this on its own is sent alone."""

Outcome = Union[ReportAnswer, BaseException]
"""A report's answer, or why it was not answered."""

Done = Callable[[Outcome], None]
"""Called once with a report's outcome, from the sender (its thread, or the event loop)."""

Queued = Tuple[Report, Done]


def _size(report: Report) -> int:
    """The report's size as JSON, in bytes, as the request will carry it (as ``_ops`` encodes
    bodies); one that cannot be encoded counts as too large to share a batch, so that its own
    request raises the error for it alone."""
    try:
        return len(json.dumps(report_to_json(report), allow_nan=False).encode())
    except (TypeError, ValueError):
        return BATCH_BYTES_MAX + 1


class _Waiting:
    """The reports waiting for the sender, oldest first, and which it takes next. Not
    thread-safe: the blocking batcher uses it under its lock."""

    def __init__(self) -> None:
        self._queued: Deque[Queued] = deque()
        self._first_bytes: Optional[int] = None
        """The size of the first report queued, once measured (it was carried over)."""

    def __len__(self) -> int:
        return len(self._queued)

    def append(self, item: Queued) -> None:
        self._queued.append(item)

    def clear(self) -> None:
        self._queued.clear()
        self._first_bytes = None

    def take(self) -> Tuple[List[Queued], bool]:
        """The next batch: what queued, oldest first, within :data:`REPORTS_PER_BATCH_MAX`
        reports and :data:`BATCH_BYTES_MAX` bytes; the report that would go past the byte cap
        stays first for the next batch. With ``True``: a lone report larger than the cap, to be
        sent on its own. Empty when nothing waits."""
        batch: List[Queued] = []
        total = 0
        while self._queued and len(batch) < REPORTS_PER_BATCH_MAX:
            size = self._first_bytes
            if size is None:
                size = _size(self._queued[0][0])
            self._first_bytes = None
            if size > BATCH_BYTES_MAX and not batch:
                return [self._queued.popleft()], True
            if total + size > BATCH_BYTES_MAX:
                self._first_bytes = size  # measured already: carried to the next batch
                break
            total += size
            batch.append(self._queued.popleft())
        return batch, False


def _hand_out(batch: List[Queued], outcomes: List[Outcome]) -> None:
    for (_, done), outcome in zip(batch, outcomes):
        done(outcome)


class ReportBatcher:
    """Sends reports in batches from one daemon thread (see the module docs). Thread-safe."""

    def __init__(self, client: Client, queued_max: int) -> None:
        self._client = client
        self._queued_max = queued_max
        self._queued = _Waiting()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._send_batches, name="baton-reports", daemon=True
        )
        self._thread.start()

    def submit(self, report: Report, done: Done) -> None:
        """Queues ``report`` for the next batch (sent at once if none is in flight)."""
        with self._changed:
            assert len(self._queued) < self._queued_max, "more reports queued than tasks held"
            self._queued.append((report, done))
            self._changed.notify()

    def close(self) -> None:
        """Stops the sender once its batch in flight (if any) is answered; what still waits
        is abandoned, as the runner abandons whatever is in flight when the agent is done."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _send_batches(self) -> None:
        while True:
            with self._changed:
                while not self._queued and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                batch, alone = self._queued.take()
            outcomes: List[Outcome]
            try:
                if alone:
                    outcomes = [self._client._call(_ops.report(batch[0][0]))]
                else:
                    outcomes = list(self._client.reports([r for r, _ in batch]))
            except Exception as exc:  # every report in the request gets its failure
                outcomes = [exc] * len(batch)
            _hand_out(batch, outcomes)


class AsyncReportBatcher:
    """Sends reports in batches from one asyncio task, started when a report arrives and none
    is running, ending when nothing is left (see the module docs). Used from the event loop
    only."""

    def __init__(self, client: AsyncClient, queued_max: int) -> None:
        self._client = client
        self._queued_max = queued_max
        self._queued = _Waiting()
        self._sender: Optional["asyncio.Future[None]"] = None

    def submit(self, report: Report, done: Done) -> None:
        """Queues ``report`` for the next batch (sent at once if none is in flight)."""
        assert len(self._queued) < self._queued_max, "more reports queued than tasks held"
        self._queued.append((report, done))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_batches())

    async def aclose(self) -> None:
        """Stops the sender, abandoning its batch in flight and what still waits."""
        sender, self._sender = self._sender, None
        self._queued.clear()
        if sender is not None:
            sender.cancel()
            await asyncio.wait({sender})

    async def _send_batches(self) -> None:
        try:
            # No await between the last look at the queue and the end of this task: a report
            # submitted meanwhile either is seen here or starts the next sender.
            while self._queued:
                batch, alone = self._queued.take()
                outcomes: List[Outcome]
                try:
                    if alone:
                        outcomes = [await self._client._call(_ops.report(batch[0][0]))]
                    else:
                        outcomes = list(await self._client.reports([r for r, _ in batch]))
                except Exception as exc:  # every report in the request gets its failure
                    outcomes = [exc] * len(batch)
                _hand_out(batch, outcomes)
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None
