"""The asyncio agent runner: a claim loop, a heartbeat loop and one asyncio task per held
task; plain (blocking) handlers run in a pool of ``concurrency`` threads."""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, TypeVar

from . import _runtime as rt
from .client import AsyncClient
from .context import TaskContext
from .errors import BatonError, NotFound
from .types import ClaimedTask

if TYPE_CHECKING:
    from .agent import Agent, Handler

T = TypeVar("T")

POLL_S = 0.2
"""Longest a loop sleeps without looking at the stop flag."""


class AsyncRunner:
    """Runs one :class:`~baton.Agent` on the running event loop until it is stopped."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.log = agent.log
        self.client = AsyncClient(
            agent.url,
            agent.token,
            timeout=agent.request_timeout,
            max_connections=agent.concurrency + 4,
        )
        self.held: Dict[str, rt.Held] = {}
        self.tasks: Dict["asyncio.Task[None]", rt.Held] = {}
        self.pool = ThreadPoolExecutor(
            max_workers=agent.concurrency, thread_name_prefix="baton-handler"
        )
        self.last_contact = time.monotonic()

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.stopped = asyncio.Event()
        self.changed = asyncio.Event()
        self.wake_beats = asyncio.Event()
        self.agent._on_stop.append(lambda: self._threadsafe(self.stopped.set))
        if self.agent.stopping:
            self.stopped.set()
        sigterm = self._install_sigterm(loop)
        interrupted = False
        try:
            await self._register()
            claimer = asyncio.ensure_future(self._claim_loop())
            beater = asyncio.ensure_future(self._beat_loop())
            try:
                await self.stopped.wait()
            except asyncio.CancelledError:
                interrupted = True
                self.agent.stop()
            interrupted = await self._shutdown(claimer, beater) or interrupted
        finally:
            if sigterm:
                loop.remove_signal_handler(signal.SIGTERM)
            await self.client.aclose()
            self.pool.shutdown(wait=False)
        if interrupted:
            raise asyncio.CancelledError()

    def _install_sigterm(self, loop: asyncio.AbstractEventLoop) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            loop.add_signal_handler(signal.SIGTERM, self.agent.stop)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def _threadsafe(self, fn: Callable[[], None]) -> None:
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:
            pass

    async def _register(self) -> None:
        view = await self._retrying(
            lambda: self.client.register_agent(
                self.agent.name,
                self.agent.capabilities,
                self.agent.concurrency,
                agent_id=self.agent.id,
            ),
            until_stopped=True,
        )
        self.agent.id = view.id
        self.log.info("agent %s registered as %s", self.agent.name, view.id)

    async def _shutdown(
        self, claimer: "asyncio.Future[None]", beater: "asyncio.Future[None]"
    ) -> bool:
        """Returns whether it was cancelled (and so skipped the grace period)."""
        interrupted = False
        try:
            await asyncio.shield(claimer)
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=self.agent.shutdown_grace)
        except asyncio.CancelledError:
            interrupted = True
            self.log.info("cancelled again: skipping the grace period")
        await asyncio.gather(
            *(self._release(h, "agent_stopping") for h in list(self.held.values()))
        )
        for task, held in list(self.tasks.items()):
            if held.released:
                task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.agent.request_timeout)
        beater.cancel()
        claimer.cancel()
        await asyncio.gather(beater, claimer, return_exceptions=True)
        return interrupted

    # ---- claiming -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            free = self.agent.concurrency - len(self.held)
            if free <= 0:
                self.changed.clear()
                await _wait(self.changed, POLL_S)
                continue
            try:
                claimed = await self.client.claim(
                    self._agent_id, min(free, self.agent.claim_max), self.agent.claim_wait_ms
                )
            except Exception as exc:
                failures += 1
                self.log.warning("claim failed: %s", rt.describe(exc))
                if isinstance(exc, NotFound) and exc.code == "agent_not_found":
                    await self._register_again()
                await _wait(self.stopped, rt.retry_pause(failures, exc))
                continue
            failures = 0
            self._heard_from()
            for c in claimed:
                await self._take(c)

    async def _register_again(self) -> None:
        try:
            await self._register()
        except BatonError as exc:
            self.log.warning("registering again failed: %s", rt.describe(exc))

    async def _take(self, claimed: ClaimedTask) -> None:
        ctx = TaskContext(claimed, self._agent_id, lambda: self._threadsafe(self.wake_beats.set))
        held = rt.Held(claimed, ctx)
        if self.stopped.is_set():
            await self._release(held, "agent_stopping")
            return
        self.held[claimed.task] = held
        task = asyncio.ensure_future(self._work(held))
        self.tasks[task] = held
        task.add_done_callback(lambda t: self._done(t, held))

    def _done(self, task: "asyncio.Task[None]", held: rt.Held) -> None:
        self.tasks.pop(task, None)
        self._forget(held)
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "task %s: unexpected failure in the agent",
                held.claimed.task,
                exc_info=task.exception(),
            )

    def _forget(self, held: rt.Held) -> None:
        self.held.pop(held.claimed.task, None)
        self.changed.set()

    # ---- working ------------------------------------------------------------------------------

    async def _work(self, held: rt.Held) -> None:
        c = held.claimed
        try:
            answer = await self._report(
                held, lambda: self.client.report_started(c.task, self._agent_id, c.token)
            )
        except BatonError:
            return
        rt.schedule(held, answer.deadlines, self.agent.heartbeat_max_interval)
        held.executing = True
        self.wake_beats.set()
        handler = await self._choose(held)
        if handler is None:
            return
        try:
            result = rt.result_payload(await self._call(handler, c.input, held.ctx))
        except asyncio.CancelledError:
            if held.released:
                return
            raise
        except Exception as exc:
            await self._finish_failed(held, exc)
            return
        await self._finish(
            held, lambda: self.client.report_succeeded(c.task, self._agent_id, c.token, result)
        )

    async def _choose(self, held: rt.Held) -> Optional["Handler"]:
        c = held.claimed
        required = None
        if self.agent.needs_lookup:
            try:
                view = await self._retrying(lambda: self.client.get_task(c.task))
                required = view.spec.get("capabilities", [])
            except BatonError as exc:
                self.log.warning(
                    "task %s: cannot look up its capabilities (%s)", c.task, rt.describe(exc)
                )
                await self._release(held, "lookup_failed")
                return None
        handler = self.agent.handler_for(required)
        if handler is None:
            message = (
                f"agent {self.agent.name} has no handler for capabilities {sorted(required or [])}"
            )
            await self._finish(
                held,
                lambda: self.client.report_failed(
                    c.task, self._agent_id, c.token, "no_handler", message
                ),
            )
        return handler

    async def _call(self, handler: "Handler", value: Any, ctx: TaskContext) -> Any:
        if _is_async(handler):
            return await handler(value, ctx)
        out = await self.loop.run_in_executor(self.pool, handler, value, ctx)
        if inspect.isawaitable(out):
            return await out
        return out

    async def _finish_failed(self, held: rt.Held, exc: BaseException) -> None:
        c = held.claimed
        kind, message, retryable = rt.failure_of(exc)
        if not held.ctx.cancelled:
            self.log.info("task %s (%s) failed: %s: %s", c.task, c.key, kind, message)
        await self._finish(
            held,
            lambda: self.client.report_failed(
                c.task, self._agent_id, c.token, kind, message, retryable=retryable
            ),
        )

    async def _finish(self, held: rt.Held, send: Callable[[], Awaitable[Any]]) -> None:
        held.finished = True
        if held.released or held.ctx.cancelled:
            self.log.info(
                "task %s: %s, outcome not reported", held.claimed.task, held.ctx.cancel_reason
            )
            return
        try:
            await self._report(held, send)
        except BatonError:
            pass

    async def _release(self, held: rt.Held, reason: str) -> None:
        c = held.claimed
        if held.released or held.finished:
            return
        held.released = True
        held.ctx._cancel(reason)
        try:
            await self._retrying(
                lambda: self.client.report_released(c.task, self._agent_id, c.token)
            )
            self.log.info("task %s released (%s)", c.task, reason)
        except BatonError as exc:
            self.log.warning("task %s: release refused: %s", c.task, rt.describe(exc))

    async def _report(self, held: rt.Held, send: Callable[[], Awaitable[T]]) -> T:
        """Sends a report, retrying transient failures; a refusal meaning the lease is gone
        cancels the handler's context. Raises the final failure."""
        try:
            answer = await self._retrying(send)
        except BatonError as exc:
            reason = rt.lease_lost(exc)
            if reason is not None:
                held.ctx._cancel(reason)
            self.log.warning("task %s: report refused: %s", held.claimed.task, rt.describe(exc))
            raise
        self._heard_from()
        return answer

    async def _retrying(self, send: Callable[[], Awaitable[T]], until_stopped: bool = False) -> T:
        attempt = 0
        while True:
            try:
                return await send()
            except BatonError as exc:
                attempt += 1
                give_up = attempt >= rt.REPORT_ATTEMPTS and not until_stopped
                if not rt.transient(exc) or give_up or (until_stopped and self.agent.stopping):
                    raise
                await asyncio.sleep(rt.retry_pause(attempt, exc))

    # ---- heartbeats ---------------------------------------------------------------------------

    def _heard_from(self) -> None:
        self.last_contact = time.monotonic()

    async def _beat_loop(self) -> None:
        while True:
            self.wake_beats.clear()
            now = time.monotonic()
            wake_at = now + self.agent.keepalive_interval
            due: List[rt.Held] = []
            for held in self.held.values():
                if not held.beating:
                    continue
                if held.next_beat <= now or held.ctx._progress_pending:
                    due.append(held)
                else:
                    wake_at = min(wake_at, held.next_beat)
            keepalive = now - self.last_contact >= self.agent.keepalive_interval
            if not due and not keepalive:
                await _wait(self.wake_beats, max(0.0, min(wake_at - now, POLL_S * 5)))
                continue
            await asyncio.gather(*(self._beat(h) for h in due))
            if keepalive:
                await self._keepalive()

    async def _beat(self, held: rt.Held) -> None:
        c = held.claimed
        progress = held.ctx._take_progress()
        try:
            answer = await self.client.report_heartbeat(c.task, self._agent_id, c.token, progress)
        except BatonError as exc:
            reason = rt.lease_lost(exc)
            if reason is not None:
                self.log.info(
                    "task %s: heartbeat refused (%s): cancelling its handler", c.task, reason
                )
                held.ctx._cancel(reason)
            else:
                self.log.warning("task %s: heartbeat failed: %s", c.task, rt.describe(exc))
                held.next_beat = time.monotonic() + rt.BEAT_MIN_S * 4
            return
        self._heard_from()
        if answer.cancelled:
            held.ctx._cancel("task_cancelled")
        rt.schedule(held, answer.deadlines, self.agent.heartbeat_max_interval)

    async def _keepalive(self) -> None:
        try:
            await self.client.agent_heartbeat(self._agent_id)
            self._heard_from()
        except BatonError as exc:
            self.log.warning("agent keep-alive failed: %s", rt.describe(exc))
            self.last_contact = time.monotonic() - self.agent.keepalive_interval / 2

    @property
    def _agent_id(self) -> str:
        assert self.agent.id is not None
        return self.agent.id


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass
