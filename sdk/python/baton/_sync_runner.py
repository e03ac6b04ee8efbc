"""The blocking agent runner: one claim thread, ``concurrency`` worker threads, one heartbeat
thread; the calling thread waits for a stop and shuts down."""

from __future__ import annotations

import asyncio
import inspect
import queue
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, TypeVar

from . import _runtime as rt
from .client import Client
from .context import TaskContext
from .errors import BatonError, NotFound
from .types import ClaimedTask

if TYPE_CHECKING:
    from .agent import Agent, Handler

T = TypeVar("T")

POLL_S = 0.2
"""How often waiting threads look at the stop flag."""


class SyncRunner:
    """Runs one :class:`~baton.Agent` until it is stopped."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.log = agent.log
        self.client = Client(
            agent.url,
            agent.token,
            timeout=agent.request_timeout,
            max_connections=agent.concurrency + 4,
        )
        self.cond = threading.Condition()
        self.held: Dict[str, rt.Held] = {}
        # Holds at most the held tasks not yet started plus one stop sentinel per worker.
        self.work: "queue.Queue[Optional[rt.Held]]" = queue.Queue(maxsize=2 * agent.concurrency)
        self.beats_done = threading.Event()
        self.last_contact = time.monotonic()

    # ---- lifecycle ----------------------------------------------------------------------------

    def run(self, handle_signals: bool) -> None:
        restore = self._install_sigterm() if handle_signals else None
        try:
            self._register()
            threads = [threading.Thread(target=self._claim_loop, name="baton-claim", daemon=True)]
            threads.append(
                threading.Thread(target=self._beat_loop, name="baton-heartbeat", daemon=True)
            )
            threads += [
                threading.Thread(target=self._worker, name=f"baton-worker-{i}", daemon=True)
                for i in range(self.agent.concurrency)
            ]
            for t in threads:
                t.start()
            try:
                while not self.agent._stopping.wait(POLL_S):
                    pass
            except KeyboardInterrupt:
                self.log.info("interrupted: stopping")
                self.agent.stop()
            self._shutdown(threads[0], threads[1])
        finally:
            if restore is not None:
                restore()
            self.client.close()

    def _install_sigterm(self) -> Optional[Callable[[], None]]:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda signum, frame: self.agent.stop())

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        return restore

    def _register(self) -> None:
        view = self._retrying(
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

    def _shutdown(self, claimer: threading.Thread, beater: threading.Thread) -> None:
        try:
            claimer.join()
            deadline = time.monotonic() + self.agent.shutdown_grace
            with self.cond:
                while self.held and time.monotonic() < deadline:
                    self.cond.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            self.log.info("interrupted again: skipping the grace period")
        with self.cond:
            left = list(self.held.values())
        for held in left:
            self._release(held, "agent_stopping")
        deadline = time.monotonic() + self.agent.request_timeout
        with self.cond:
            while self._reporting() and time.monotonic() < deadline:
                self.cond.wait(POLL_S)
        for _ in range(self.agent.concurrency):
            self.work.put_nowait(None)
        self.beats_done.set()
        with self.cond:
            self.cond.notify_all()
        beater.join(timeout=self.agent.request_timeout)

    def _reporting(self) -> bool:
        return any(h.finished and not h.released for h in self.held.values())

    # ---- claiming -----------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        failures = 0
        while not self.agent.stopping:
            with self.cond:
                free = self.agent.concurrency - len(self.held)
                if free <= 0:
                    self.cond.wait(POLL_S)
                    continue
            try:
                claimed = self.client.claim(
                    self._agent_id, min(free, self.agent.claim_max), self.agent.claim_wait_ms
                )
            except Exception as exc:
                failures += 1
                self.log.warning("claim failed: %s", rt.describe(exc))
                if isinstance(exc, NotFound) and exc.code == "agent_not_found":
                    self._register_again()
                self.agent._stopping.wait(rt.retry_pause(failures, exc))
                continue
            failures = 0
            self._heard_from()
            for c in claimed:
                self._take(c)

    def _register_again(self) -> None:
        try:
            self._register()
        except BatonError as exc:
            self.log.warning("registering again failed: %s", rt.describe(exc))

    def _take(self, claimed: ClaimedTask) -> None:
        ctx = TaskContext(claimed, self._agent_id, self._wake)
        held = rt.Held(claimed, ctx)
        if self.agent.stopping:
            self._release(held, "agent_stopping")
            return
        with self.cond:
            self.held[claimed.task] = held
        self.work.put(held)

    # ---- working ------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            held = self.work.get()
            if held is None:
                return
            try:
                self._work(held)
            except Exception:
                self.log.exception("task %s: unexpected failure in the agent", held.claimed.task)
            finally:
                with self.cond:
                    self.held.pop(held.claimed.task, None)
                    self.cond.notify_all()

    def _work(self, held: rt.Held) -> None:
        c = held.claimed
        if held.released:
            return
        try:
            answer = self._report(
                held, lambda: self.client.report_started(c.task, self._agent_id, c.token)
            )
        except BatonError:
            return
        with self.cond:
            rt.schedule(held, answer.deadlines, self.agent.heartbeat_max_interval)
            held.executing = True
            self.cond.notify_all()
        handler = self._choose(held)
        if handler is None:
            return
        try:
            result = rt.result_payload(self._call(handler, c.input, held.ctx))
        except BaseException as exc:  # noqa: B036 - a worker thread reports whatever ends a handler
            self._finish_failed(held, exc)
            return
        self._finish(
            held, lambda: self.client.report_succeeded(c.task, self._agent_id, c.token, result)
        )

    def _choose(self, held: rt.Held) -> Optional["Handler"]:
        c = held.claimed
        required = None
        if self.agent.needs_lookup:
            try:
                required = self._retrying(lambda: self.client.get_task(c.task)).spec.get(
                    "capabilities", []
                )
            except BatonError as exc:
                self.log.warning(
                    "task %s: cannot look up its capabilities (%s)", c.task, rt.describe(exc)
                )
                self._release(held, "lookup_failed")
                return None
        handler = self.agent.handler_for(required)
        if handler is None:
            message = (
                f"agent {self.agent.name} has no handler for capabilities {sorted(required or [])}"
            )
            self._finish(
                held,
                lambda: self.client.report_failed(
                    c.task, self._agent_id, c.token, "no_handler", message
                ),
            )
        return handler

    @staticmethod
    def _call(handler: "Handler", value: Any, ctx: TaskContext) -> Any:
        out = handler(value, ctx)
        if inspect.isawaitable(out):
            return asyncio.run(_awaited(out))
        return out

    def _finish_failed(self, held: rt.Held, exc: BaseException) -> None:
        c = held.claimed
        kind, message, retryable = rt.failure_of(exc)
        if not held.ctx.cancelled:
            self.log.info("task %s (%s) failed: %s: %s", c.task, c.key, kind, message)
        self._finish(
            held,
            lambda: self.client.report_failed(
                c.task, self._agent_id, c.token, kind, message, retryable=retryable
            ),
        )

    def _finish(self, held: rt.Held, send: Callable[[], Any]) -> None:
        with self.cond:
            held.finished = True
            skip = held.released or held.ctx.cancelled
        if skip:
            self.log.info(
                "task %s: %s, outcome not reported", held.claimed.task, held.ctx.cancel_reason
            )
            return
        try:
            self._report(held, send)
        except BatonError:
            pass

    def _release(self, held: rt.Held, reason: str) -> None:
        c = held.claimed
        with self.cond:
            if held.released or held.finished:
                return
            held.released = True
        held.ctx._cancel(reason)
        try:
            self._retrying(lambda: self.client.report_released(c.task, self._agent_id, c.token))
            self.log.info("task %s released (%s)", c.task, reason)
        except BatonError as exc:
            self.log.warning("task %s: release refused: %s", c.task, rt.describe(exc))

    def _report(self, held: rt.Held, send: Callable[[], T]) -> T:
        """Sends a report, retrying transient failures; a refusal meaning the lease is gone
        cancels the handler's context. Raises the final failure."""
        try:
            answer = self._retrying(send)
        except BatonError as exc:
            reason = rt.lease_lost(exc)
            if reason is not None:
                held.ctx._cancel(reason)
            self.log.warning("task %s: report refused: %s", held.claimed.task, rt.describe(exc))
            raise
        self._heard_from()
        return answer

    def _retrying(self, send: Callable[[], T], until_stopped: bool = False) -> T:
        attempt = 0
        while True:
            try:
                return send()
            except BatonError as exc:
                attempt += 1
                give_up = attempt >= rt.REPORT_ATTEMPTS and not until_stopped
                if not rt.transient(exc) or give_up or (until_stopped and self.agent.stopping):
                    raise
                time.sleep(rt.retry_pause(attempt, exc))

    # ---- heartbeats ---------------------------------------------------------------------------

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def _heard_from(self) -> None:
        self.last_contact = time.monotonic()

    def _beat_loop(self) -> None:
        while not self.beats_done.is_set():
            due: List[rt.Held] = []
            with self.cond:
                now = time.monotonic()
                wake_at = now + self.agent.keepalive_interval
                for held in self.held.values():
                    if not held.beating:
                        continue
                    if held.next_beat <= now or held.ctx._progress_pending:
                        due.append(held)
                    else:
                        wake_at = min(wake_at, held.next_beat)
                keepalive = now - self.last_contact >= self.agent.keepalive_interval
                if not due and not keepalive:
                    self.cond.wait(max(0.0, min(wake_at - now, POLL_S * 5)))
                    continue
            for held in due:
                self._beat(held)
            if keepalive:
                self._keepalive()

    def _beat(self, held: rt.Held) -> None:
        c = held.claimed
        progress = held.ctx._take_progress()
        try:
            answer = self.client.report_heartbeat(c.task, self._agent_id, c.token, progress)
        except BatonError as exc:
            reason = rt.lease_lost(exc)
            if reason is not None:
                self.log.info(
                    "task %s: heartbeat refused (%s): cancelling its handler", c.task, reason
                )
                held.ctx._cancel(reason)
            else:
                self.log.warning("task %s: heartbeat failed: %s", c.task, rt.describe(exc))
                with self.cond:
                    held.next_beat = time.monotonic() + rt.BEAT_MIN_S * 4
            return
        self._heard_from()
        if answer.cancelled:
            held.ctx._cancel("task_cancelled")
        with self.cond:
            rt.schedule(held, answer.deadlines, self.agent.heartbeat_max_interval)

    def _keepalive(self) -> None:
        try:
            self.client.agent_heartbeat(self._agent_id)
            self._heard_from()
        except BatonError as exc:
            self.log.warning("agent keep-alive failed: %s", rt.describe(exc))
            self.last_contact = time.monotonic() - self.agent.keepalive_interval / 2

    @property
    def _agent_id(self) -> str:
        assert self.agent.id is not None
        return self.agent.id


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
