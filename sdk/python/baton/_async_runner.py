"""The asyncio driver of :class:`~baton._core.AgentCore`: the running coroutine owns the core,
one asyncio task per request (``httpx.AsyncClient``; reports through an
:class:`~baton._batch.AsyncReportBatcher` when the agent batches them) and per handler carries
out its actions; plain (blocking) handlers run in a pool of ``concurrency`` threads. No
decision is taken here."""

from __future__ import annotations

import asyncio
import functools
import inspect
import signal
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Deque, List, Optional, Set

from . import _core as core
from ._batch import AsyncReportBatcher, Outcome
from .client import AsyncClient, Client

if TYPE_CHECKING:
    from .agent import Agent


class AsyncRunner:
    """Runs one :class:`~baton.Agent` on the running event loop until it is stopped."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.client = AsyncClient(
            agent.url,
            agent.token,
            timeout=agent.request_timeout,
            max_connections=agent.concurrency + 4,
        )
        self.pool = ThreadPoolExecutor(
            max_workers=agent.concurrency, thread_name_prefix="baton-handler"
        )
        # At most one request per held task is out, so at most `concurrency` reports queue.
        self.batcher = (
            AsyncReportBatcher(self.client, agent.concurrency) if agent.batch_reports else None
        )
        self.inbox: Deque[core.Event] = deque()
        self.jobs: Set["asyncio.Future[None]"] = set()
        self.error: Optional[BaseException] = None

    def _fetch_upstream(self, task_id: str, key: str) -> Any:
        """A withheld upstream result. A handler may run on the event loop itself, so this is a
        blocking request on a connection of its own, never one that waits for the loop."""
        with Client(self.agent.url, self.agent.token, timeout=self.agent.request_timeout) as c:
            return c.task_upstream(task_id, key=key)[key]["result"]

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.arrived = asyncio.Event()
        self.core = core.AgentCore(
            self.agent, lambda: self._threadsafe(core.Wake()), self._fetch_upstream
        )
        self.agent._on_stop.append(lambda: self._threadsafe(core.Stop()))
        if self.agent.stopping:
            self._push(core.Stop())
        sigterm = self._install_sigterm()
        cancelled = False
        try:
            self._perform(self.core.start(core.Instant.read()))
            while not self.core.done:
                try:
                    await self._arrival()
                except asyncio.CancelledError:
                    cancelled = self._cancelled(cancelled)
                events = list(self.inbox)
                self.inbox.clear()
                self._perform(self.core.handle_all(events, core.Instant.read()))
        finally:
            if sigterm:
                self.loop.remove_signal_handler(signal.SIGTERM)
            await self._abandon()
            if self.batcher is not None:
                await self.batcher.aclose()
            await self.client.aclose()
            self.pool.shutdown(wait=False)
        if self.error is not None:
            raise self.error
        if cancelled:
            raise asyncio.CancelledError()

    def _cancelled(self, before: bool) -> bool:
        """A cancellation of :meth:`run` is a stop; a second one skips the grace period."""
        if before or self.agent.stopping:
            self.agent.log.info("cancelled again: skipping the grace period")
            self._push(core.Hurry())
        else:
            self.agent.stop()
        return True

    async def _arrival(self) -> None:
        """Waits for an event, or until the core's next timer (then feeds it ``Wake``)."""
        if self.inbox:
            return
        self.arrived.clear()
        try:
            await asyncio.wait_for(self.arrived.wait(), self.core.timeout(core.Instant.read().mono))
        except asyncio.TimeoutError:
            self._push(core.Wake())

    def _install_sigterm(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            self.loop.add_signal_handler(signal.SIGTERM, self.agent.stop)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def _push(self, event: core.Event) -> None:
        self.inbox.append(event)
        self.arrived.set()

    def _threadsafe(self, event: core.Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self._push, event)
        except RuntimeError:  # the loop is closed: the agent is gone
            pass

    def _perform(self, actions: List[core.Action]) -> None:
        for action in actions:
            if isinstance(action, core.Send):
                report = action.request.as_report()
                if self.batcher is not None and report is not None:
                    self.batcher.submit(report, functools.partial(self._reported, action.request))
                else:
                    self._spawn(self._send(action.request))
            elif isinstance(action, core.Run):
                self._spawn(self._run(action))
            elif isinstance(action, core.Log):
                action.emit(self.agent.log)
            else:
                self.error = action.error

    def _spawn(self, job: Awaitable[None]) -> None:
        future = asyncio.ensure_future(job)
        self.jobs.add(future)
        future.add_done_callback(self.jobs.discard)

    async def _abandon(self) -> None:
        """Cancels what the core no longer waits for (released handlers, a keep-alive)."""
        for job in self.jobs:
            job.cancel()
        if self.jobs:
            await asyncio.wait(set(self.jobs), timeout=self.agent.request_timeout)

    async def _send(self, request: core.Request) -> None:
        try:
            value = await request.call(self.client)
        except Exception as exc:
            self._push(core.Refused(request, exc))
        else:
            self._push(core.Answered(request, value))

    def _reported(self, request: core.Request, outcome: Outcome) -> None:
        """A batched report's outcome, on the event loop."""
        if isinstance(outcome, BaseException):
            self._push(core.Refused(request, outcome))
        else:
            self._push(core.Answered(request, outcome))

    async def _run(self, run: core.Run) -> None:
        try:
            if _is_async(run.handler):
                value = await run.handler(run.input, run.ctx)
            else:
                value = await self.loop.run_in_executor(self.pool, run.handler, run.input, run.ctx)
            if inspect.isawaitable(value):
                value = await value
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: B036 - whatever ends a handler is its outcome
            self._push(core.Raised(run.task, exc))
        else:
            self._push(core.Returned(run.task, value))


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
