"""The blocking driver of :class:`~baton._core.AgentCore`: one thread owns the core, daemon
threads carry out its requests (``httpx.Client``; reports through a
:class:`~baton._batch.ReportBatcher` when the agent batches them) and run its handlers; the
calling thread waits for the end and turns Ctrl-C into a stop. No decision is taken here."""

from __future__ import annotations

import asyncio
import functools
import inspect
import queue
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from . import _core as core
from ._batch import Outcome, ReportBatcher
from .client import Client

if TYPE_CHECKING:
    from .agent import Agent

POLL_S = 0.2
"""How often the calling thread looks up from waiting (Ctrl-C is seen in between)."""


class SyncRunner:
    """Runs one :class:`~baton.Agent` until it is stopped."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.client = Client(
            agent.url,
            agent.token,
            timeout=agent.request_timeout,
            max_connections=agent.concurrency + 4,
        )
        # A SimpleQueue, because agent.stop() may put into it from a signal handler.
        self.events: "queue.SimpleQueue[core.Event]" = queue.SimpleQueue()
        self.core = core.AgentCore(
            agent, lambda: self.events.put(core.Wake()), self._fetch_upstream
        )
        self.requests = _Threads("baton-request", agent.concurrency + 3)
        # At most one request per held task is out, so at most `concurrency` reports queue.
        self.batcher = (
            ReportBatcher(self.client, agent.concurrency) if agent.batch_reports else None
        )
        self.handlers = _Threads("baton-worker", agent.concurrency)
        self.ended = threading.Event()
        self.error: Optional[BaseException] = None

    def _fetch_upstream(self, task_id: str, key: str) -> Any:
        """A withheld upstream result, read from a handler's thread."""
        return self.client.task_upstream(task_id, key=key)[key]["result"]

    def run(self, handle_signals: bool) -> None:
        restore = self._install_sigterm() if handle_signals else None
        self.agent._on_stop.append(lambda: self.events.put(core.Stop()))
        if self.agent.stopping:
            self.events.put(core.Stop())
        try:
            threading.Thread(target=self._drive, name="baton-agent", daemon=True).start()
            self._wait()
        finally:
            if restore is not None:
                restore()
            self.requests.close()
            self.handlers.close()
            if self.batcher is not None:
                self.batcher.close()
            self.client.close()
        if self.error is not None:
            raise self.error

    def _wait(self) -> None:
        while True:
            try:
                while not self.ended.wait(POLL_S):
                    pass
                return
            except KeyboardInterrupt:
                if self.agent.stopping:
                    self.agent.log.info("interrupted again: skipping the grace period")
                    self.events.put(core.Hurry())
                else:
                    self.agent.log.info("interrupted: stopping")
                    self.agent.stop()

    def _install_sigterm(self) -> Optional[Callable[[], None]]:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda signum, frame: self.agent.stop())

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)

        return restore

    def _drive(self) -> None:
        try:
            self._perform(self.core.start(core.Instant.read()))
            while not self.core.done:
                events = self._arrivals(self.core.timeout(core.Instant.read().mono))
                self._perform(self.core.handle_all(events, core.Instant.read()))
        except BaseException as exc:  # noqa: B036 - a bug in the core: handed to run()'s caller
            self.error = exc
        finally:
            self.ended.set()

    def _arrivals(self, timeout: Optional[float]) -> List[core.Event]:
        """What arrived within ``timeout`` seconds: all of it, else ``Wake``."""
        try:
            events = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return [core.Wake()]
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return events

    def _perform(self, actions: List[core.Action]) -> None:
        for action in actions:
            if isinstance(action, core.Send):
                report = action.request.as_report()
                if self.batcher is not None and report is not None:
                    self.batcher.submit(report, functools.partial(self._reported, action.request))
                else:
                    self.requests.submit(self._send, action.request)
            elif isinstance(action, core.Run):
                self.handlers.submit(self._run, action)
            elif isinstance(action, core.Log):
                action.emit(self.agent.log)
            else:
                self.error = action.error

    def _send(self, request: core.Request) -> None:
        try:
            value = request.call(self.client)
        except Exception as exc:
            self.events.put(core.Refused(request, exc))
        else:
            self.events.put(core.Answered(request, value))

    def _reported(self, request: core.Request, outcome: Outcome) -> None:
        """A batched report's outcome, from the batcher's thread."""
        if isinstance(outcome, BaseException):
            self.events.put(core.Refused(request, outcome))
        else:
            self.events.put(core.Answered(request, outcome))

    def _run(self, run: core.Run) -> None:
        try:
            value = run.handler(run.input, run.ctx)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
        except BaseException as exc:  # noqa: B036 - whatever ends a handler is its outcome
            self.events.put(core.Raised(run.task, exc))
        else:
            self.events.put(core.Returned(run.task, value))


class _Threads:
    """At most ``size`` daemon threads (so that a stuck handler never holds the process up),
    started as work arrives. The core keeps the work in flight within ``size``."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.jobs: "queue.SimpleQueue[Optional[Tuple[Callable[..., None], Any]]]" = (
            queue.SimpleQueue()
        )
        self.lock = threading.Lock()
        self.started = 0
        self.busy = 0

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        with self.lock:
            self.busy += 1
            if self.busy > self.started and self.started < self.size:
                self.started += 1
                name = f"{self.name}-{self.started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()
        self.jobs.put((fn, arg))

    def close(self) -> None:
        """Ends the threads once they are idle."""
        for _ in range(self.started):
            self.jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, arg = job
            try:
                fn(arg)
            finally:
                with self.lock:
                    self.busy -= 1


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
