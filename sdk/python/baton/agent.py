"""Agents: processes that claim tasks from Baton, run a handler for each, and report back.

::

    agent = baton.Agent("summarizer", concurrency=4)

    @agent.task("summarize")
    def summarize(input, ctx):
        ctx.progress({"pct": 50})
        return {"summary": input["text"][:100]}

    agent.run()            # or: await agent.run_async()

**Which handler runs a task.** ``@agent.task("cap")`` registers a handler for the capability
``cap``; ``@agent.task()`` registers the default handler. The agent registers with the union of
the decorated capabilities and the ``capabilities`` argument, so Baton only hands it tasks whose
required capabilities are all among them (tasks requiring none go to any agent). Then:

- an agent with a single handler (named or default) runs every task it claims with it;
- an agent with several handlers reads the task's required capabilities from its claim
  (``capabilities``) and runs the first handler, in decoration order, whose capability the
  task requires; failing that, the default handler;
  failing that, the attempt fails with the retryable error kind ``no_handler`` (so that the
  retry may land on another agent). Tasks needing several capabilities thus go to the handler
  decorated first among them: decorate the most specific one first.

**Results.** A handler returns any JSON-serialisable value; ``None`` is reported as ``{}``
because Baton refuses a ``null`` result. A value that does not serialise fails the attempt
with the non-retryable kind ``TypeError``/``ValueError``.

**Failures.** An exception fails the attempt with ``{"kind": <class name>, "message":
str(exc), "retryable": True}`` (a message past 8,192 characters is cut, as Baton takes at most
32,768 bytes); raise :class:`baton.NonRetryable` (or a subclass) to fail the
task for good at once. The task's retry policy decides what follows a retryable failure.

**Starting.** With ``start_on_claim=True``, claims ask Baton to start the tasks they hand out
(off by default: a task started so whose first heartbeat a crash delays past its start timeout
spends an attempt, where an unstarted one is requeued free): a task with a heartbeat deadline (as tasks have by default) comes back executing, its
deadlines running, and the agent sends no ``started`` report (one request and one commit fewer
per task); one without comes back assigned and is reported started as usual. With
``start_on_claim=False``, the agent reports ``started`` for each task before running it.

**Batching.** The agent's reports (``started``, heartbeats, ``succeeded``, ``failed``,
``released``) go to one sender, which sends whatever queued while its previous batch was in
flight as one ``POST /v1/reports`` (``batch_reports``, on by default): a lone report goes at
once, and under load many tasks' reports share one request and one commit on the server, with
no timer and no added wait. Each report is still answered, refused and tried again on its own;
a batch that fails as a whole (connection, 503, 429) is tried again report by report as a
single report would be. A batch carries at most 1 MiB of JSON
(``baton._batch.BATCH_BYTES_MAX``), far under the server's body limit however large the
results: a report that would take it past that waits for the next batch, and one larger on its
own is sent as its own request. With ``batch_reports=False``, each report is a request of its
own (``POST /v1/tasks/{id}/{report}``).

**Heartbeats.** From the start until the handler returns, the agent heartbeats each task at a
third of the time left before its heartbeat deadline (from the latest answer's ``deadlines``),
at least every ``heartbeat_max_interval`` (10 s) and at most every 0.25 s; ``ctx.progress(v)``
sends one right away carrying ``v``. A heartbeat refused because the task was cancelled or the
lease was lost (409, 404) sets ``ctx.cancelled`` and nothing more is reported for that task.
When the agent has not been heard from for ``keepalive_interval`` (10 s), it sends
``POST /v1/agents/{id}/heartbeat``.

**Forgotten.** When Baton answers a claim, a keep-alive or a report that it does not know the
agent (a fresh store, or the agent was deleted after ``--agent-retention`` of silence), the
agent registers again without an id and goes on under the new id Baton gives it
(``agent.id`` changes). The tasks it held under the old id lost their leases: their reports are
refused, and they end as any task whose lease is lost (``ctx.cancelled`` is set, nothing more is
reported).

**Bounds.** At most ``concurrency`` tasks are held at once (claims ask for the free slots
only), with at most one request per task in flight (a report waits for the heartbeat in
flight), so at most ``concurrency + 3`` requests with the claim, a registration and a
keep-alive (with batching, the reports among them travel in at most one request at a time).
The blocking runner drives the agent from one thread and starts, as needed, up to
``concurrency`` handler threads and ``concurrency + 3`` request threads (and one thread that
sends batches); the asyncio runner uses one asyncio task per request and per handler (one for
all batched reports), and ``concurrency`` threads for blocking handlers.

**Shutdown.** ``agent.stop()`` (from any thread), Ctrl-C or SIGTERM (when ``run`` is called in
the main thread): stop claiming (the long poll in flight ends within ``claim_wait_ms``; what it
returns is released at once), let running handlers finish for up to ``shutdown_grace``
seconds, then report ``released`` for the tasks still held (they go back to ``pending`` for
another agent, without using up an attempt) and set their ``ctx.cancelled``; answers still
awaited from Baton are given up ``request_timeout`` seconds after that. Under ``run``, a
second Ctrl-C skips the grace period. ``run_async``, when cancelled (as ``asyncio.run`` does on
Ctrl-C), shuts down the same way and then re-raises the cancellation; cancelled again, it skips
the grace period.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, TypeVar

from . import _ops
from ._async_runner import AsyncRunner
from ._sync_runner import SyncRunner
from .context import TaskContext

__all__ = ["Agent", "Handler"]

Handler = Callable[[Any, TaskContext], Any]
"""``handler(input, ctx) -> result``; a plain function or an ``async def``."""

H = TypeVar("H", bound=Callable[..., Any])

CONCURRENCY_MAX = 10_000
CLAIM_MAX = 256


class Agent:
    """An agent: its identity, its handlers, and how it runs them (see the module docs).

    ``name`` is the agent's name (an agent token is bound to it); ``capabilities`` are offered
    on top of the decorated ones; ``concurrency`` is how many tasks it runs at once. ``url`` and
    ``token`` default to ``BATON_URL`` / ``BATON_TOKEN``. ``agent_id`` registers again under
    the id of an agent Baton knows (its leases survive a restart of the process); Baton makes
    agents' ids, so an id it does not know (never made, or forgotten) is refused, and the
    agent then registers as a new agent, with the id Baton gives it (``agent.id``).
    ``start_on_claim`` (default on) has each claim start its tasks, instead of a ``started``
    report per task. ``batch_reports`` (default on) sends the agent's reports in batches
    (``POST /v1/reports``) instead of one request each.
    """

    def __init__(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        concurrency: int = 1,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        agent_id: Optional[str] = None,
        claim_wait_ms: int = 5_000,
        start_on_claim: bool = False,
        batch_reports: bool = True,
        shutdown_grace: float = 30.0,
        heartbeat_max_interval: float = 10.0,
        keepalive_interval: float = 10.0,
        request_timeout: float = 30.0,
        logger: Optional[logging.Logger] = None,
        quiet: bool = False,
    ) -> None:
        if not 1 <= concurrency <= CONCURRENCY_MAX:
            raise ValueError(f"concurrency must be between 1 and {CONCURRENCY_MAX}")
        self.name = name
        self.concurrency = concurrency
        self.url = url
        self.token = token
        self.id: Optional[str] = agent_id
        self.claim_wait_ms = claim_wait_ms
        self.start_on_claim = start_on_claim
        self.batch_reports = batch_reports
        self.shutdown_grace = shutdown_grace
        self.heartbeat_max_interval = heartbeat_max_interval
        self.keepalive_interval = keepalive_interval
        self.request_timeout = request_timeout
        self.log = logger or logging.getLogger("baton.agent")
        self.quiet = quiet
        self._offered = list(capabilities)
        self._handlers: Dict[str, Handler] = {}
        self._default: Optional[Handler] = None
        self._stopping = threading.Event()
        self._on_stop: List[Callable[[], None]] = []
        self._running = threading.Lock()

    # ---- handlers -----------------------------------------------------------------------------

    def task(self, capability: Optional[str] = None) -> Callable[[H], H]:
        """Decorates ``handler(input, ctx)`` as the handler for ``capability`` (or as the
        default handler when ``capability`` is omitted). Returns the handler unchanged."""

        def register(fn: H) -> H:
            if capability is None:
                if self._default is not None:
                    raise ValueError("a default handler is already registered")
                self._default = fn
            else:
                if capability in self._handlers:
                    raise ValueError(f"a handler for {capability!r} is already registered")
                self._handlers[capability] = fn
            return fn

        return register

    @property
    def capabilities(self) -> List[str]:
        """What the agent registers with: offered and decorated capabilities."""
        return sorted(set(self._offered) | set(self._handlers))

    def handler_for(self, required: Collection[str]) -> Optional[Handler]:
        """The handler for a task requiring ``required`` (see the module docs)."""
        if len(self._handlers) + (self._default is not None) == 1:
            return self._default or next(iter(self._handlers.values()), None)
        for capability, handler in self._handlers.items():
            if capability in required:
                return handler
        return self._default

    @property
    def claim_max(self) -> int:
        """Most tasks one claim asks for."""
        return min(self.concurrency, CLAIM_MAX)

    # ---- running ------------------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> None:
        """Registers and works tasks until :meth:`stop` (or Ctrl-C, or SIGTERM when called in
        the main thread with ``handle_signals``); returns once shut down."""
        self._check_handlers()
        with self._exclusive(), _said(self):
            SyncRunner(self).run(handle_signals=handle_signals)

    async def run_async(self) -> None:
        """The asyncio counterpart of :meth:`run`: ``async def`` handlers run on the event
        loop, plain ones in worker threads. Cancelling it shuts down as :meth:`stop` does."""
        self._check_handlers()
        with self._exclusive(), _said(self):
            await AsyncRunner(self).run()

    def stop(self) -> None:
        """Asks the running agent to shut down (see the module docs). Safe from any thread and
        from signal handlers; returns at once."""
        self._stopping.set()
        for callback in list(self._on_stop):
            callback()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def _check_handlers(self) -> None:
        if not self._handlers and self._default is None:
            raise RuntimeError("register a handler with @agent.task(...) before running")

    def _exclusive(self) -> "_Exclusive":
        return _Exclusive(self)


class _said:
    """While an agent runs, its start-up line, registration and connection warnings go to
    standard error, unless ``quiet`` or the application configured logging itself (a handler
    on the agent's logger or the root logger)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.handler: Optional[logging.Handler] = None
        self.level = logging.NOTSET

    def __enter__(self) -> None:
        log = self.agent.log
        if self.agent.quiet or log.hasHandlers():
            return
        self.handler = logging.StreamHandler()
        self.handler.setFormatter(logging.Formatter("baton: %(message)s"))
        log.addHandler(self.handler)
        self.level = log.level
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        url = _ops.base_url(self.agent.url)
        log.info(
            "agent %s starting: capabilities %s, Baton at %s (Ctrl-C stops it; quiet=True "
            "silences this)",
            self.agent.name,
            ", ".join(self.agent.capabilities) or "none",
            url,
        )

    def __exit__(self, *exc: object) -> None:
        if self.handler is not None:
            self.agent.log.removeHandler(self.handler)
            self.agent.log.setLevel(self.level)


class _Exclusive:
    """Runs an agent at most once at a time, and readies it to run again afterwards."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def __enter__(self) -> None:
        if not self.agent._running.acquire(blocking=False):
            raise RuntimeError("the agent is already running")

    def __exit__(self, *exc: object) -> None:
        self.agent._stopping.clear()
        self.agent._on_stop.clear()
        self.agent._running.release()
