"""The agent's decisions, sans I/O: one state machine shared by the blocking and the asyncio
runners.

:class:`AgentCore` is fed what happened (:data:`Event`: a request answered or refused, a
handler returned or raised, time passed, a stop asked for) with the time it happened
(:class:`Instant`), and answers with what to do next (:data:`Action`: send this request, run
this handler, log this line, done). It never touches a socket, a thread, a clock or the event
loop; the runners (``_sync_runner.py``, ``_async_runner.py``) carry the actions out, feed the
outcomes back, and wake it at :meth:`AgentCore.wake_at`. Every decision lives here: retries and
backoff on connection errors and 503, what a refused report means, registering again (as a new
agent) when Baton forgot the agent, the heartbeat cadence, the concurrency bound, and the
graceful stop that releases unfinished tasks.

Invariants: at most one request per held task is out at a time (a report waits for the
heartbeat in flight, so Baton sees a task's reports in the order they were decided); at most
one claim, one registration and one keep-alive are out; at most ``concurrency`` tasks are held.
So a runner never has more than ``concurrency + 3`` requests and ``concurrency`` handlers in
flight. After any step, :meth:`AgentCore.wake_at` is in the future (or ``None``): the core has
already acted on everything that was due.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

from .context import TaskContext
from .errors import BatonError, Conflict, ConnectionFailed, NonRetryable, NotFound, Unavailable
from .types import JSON, REPORT_KINDS, ClaimedTask, Deadlines, Report, ReportAnswer

if TYPE_CHECKING:
    from .agent import Agent, Handler

BEAT_MIN_S = 0.25
"""Shortest pause between two heartbeats of one task, whatever its deadline says."""
BEAT_AFTER_FAILURE_S = 4 * BEAT_MIN_S
"""Pause before the next heartbeat of a task after one failed for a transient reason."""
REPORT_ATTEMPTS = 5
"""Tries of a report (or release) that fails for transient reasons (connection, 503) before
giving up."""
MESSAGE_CHARS_MAX = 8192
"""Longest error message reported; longer ones are cut."""
BACKOFF_MAX_S = 5.0
"""Longest pause before trying a failed claim or request again (a server's hint included)."""
BACKOFF_FIRST_S = 0.2
"""Pause after the first transient failure; it doubles with each further one."""


class Instant(NamedTuple):
    """When an event happened: ``mono`` (monotonic seconds: timers, pauses) and ``wall``
    (seconds since the epoch: Baton's deadlines are wall-clock)."""

    mono: float
    wall: float

    @staticmethod
    def read() -> "Instant":
        """The current instant; the runners' clock (the core is handed instants, never reads
        one)."""
        return Instant(time.monotonic(), time.time())


# ---- requests and actions ------------------------------------------------------------------


@dataclass(eq=False)
class Request:
    """A call of a :class:`~baton.Client` / :class:`~baton.AsyncClient` method, as data.

    Compared by identity: the answer to a request names the request itself. ``tries_max`` is
    how many times a transient failure is tried again (``None``: until the agent stops);
    ``agent`` is the agent id a claim, keep-alive or report is sent under, so that an
    ``agent_not_found`` answer about an id the agent no longer has is told apart."""

    method: str
    args: Tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    task: Optional[str] = None
    agent: Optional[str] = None
    tries_max: Optional[int] = 1
    tries: int = 0

    def call(self, client: Any) -> Any:
        """Calls the method on ``client``: its answer, or a coroutine with an async client."""
        return getattr(client, self.method)(*self.args, **self.kwargs)

    def as_report(self) -> Optional[Report]:
        """The :class:`~baton.Report` this request sends, if it is a report (``report_*``):
        what a runner that batches reports sends instead of calling the method. Built from
        the same arguments, so that both ways send the same body."""
        kind = self.method[len("report_") :] if self.method.startswith("report_") else None
        if kind not in REPORT_KINDS:
            return None
        build: Callable[..., Report] = getattr(Report, kind)
        return build(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Send:
    """Send ``request``; feed back :class:`Answered` or :class:`Refused`."""

    request: Request


@dataclass(frozen=True)
class Run:
    """Run ``handler(input, ctx)`` for ``task``; feed back :class:`Returned` or
    :class:`Raised`."""

    task: str
    handler: "Handler"
    input: JSON
    ctx: TaskContext


@dataclass(frozen=True)
class Log:
    """Log a line (fixed message, data in ``args``)."""

    level: int
    message: str
    args: Tuple[Any, ...] = ()

    def emit(self, logger: logging.Logger) -> None:
        logger.log(self.level, self.message, *self.args)


@dataclass(frozen=True)
class Done:
    """The agent has shut down (or could not start: ``error``). Whatever is still in flight
    (released handlers, keep-alives) is abandoned; its outcome no longer matters."""

    error: Optional[BaseException] = None


Action = Union[Send, Run, Log, Done]


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    request: Request
    value: Any


@dataclass(frozen=True)
class Refused:
    """A request failed: refused by Baton, not delivered, or failed in the client."""

    request: Request
    error: BaseException


@dataclass(frozen=True)
class Returned:
    task: str
    value: Any


@dataclass(frozen=True)
class Raised:
    task: str
    error: BaseException


@dataclass(frozen=True)
class Wake:
    """Time passed, or a handler recorded progress."""


@dataclass(frozen=True)
class Stop:
    """Stop claiming, give running handlers the grace period, release the rest."""


@dataclass(frozen=True)
class Hurry:
    """Stop, and skip (the rest of) the grace period."""


Event = Union[Answered, Refused, Returned, Raised, Wake, Stop, Hurry]


# ---- pure helpers --------------------------------------------------------------------------


def beat_interval(heartbeat_deadline: Optional[int], wall: float, max_interval: float) -> float:
    """Seconds until the next heartbeat: a third of the time left at ``wall`` before the
    heartbeat deadline (ms since the epoch), at most ``max_interval``, at least
    :data:`BEAT_MIN_S`."""
    if heartbeat_deadline is None:
        return max_interval
    remaining = heartbeat_deadline / 1000.0 - wall
    return max(BEAT_MIN_S, min(max_interval, remaining / 3.0))


def started_by_claim(claimed: ClaimedTask) -> ReportAnswer:
    """What a ``started`` report would have answered for a task its claim started."""
    return ReportAnswer(
        task=claimed.task,
        state="executing",
        version=claimed.version,
        attempt=claimed.attempt,
        token=claimed.token,
        cancelled=False,
        deadlines=claimed.deadlines,
    )


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


def forgotten(exc: BaseException) -> bool:
    """Whether Baton answered that it does not know the agent (never registered, or its record
    was removed after a long silence): the agent registers again without an id (Baton makes
    agents' ids) and goes on under the new one."""
    return isinstance(exc, NotFound) and exc.code == "agent_not_found"


def retry_pause(failures: int, exc: BaseException) -> float:
    """Seconds to wait after the ``failures``-th transient failure in a row: the server's
    ``Retry-After`` when it gave one, else :data:`BACKOFF_FIRST_S` doubling; at most
    :data:`BACKOFF_MAX_S`."""
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, (int, float)) and hint > 0:
        return min(float(hint), BACKOFF_MAX_S)
    return min(BACKOFF_FIRST_S * float(2**failures), BACKOFF_MAX_S)


def describe(exc: BaseException) -> str:
    """A short description of a failed request, for logs."""
    if isinstance(exc, BatonError):
        return f"{exc.status} {exc.code}: {exc.detail}"
    return repr(exc)


# ---- the machine ---------------------------------------------------------------------------


@dataclass(eq=False)
class Held:
    """A task the agent holds a lease on, from its claim until nothing more is done for it."""

    claimed: ClaimedTask
    ctx: TaskContext
    executing: bool = False
    """Started (by its claim, or a ``started`` report answered): heartbeats are due."""
    running: bool = False
    """Its handler runs (a :class:`Run` was given and its outcome not fed back)."""
    finished: bool = False
    """The outcome is decided (reported, or not to be)."""
    released: Optional[str] = None
    """Why it was given back, once it was."""
    sending: Optional[Request] = None
    """Its request in flight (or waiting to be tried again)."""
    queued: Optional[Request] = None
    """Its next request, sent once ``sending`` is answered."""
    next_beat: float = 0.0

    @property
    def task(self) -> str:
        return self.claimed.task

    @property
    def beating(self) -> bool:
        """Whether heartbeats are due for it: started, not done, lease still held."""
        return (
            self.executing
            and not self.finished
            and self.released is None
            and not self.ctx.cancelled
        )

    @property
    def quiet(self) -> bool:
        """Whether no request of its own is out or waiting."""
        return self.sending is None and self.queued is None


class AgentCore:
    """The agent's state machine (see the module docs). ``wake`` is handed to each task's
    :class:`TaskContext`: ``ctx.progress`` calls it (from any thread) so that the runner feeds
    :class:`Wake` soon."""

    def __init__(
        self,
        agent: "Agent",
        wake: Callable[[], None],
        fetch_upstream: Optional[Callable[[str, str], Any]] = None,
    ) -> None:
        self.agent = agent
        self.wake = wake
        # Handed to each task's context as is: the driver's way to read a withheld result.
        self.fetch_upstream = fetch_upstream
        self.held: Dict[str, Held] = {}
        self.registered = False
        self.registering: Optional[Request] = None
        self.forgotten_id: Optional[str] = None
        """The id Baton forgot, while the agent registers again in its place."""
        self.claiming: Optional[Request] = None
        self.keeping_alive: Optional[Request] = None
        self.claim_failures = 0
        self.claim_at = 0.0
        self.last_contact = 0.0
        self.resends: List[Tuple[float, Request]] = []
        self.stop_at: Optional[float] = None
        self.hurry = False
        self.release_at: Optional[float] = None
        self.done = False
        self.out: List[Action] = []

    # ---- entry points -----------------------------------------------------------------------

    def start(self, now: Instant) -> List[Action]:
        """The first actions: register."""
        self.last_contact = now.mono
        self._register(self.agent.id)
        return self._step(now)

    def handle(self, event: Event, now: Instant) -> List[Action]:
        """What to do after ``event`` happened at ``now``."""
        return self.handle_all([event], now)

    def handle_all(self, events: Iterable[Event], now: Instant) -> List[Action]:
        """What to do after ``events`` happened (in this order) by ``now``: the runners hand
        over whatever arrived together, and what is due is decided once for the batch."""
        for event in events:
            if not self.done:
                self._take_in(event, now)
        return self._step(now)

    def _take_in(self, event: Event, now: Instant) -> None:
        if isinstance(event, Answered):
            self._answered(event.request, event.value, now)
        elif isinstance(event, Refused):
            self._refused(event.request, event.error, now)
        elif isinstance(event, Returned):
            self._returned(self._held(event.task), event.value)
        elif isinstance(event, Raised):
            self._raised(self._held(event.task), event.error)
        elif isinstance(event, (Stop, Hurry)):
            self.hurry = self.hurry or isinstance(event, Hurry)
            if self.stop_at is None:
                self.stop_at = now.mono

    def wake_at(self) -> Optional[float]:
        """When (monotonic seconds) to feed :class:`Wake` if nothing else happens first;
        ``None``: only an event can move it on."""
        if self.done:
            return None
        times = [at for at, _ in self.resends]
        if self._may_claim():
            times.append(self.claim_at)
        times += [h.next_beat for h in self.held.values() if h.beating and h.quiet]
        if self._may_keep_alive():
            times.append(self.last_contact + self.agent.keepalive_interval)
        if self.stop_at is not None:
            if self.release_at is None:
                times.append(self.stop_at + self.agent.shutdown_grace)
            else:
                times.append(self.release_at + self.agent.request_timeout)
        return min(times, default=None)

    def timeout(self, mono: float) -> Optional[float]:
        """Seconds from ``mono`` until :meth:`wake_at` (``None``: no timer)."""
        at = self.wake_at()
        return None if at is None else max(0.0, at - mono)

    @property
    def stopping(self) -> bool:
        return self.stop_at is not None

    # ---- one step ---------------------------------------------------------------------------

    def _step(self, now: Instant) -> List[Action]:
        if not self.done:
            self._decide(now)
        out, self.out = self.out, []
        return out

    def _decide(self, now: Instant) -> None:
        """Acts on whatever is due at ``now``."""
        self._resend_due(now)
        if self._may_claim() and now.mono >= self.claim_at:
            self._claim()
        for held in list(self.held.values()):
            if held.beating and held.quiet:
                if held.next_beat <= now.mono or held.ctx._progress_pending:
                    self._heartbeat(held)
        if self._may_keep_alive():
            if now.mono - self.last_contact >= self.agent.keepalive_interval:
                keep_alive = Request("agent_heartbeat", (self.agent_id,), agent=self.agent_id)
                self.keeping_alive = self._send(keep_alive)
        if self.stop_at is not None:
            self._shut_down(now)

    def _may_claim(self) -> bool:
        return (
            self.registered
            and self.stop_at is None
            and self.registering is None
            and self.claiming is None
            and len(self.held) < self.agent.concurrency
        )

    def _may_keep_alive(self) -> bool:
        return self.registered and self.registering is None and self.keeping_alive is None

    def _resend_due(self, now: Instant) -> None:
        due = [r for at, r in self.resends if at <= now.mono]
        self.resends = [(at, r) for at, r in self.resends if at > now.mono]
        for request in due:
            self._send(request)

    def _shut_down(self, now: Instant) -> None:
        assert self.stop_at is not None
        if self.release_at is None and (
            self.hurry or now.mono >= self.stop_at + self.agent.shutdown_grace
        ):
            self.release_at = now.mono
            for held in list(self.held.values()):
                self._release(held, "agent_stopping")
        waiting = self.registering is not None or self.claiming is not None
        for held in self.held.values():
            # A released task's handler may run on: nothing it does is reported any more.
            waiting = waiting or not held.quiet or (held.running and held.released is None)
        if waiting and self.release_at is not None:
            if now.mono >= self.release_at + self.agent.request_timeout:
                self._log(logging.WARNING, "stopping without waiting any longer for Baton")
                waiting = False
        if not waiting:
            self.done = True
            self.out.append(Done())

    # ---- registering and claiming -----------------------------------------------------------

    def _register(self, agent_id: Optional[str]) -> None:
        """Registers: again under ``agent_id`` (an agent Baton knows), else as a new agent."""
        a = self.agent
        self.registering = self._send(
            Request(
                "register_agent",
                (a.name, a.capabilities, a.concurrency),
                {"agent_id": agent_id},
                tries_max=None,
            )
        )

    def _forgotten(self, request: Request) -> None:
        """Baton answered ``request`` that it does not know the agent: registers again, as a
        new agent, unless that is under way or done already (the request spoke for an id the
        agent no longer has), or the agent is stopping. The tasks held under the old id lost
        their leases: their reports are refused and they end as any task whose lease is gone."""
        if (
            request.agent != self.agent.id
            or not self.registered
            or self.registering is not None
            or self.stopping
        ):
            return
        self.forgotten_id = request.agent
        self._register(None)

    def _claim(self) -> None:
        free = self.agent.concurrency - len(self.held)
        count = min(free, self.agent.claim_max)
        self.claiming = self._send(
            Request(
                "claim",
                (self.agent_id, count, self.agent.claim_wait_ms),
                {"start": self.agent.start_on_claim},
                agent=self.agent_id,
            )
        )

    def _take(self, claimed: ClaimedTask, now: Instant) -> None:
        ctx = TaskContext(claimed, self.agent_id, self.wake, self.fetch_upstream)
        held = Held(claimed, ctx)
        self.held[claimed.task] = held
        if self.stopping:
            self._release(held, "agent_stopping")
        elif claimed.started:
            self._started(held, started_by_claim(claimed), now)
        else:
            self._task_request(held, self._report(held, "report_started"))

    # ---- answers ----------------------------------------------------------------------------

    def _answered(self, request: Request, value: Any, now: Instant) -> None:
        if request is self.registering:
            self.registering = None
            self.registered = True
            self.agent.id = value.id
            self._heard_from(now)
            if self.forgotten_id is not None:
                self._log(
                    logging.WARNING,
                    "Baton had forgotten agent %s: registered again as %s",
                    self.forgotten_id,
                    value.id,
                )
                self.forgotten_id = None
            else:
                self._log(
                    logging.INFO,
                    "agent %s registered as %s (capabilities %s; at most %d task(s) at once)",
                    self.agent.name,
                    value.id,
                    ", ".join(self.agent.capabilities) or "none",
                    self.agent.concurrency,
                )
        elif request is self.claiming:
            self.claiming = None
            self.claim_failures = 0
            self._heard_from(now)
            for claimed in value:
                self._take(claimed, now)
        elif request is self.keeping_alive:
            self.keeping_alive = None
            self._heard_from(now)
        else:
            held = self._held(request.task)
            assert held.sending is request, "one request per task at a time"
            held.sending = None
            self._heard_from(now)
            self._task_answered(held, request.method, value, now)
            self._next(held)

    def _task_answered(self, held: Held, method: str, value: Any, now: Instant) -> None:
        if method == "report_started":
            if held.released is None:
                self._started(held, value, now)
        elif method == "report_heartbeat":
            if value.cancelled:
                held.ctx._cancel("task_cancelled")
            self._schedule(held, value.deadlines, now)
        elif method == "report_released":
            self._log(logging.INFO, "task %s released (%s)", held.task, held.released)

    def _started(self, held: Held, answer: ReportAnswer, now: Instant) -> None:
        """The task executes (``answer`` is its ``started`` answer, or what that would have
        been): heartbeats are due, and its handler runs, chosen by the capabilities the task
        requires (which its claim carries)."""
        held.executing = True
        self._schedule(held, answer.deadlines, now)
        self._run(held, held.claimed.capabilities)

    def _refused(self, request: Request, exc: BaseException, now: Instant) -> None:
        request.tries += 1
        if request.tries_max is None:
            retry = not self.stopping
        else:
            retry = request.tries < request.tries_max
        if transient(exc) and retry:
            pause = retry_pause(request.tries, exc)
            # Said on the first failure and then now and then, not on every resend.
            if request.tries == 1 or request.tries % 10 == 0:
                self._log(
                    logging.WARNING,
                    "cannot reach Baton (%s); trying again in %.1f s",
                    describe(exc),
                    pause,
                )
            self.resends.append((now.mono + pause, request))
            return
        if request is self.registering:
            self.registering = None
            unknown = request.kwargs.get("agent_id")
            if forgotten(exc) and unknown is not None:
                # An id Baton does not know (never made, or forgotten): a new agent instead.
                self._log(
                    logging.WARNING,
                    "Baton has no agent %s: registering as a new agent",
                    unknown,
                )
                self._register(None)
            elif not self.registered:
                self.done = True
                # Stopped while Baton could not be reached: a stop, not a failure to start.
                self.out.append(Done(None if self.stopping and transient(exc) else exc))
            else:
                self.forgotten_id = None
                self._log(logging.WARNING, "registering again failed: %s", describe(exc))
        elif request is self.claiming:
            self.claiming = None
            self.claim_failures += 1
            self._log(logging.WARNING, "claim failed: %s", describe(exc))
            if forgotten(exc):
                self._forgotten(request)
            self.claim_at = now.mono + retry_pause(self.claim_failures, exc)
        elif request is self.keeping_alive:
            self.keeping_alive = None
            self._log(logging.WARNING, "agent keep-alive failed: %s", describe(exc))
            if forgotten(exc):
                self._forgotten(request)
            # Sooner than a full interval: the agent may be close to being declared lost.
            self.last_contact = now.mono - self.agent.keepalive_interval / 2
        else:
            held = self._held(request.task)
            assert held.sending is request, "one request per task at a time"
            held.sending = None
            if forgotten(exc):
                self._forgotten(request)
            self._task_refused(held, request.method, exc, now)
            self._next(held)

    def _task_refused(self, held: Held, method: str, exc: BaseException, now: Instant) -> None:
        reason = lease_lost(exc)
        if method == "report_heartbeat":
            if reason is not None:
                self._log(
                    logging.INFO,
                    "task %s: heartbeat refused (%s): cancelling its handler",
                    held.task,
                    reason,
                )
                held.ctx._cancel(reason)
            else:
                self._log(
                    logging.WARNING, "task %s: heartbeat failed: %s", held.task, describe(exc)
                )
                held.next_beat = now.mono + BEAT_AFTER_FAILURE_S
        elif method == "report_released":
            self._log(logging.WARNING, "task %s: release refused: %s", held.task, describe(exc))
        else:
            if reason is not None:
                held.ctx._cancel(reason)
            self._log(logging.WARNING, "task %s: report refused: %s", held.task, describe(exc))

    # ---- handlers and outcomes --------------------------------------------------------------

    def _run(self, held: Held, required: List[str]) -> None:
        handler = self.agent.handler_for(required)
        if handler is None:
            message = (
                f"agent {self.agent.name} has no handler for capabilities {sorted(required)}"
            )
            self._finish(held, "report_failed", "no_handler", message)
            return
        held.running = True
        self.out.append(Run(held.task, handler, held.claimed.input, held.ctx))

    def _returned(self, held: Held, value: Any) -> None:
        held.running = False
        try:
            result = result_payload(value)
        except NonRetryable as exc:
            self._raised(held, exc)
            return
        self._finish(held, "report_succeeded", result)
        self._next(held)

    def _raised(self, held: Held, exc: BaseException) -> None:
        held.running = False
        kind, message, retryable = failure_of(exc)
        if not held.ctx.cancelled:
            self._log(
                logging.INFO,
                "task %s (%s) failed: %s: %s",
                held.task,
                held.claimed.key,
                kind,
                message,
            )
        self._finish(held, "report_failed", kind, message, retryable=retryable)
        self._next(held)

    def _finish(self, held: Held, method: str, *args: Any, **kwargs: Any) -> None:
        held.finished = True
        if held.released is not None or held.ctx.cancelled:
            self._log(
                logging.INFO, "task %s: %s, outcome not reported", held.task, held.ctx.cancel_reason
            )
            return
        self._task_request(held, self._report(held, method, *args, **kwargs))

    def _release(self, held: Held, reason: str) -> None:
        if held.released is not None or held.finished:
            return
        held.released = reason
        held.ctx._cancel(reason)
        self._task_request(held, self._report(held, "report_released"))

    # ---- per-task requests ------------------------------------------------------------------

    def _report(self, held: Held, method: str, *args: Any, **kwargs: Any) -> Request:
        """A report on ``held`` under its lease, tried again on transient failures; an outcome
        carries what the handler reported spending."""
        c = held.claimed
        usage = held.ctx.usage
        if usage and method in ("report_succeeded", "report_failed"):
            kwargs = {**kwargs, "usage": usage}
        agent = self.agent_id
        return Request(method, (c.task, agent, c.token, *args), kwargs, task=c.task, agent=agent)

    def _task_request(self, held: Held, request: Request) -> None:
        """Sends a request about ``held`` now, or after the one in flight; transient failures
        are tried again up to :data:`REPORT_ATTEMPTS` times."""
        request.tries_max = REPORT_ATTEMPTS
        if held.sending is None:
            held.sending = self._send(request)
        else:
            assert held.queued is None, "a task has at most one request waiting"
            held.queued = request

    def _heartbeat(self, held: Held) -> None:
        c = held.claimed
        progress = held.ctx._take_progress()
        usage = held.ctx.usage
        held.sending = self._send(
            Request(
                "report_heartbeat",
                (c.task, self.agent_id, c.token, progress),
                {"usage": usage} if usage else {},
                task=c.task,
                agent=self.agent_id,
            )
        )

    def _next(self, held: Held) -> None:
        """Sends what waited for the answer; forgets the task once nothing is left to do."""
        if held.sending is None and held.queued is not None:
            held.sending, held.queued = self._send(held.queued), None
        if held.quiet and not held.running and not held.beating:
            del self.held[held.task]

    def _schedule(self, held: Held, deadlines: Deadlines, now: Instant) -> None:
        """Arms the next heartbeat from the deadlines of the latest answer."""
        held.ctx.deadlines = deadlines
        interval = beat_interval(deadlines.heartbeat, now.wall, self.agent.heartbeat_max_interval)
        held.next_beat = now.mono + interval

    # ---- small things -----------------------------------------------------------------------

    def _send(self, request: Request) -> Request:
        self.out.append(Send(request))
        return request

    def _log(self, level: int, message: str, *args: Any) -> None:
        self.out.append(Log(level, message, args))

    def _heard_from(self, now: Instant) -> None:
        self.last_contact = now.mono

    def _held(self, task: Optional[str]) -> Held:
        assert task is not None and task in self.held, f"task {task} is not held"
        return self.held[task]

    @property
    def agent_id(self) -> str:
        assert self.agent.id is not None
        return self.agent.id
