"""Operator clients for Baton: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both expose the same methods; the async ones are coroutines. The URL and token come from the
arguments, else from ``BATON_URL`` / ``BATON_TOKEN``, else ``http://127.0.0.1:7700`` without
a token. Refusals raise :class:`baton.BatonError` subclasses; transport failures raise
:class:`baton.ConnectionFailed`.

The agent-side calls (register, claim, report) are here too, for agents that manage their own
loop; :class:`baton.Agent` drives them for you.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import (
    IO,
    Any,
    AsyncIterator,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)

import httpx

from . import _ops
from ._ops import BudgetsLike, ReportOutcome
from ._sse import SseParser
from .types import (
    AgentPage,
    AgentView,
    ArtifactStored,
    AuditPage,
    RerunAnswer,
    WorkflowControlAnswer,
    ClaimedTask,
    Counts,
    JSON,
    Lagged,
    LimitView,
    Report,
    ReportAnswer,
    ReportLike,
    SchedulePage,
    ScheduleView,
    SignalPage,
    SignalSent,
    TaskCreated,
    TaskPage,
    TaskSpecLike,
    TaskSummary,
    TaskView,
    TransitionEvent,
    TriggerPage,
    TriggerView,
    WaitingPage,
    WorkflowCreated,
    WorkflowEnded,
    WorkflowView,
)

__all__ = [
    "Client",
    "AsyncClient",
    "EventStream",
    "AsyncEventStream",
    "StreamItem",
    "ReportOutcome",
]

T = TypeVar("T")

BinaryIO = IO[bytes]

ArtifactSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]
"""What :meth:`Client.put_artifact` uploads: the bytes, a path to a file, or a binary file."""

StreamItem = Union[TransitionEvent, WorkflowEnded, Lagged]
"""What an event stream yields: a transition, or notice that some were dropped."""

DEFAULT_TIMEOUT = 30.0
EVENTS_READ_TIMEOUT = 60.0


class EventStream:
    """A live stream of transitions (``GET /v1/events``), iterated until closed.

    The server subscribes when the stream opens, so transitions that happen after
    :meth:`Client.events` returns are all seen (barring :class:`Lagged` notices). A broken
    connection raises :class:`ConnectionFailed`; open the stream again with
    ``last_event_id=stream.last_event_id`` to get what was missed first.
    """

    def __init__(self, response: httpx.Response, last_event_id: Optional[str] = None) -> None:
        self._response = response
        self.last_event_id: Optional[str] = last_event_id
        """The id of the last transition received, to resume from."""

    def __iter__(self) -> Iterator[StreamItem]:
        parser = SseParser()
        try:
            for line in self._response.iter_lines():
                ev = parser.feed(line)
                if ev is not None and ev.event == "transition" and ev.id is not None:
                    self.last_event_id = ev.id
                item = _ops.decode_event(ev) if ev is not None else None
                if item is not None:
                    yield item
        except (httpx.TransportError, httpx.StreamError) as exc:
            if not self._response.is_closed:
                raise _ops.transport_error(exc) from exc

    def close(self) -> None:
        """Closes the connection; iteration ends. Called from another thread while one is
        blocked reading, it takes effect at the next message or keep-alive (within 15 s)."""
        self._response.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventStream:
    """The asyncio counterpart of :class:`EventStream`."""

    def __init__(self, response: httpx.Response, last_event_id: Optional[str] = None) -> None:
        self._response = response
        self.last_event_id: Optional[str] = last_event_id
        """The id of the last transition received, to resume from."""

    async def __aiter__(self) -> AsyncIterator[StreamItem]:
        parser = SseParser()
        try:
            async for line in self._response.aiter_lines():
                ev = parser.feed(line)
                if ev is not None and ev.event == "transition" and ev.id is not None:
                    self.last_event_id = ev.id
                item = _ops.decode_event(ev) if ev is not None else None
                if item is not None:
                    yield item
        except (httpx.TransportError, httpx.StreamError) as exc:
            if not self._response.is_closed:
                raise _ops.transport_error(exc) from exc

    async def aclose(self) -> None:
        """Closes the connection; iteration ends."""
        await self._response.aclose()

    async def __aenter__(self) -> "AsyncEventStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Client:
    """A blocking Baton client. Thread-safe; use it as a context manager or call :meth:`close`.

    ``url`` defaults to ``BATON_URL`` (else ``http://127.0.0.1:7700``), ``token`` to
    ``BATON_TOKEN``; ``timeout`` bounds each request in seconds (long polls get their wait on
    top); ``max_connections`` bounds the connection pool. Pass ``http`` to bring a configured
    ``httpx.Client`` (its base URL is not used).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 64,
        http: Optional[httpx.Client] = None,
    ) -> None:
        self.url = _ops.base_url(url)
        self.timeout = timeout
        self._own = http is None
        self._http = http or httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._headers = _ops.auth_headers(token)

    def close(self) -> None:
        """Closes the connections (if the client made them)."""
        if self._own:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, op: "_ops.Op[T]") -> T:
        request = self._http.build_request(**_ops.request_of(self.url, op))
        request.headers.update(self._headers)
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise _ops.transport_error(exc) from exc
        if not response.is_success:
            raise _ops.error_of(response)
        return op.parse(response)

    # ---- workflows and tasks ------------------------------------------------------------------

    def submit_workflow(
        self,
        tasks: Sequence[TaskSpecLike],
        *,
        name: str = "",
        idempotency_key: Optional[str] = None,
        outputs: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, str]] = None,
        budgets: Optional[BudgetsLike] = None,
    ) -> WorkflowCreated:
        """Submits tasks with their dependencies as one workflow. Resubmitting with the same
        ``idempotency_key`` returns the first submission (``created`` false). ``outputs``
        names the workflow's result: values that may be :func:`baton.ref` to its tasks'
        results, resolved once every task has completed (``WorkflowView.result``).
        ``labels`` (``{"tenant": "acme"}``) stay with the workflow; a token scoped to labels
        adds its own. ``budgets`` cap what its agents report spending, per unit:
        ``{"usd": 5}`` pauses the workflow once it has spent 5 (``{"usd": {"limit": 5,
        "policy": "fail"}}`` fails it, ``"cancel"`` cancels it)."""
        return self._call(
            _ops.submit_workflow(tasks, name, idempotency_key, outputs, labels, budgets)
        )

    def submit_task(
        self,
        task: TaskSpecLike,
        *,
        idempotency_key: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        budgets: Optional[BudgetsLike] = None,
    ) -> TaskCreated:
        """Submits one task as a workflow of its own (with ``labels`` and ``budgets``)."""
        return self._call(_ops.submit_task(task, idempotency_key, labels, budgets))

    def get_workflow(self, workflow_id: str) -> WorkflowView:
        """A workflow with its task counts, status and (once it has ended) result."""
        return self._call(_ops.get_workflow(workflow_id))

    def wait_workflow(
        self, workflow_id: str, *, timeout: Optional[float] = None, poll: float = 0.25
    ) -> WorkflowView:
        """Waits for the workflow to end (``status`` no longer ``"running"``) and returns it;
        raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get_workflow(workflow_id)
            if view.status != "running":
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {workflow_id} is still running after {timeout}s")
            time.sleep(poll)

    def cancel_workflow(self, workflow_id: str, reason: str = "") -> int:
        """Cancels every task of the workflow that has not ended; returns how many."""
        return self._call(_ops.cancel_workflow(workflow_id, reason))

    def get_task(self, task_id: str) -> TaskView:
        """A task with its history (up to 1000 entries) and why it waits."""
        return self._call(_ops.get_task(task_id))

    def task_history(
        self, task_id: str, *, after: Optional[int] = None, limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """History entries with a sequence number above ``after``, oldest first, each
        ``{"seq", "at", "actor", "event", "data"}`` (``data`` the event with its fields), as in
        :attr:`TaskView.history`."""
        return self._call(_ops.task_history(task_id, after, limit))

    def task_upstream(self, task_id: str, *, key: Optional[str] = None) -> Dict[str, Any]:
        """The results of the task's completed dependencies by key, each ``{"task": id,
        "result": value}``; past 4 MiB of them a result is withheld (``{"task": id,
        "withheld_bytes": n}``). With ``key``, only that dependency's, whatever its size."""
        return self._call(_ops.task_upstream(task_id, key))

    def list_tasks(
        self,
        *,
        workflow: Optional[str] = None,
        state: Optional[str] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> TaskPage:
        """One page of tasks (``limit`` 1 to 1000, default 100), filtered by workflow and
        state; see :meth:`iter_tasks` to walk every page."""
        return self._call(_ops.list_tasks(workflow, state, after, limit))

    def iter_tasks(
        self,
        *,
        workflow: Optional[str] = None,
        state: Optional[str] = None,
        page_size: int = 100,
    ) -> Iterator[TaskSummary]:
        """Every matching task, fetching one page at a time."""
        after: Optional[str] = None
        while True:
            page = self.list_tasks(workflow=workflow, state=state, after=after, limit=page_size)
            yield from page.tasks
            if page.next is None or not page.tasks:
                return
            after = page.next

    def cancel_task(self, task_id: str, reason: str = "") -> ReportAnswer:
        """Cancels a task (and, through it, its dependents)."""
        return self._call(_ops.cancel_task(task_id, reason))

    def retry_task(self, task_id: str) -> ReportAnswer:
        """Reopens a task that failed for good, with a fresh budget of attempts."""
        return self._call(_ops.retry_task(task_id))

    def pause_task(self, task_id: str, reason: str, *, now: bool = False) -> ReportAnswer:
        """Pauses a task: no agent is handed it and its timers stand still until it is
        resumed. An agent running it finishes, unless ``now`` takes it back at once (its next
        report is refused with ``task_paused``). ``reason`` is required and audited."""
        return self._call(_ops.pause_task(task_id, reason, now))

    def resume_task(self, task_id: str, reason: str) -> ReportAnswer:
        """Resumes a paused task: each timer goes on with the time it had left."""
        return self._call(_ops.resume_task(task_id, reason))

    def skip_task(self, task_id: str, reason: str, result: JSON) -> ReportAnswer:
        """Completes a task with ``result`` in place of an agent; its dependents proceed."""
        return self._call(_ops.skip_task(task_id, reason, result))

    def fail_task(
        self,
        task_id: str,
        reason: str,
        *,
        kind: Optional[str] = None,
        message: Optional[str] = None,
    ) -> ReportAnswer:
        """Fails a task for good (error kind ``kind``, ``forced`` by default): no retry, its
        dependents are cancelled, it compensates."""
        return self._call(_ops.fail_task(task_id, reason, kind, message))

    def rerun_task(
        self, task_id: str, reason: str, *, input: Any = _ops._NO_INPUT, dry_run: bool = False
    ) -> RerunAnswer:
        """Reruns a task and everything downstream of it with fresh attempts (upstream keeps
        its results); ``input`` replaces the task's own. ``dry_run`` only says what would
        rerun."""
        return self._call(_ops.rerun_task(task_id, reason, input, dry_run))

    def pause_workflow(
        self, workflow_id: str, reason: str, *, now: bool = False
    ) -> WorkflowControlAnswer:
        """Pauses every task of a workflow that has not ended, and those created in it later."""
        return self._call(_ops.pause_workflow(workflow_id, reason, now))

    def resume_workflow(self, workflow_id: str, reason: str) -> WorkflowControlAnswer:
        """Resumes every paused task of a workflow (refused with ``budget_reached`` while a
        budget that pauses it is still reached: raise it with :meth:`set_budgets` first)."""
        return self._call(_ops.resume_workflow(workflow_id, reason))

    def set_budgets(self, workflow_id: str, reason: str, budgets: BudgetsLike) -> WorkflowView:
        """Replaces a workflow's budgets (``{}`` removes them); audited with ``reason``."""
        return self._call(_ops.set_budgets(workflow_id, reason, budgets))

    def usage(self, *, label: Optional[str] = None) -> Dict[str, float]:
        """What agents have reported spending, by unit, over every workflow or those carrying
        ``label`` (``"tenant:acme"``)."""
        return self._call(_ops.usage(label))

    def audit(
        self,
        *,
        actor: Optional[str] = None,
        workflow: Optional[str] = None,
        action: Optional[str] = None,
        since: Optional[int] = None,
        until: Optional[int] = None,
        before: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> AuditPage:
        """A page of the audit log (every operator action), newest first; ``since``/``until``
        in ms since the epoch; pass the page's ``next`` as ``before`` for older entries."""
        return self._call(_ops.audit(actor, workflow, action, since, until, before, limit))

    def signal(
        self,
        workflow_id: str,
        name: str,
        data: JSON = None,
        *,
        reject: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        by: Optional[str] = None,
    ) -> SignalSent:
        """Sends the signal ``name`` to a workflow: every task of it waiting for that signal
        (``wait_for``) completes with ``data`` (any JSON, sent as it is; ``{}`` if ``None``) as
        its result, or, with ``reject`` (a reason), fails with error kind ``rejected``. A
        signal no task waits for yet is kept for the next that does. With the same
        ``idempotency_key`` it is applied once (``created`` false on a repeat; another body
        with the same key raises :class:`Conflict`). The sender recorded is the token's name;
        without tokens, ``by`` (default ``"local"``): with tokens, ``by`` is refused."""
        return self._call(_ops.signal(workflow_id, name, data, reject, idempotency_key, by))

    def signals(
        self, workflow_id: str, *, after: Optional[int] = None, limit: Optional[int] = None
    ) -> SignalPage:
        """The signals sent to a workflow, oldest first (``limit`` 1 to 1000, default 100):
        delivered, or kept for a task to come."""
        return self._call(_ops.signals(workflow_id, after, limit))

    def waiting(
        self,
        workflow: Optional[str] = None,
        *,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> WaitingPage:
        """One page of the tasks waiting for a signal (``limit`` 1 to 1000, default 100), of
        every workflow or of ``workflow``: what people are asked to approve."""
        return self._call(_ops.waiting(workflow, after, limit))

    # ---- schedules and triggers ---------------------------------------------------------------

    def create_schedule(self, spec: Mapping[str, Any]) -> ScheduleView:
        """Creates a schedule from its spec: ``name``, ``cron`` (with seconds, e.g. ``"0 30 9 *
        * MON-FRI"``), ``timezone`` (IANA, default ``"UTC"``), ``workflow`` (``name``,
        ``tasks`` as :class:`TaskSpec` or mappings, ``outputs``), ``overlap`` (``"skip"``,
        ``"allow"``, ``"cancel_previous"``) and ``catch_up`` (``{"policy": "none" | "latest"
        | "all", "max": n}``). Each tick submits the workflow once, with the idempotency key
        ``schedule:NAME:TICK_MS``. A name in use raises :class:`Conflict`."""
        return self._call(_ops.create_schedule(spec))

    def list_schedules(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> SchedulePage:
        """One page of schedules by name (``limit`` 1 to 1000, default 100; ``after`` the
        previous page's ``next``); see :meth:`iter_schedules` to walk every page."""
        return self._call(_ops.list_schedules(after, limit))

    def iter_schedules(self, *, page_size: int = 100) -> Iterator[ScheduleView]:
        """Every schedule by name, fetching one page at a time."""
        after: Optional[str] = None
        while True:
            page = self.list_schedules(after=after, limit=page_size)
            yield from page.schedules
            if page.next is None:
                return
            after = page.next

    def schedules(self) -> List[ScheduleView]:
        """Every schedule, by name, with its next fire times (read a page of 1,000 at a
        time)."""
        return list(self.iter_schedules(page_size=1000))

    def schedule(self, name: str) -> ScheduleView:
        """One schedule; :class:`NotFound` if there is none of that name."""
        return self._call(_ops.schedule(name))

    def pause_schedule(self, name: str) -> ScheduleView:
        """Stops a schedule's ticks until it is resumed."""
        return self._call(_ops.pause_schedule(name, True))

    def resume_schedule(self, name: str) -> ScheduleView:
        """Resumes a schedule from its next tick after now (ticks it slept through are not
        caught up)."""
        return self._call(_ops.pause_schedule(name, False))

    def delete_schedule(self, name: str) -> None:
        """Deletes a schedule; the workflows it submitted stay."""
        self._call(_ops.delete_schedule(name))

    def put_trigger(self, name: str, template: Mapping[str, Any]) -> TriggerView:
        """Registers (or replaces) trigger ``name``: the workflow (``name``, ``tasks`` as
        :class:`TaskSpec` or mappings, ``outputs``) that :meth:`fire_trigger` submits. In a
        task's input, ``{"$input": "/json/pointer"}`` stands for what the pointer finds in the
        fired input (``""``: all of it)."""
        return self._call(_ops.put_trigger(name, template))

    def list_triggers(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> TriggerPage:
        """One page of triggers by name (``limit`` 1 to 1000, default 100; ``after`` the
        previous page's ``next``); see :meth:`iter_triggers` to walk every page."""
        return self._call(_ops.list_triggers(after, limit))

    def iter_triggers(self, *, page_size: int = 100) -> Iterator[TriggerView]:
        """Every trigger by name, fetching one page at a time."""
        after: Optional[str] = None
        while True:
            page = self.list_triggers(after=after, limit=page_size)
            yield from page.triggers
            if page.next is None:
                return
            after = page.next

    def triggers(self) -> List[TriggerView]:
        """Every trigger, by name (read a page of 1,000 at a time)."""
        return list(self.iter_triggers(page_size=1000))

    def trigger(self, name: str) -> TriggerView:
        """One trigger; :class:`NotFound` if there is none of that name."""
        return self._call(_ops.trigger(name))

    def fire_trigger(
        self, name: str, input: JSON = None, *, idempotency_key: Optional[str] = None
    ) -> WorkflowCreated:
        """Submits trigger ``name``'s workflow with ``input`` (any JSON; ``{}`` if ``None``) in
        place of its placeholders. With the same ``idempotency_key`` it submits once: a repeat
        answers the first workflow (``created`` false); another input with the same key raises
        :class:`Conflict` (``idempotency_mismatch``). An input that lacks what a
        placeholder points at raises :class:`InvalidRequest` (``field`` ``"body"``)."""
        return self._call(_ops.fire_trigger(name, input, idempotency_key))

    def delete_trigger(self, name: str) -> None:
        """Deletes a trigger; the workflows it submitted stay."""
        self._call(_ops.delete_trigger(name))

    # ---- flow control -------------------------------------------------------------------------

    def set_limit(self, key: str, units: int, per_ms: int) -> LimitView:
        """Creates or changes the named rate limit ``key``, shared by every node: at most
        ``units`` handed out per ``per_ms`` milliseconds (a token bucket refilled continuously).
        Tasks draw from it through their ``rate`` (:class:`baton.RateUse`) when claimed; what a
        changed limit had handed out stays drawn. Needs an admin token; a bad value raises
        :class:`InvalidRequest` naming ``units`` or ``per_ms``."""
        return self._call(_ops.set_limit(key, units, per_ms))

    def limits(self) -> List[LimitView]:
        """Every named rate limit, by key, with its bucket now."""
        return self._call(_ops.limits())

    def limit(self, key: str) -> LimitView:
        """One rate limit; :class:`NotFound` (code ``limit_not_found``) if there is none of that
        name."""
        return self._call(_ops.limit(key))

    def delete_limit(self, key: str) -> None:
        """Deletes a rate limit: the tasks drawing from it are no longer held by it, and new
        tasks naming it are refused until it is set again. Needs an admin token;
        :class:`NotFound` (code ``limit_not_found``) if there is none of that name."""
        self._call(_ops.delete_limit(key))

    def counts(self, workflow: Optional[str] = None) -> Counts:
        """Tasks per state, overall or for one workflow."""
        return self._call(_ops.counts(workflow))

    def list_agents(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> AgentPage:
        """One page of agents by id, their registration order (``limit`` 1 to 1000, default
        100; ``after`` the previous page's ``next``); see :meth:`iter_agents` to walk every
        page."""
        return self._call(_ops.list_agents(after, limit))

    def iter_agents(self, *, page_size: int = 100) -> Iterator[AgentView]:
        """Every registered agent, fetching one page at a time."""
        after: Optional[str] = None
        while True:
            page = self.list_agents(after=after, limit=page_size)
            yield from page.agents
            if page.next is None or not page.agents:
                return
            after = page.next

    def agents(self) -> List[AgentView]:
        """Every registered agent (read a page of 1,000 at a time)."""
        return list(self.iter_agents(page_size=1000))

    def lifecycle(self, format: str = "mermaid") -> str:
        """The lifecycle diagram, as ``mermaid`` or ``dot`` source."""
        return self._call(_ops.lifecycle(format))

    def events(
        self,
        workflow: Optional[str] = None,
        *,
        read_timeout: float = EVENTS_READ_TIMEOUT,
        last_event_id: Optional[str] = None,
    ) -> EventStream:
        """Opens the stream of transitions, of one workflow or of all.

        ``read_timeout`` bounds the silence between two messages (the server sends a
        keep-alive every 15 s). With ``last_event_id`` (an earlier stream's
        :attr:`EventStream.last_event_id`), the transitions since then that the server still
        keeps come first, or a :class:`Lagged` notice where some cannot be given. Close the
        stream when done (or use it as a context manager).
        """
        op: _ops.Op[None] = _ops.Op(
            "GET", "/v1/events", lambda r: None, params={"workflow": workflow}
        )
        request = self._http.build_request(
            **_ops.request_of(self.url, op),
            timeout=httpx.Timeout(self.timeout, read=read_timeout),
        )
        request.headers.update(self._headers)
        request.headers["accept"] = "text/event-stream"
        if last_event_id is not None:
            request.headers["last-event-id"] = last_event_id
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _ops.transport_error(exc) from exc
        if not response.is_success:
            response.read()
            response.close()
            raise _ops.error_of(response)
        return EventStream(response, last_event_id)

    # ---- agent side ---------------------------------------------------------------------------

    def register_agent(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        concurrency: int = 1,
        *,
        agent_id: Optional[str] = None,
    ) -> AgentView:
        """Registers an agent, or registers again the agent ``agent_id`` (an id Baton does not
        know is refused: :class:`NotFound` ``agent_not_found``)."""
        return self._call(_ops.register_agent(name, capabilities, concurrency, agent_id))

    def agent_heartbeat(self, agent_id: str) -> AgentView:
        """Keeps an agent alive while it neither claims nor reports."""
        return self._call(_ops.agent_heartbeat(agent_id))

    def claim(
        self, agent_id: str, max_tasks: int = 1, wait_ms: int = 0, *, start: bool = False
    ) -> List[ClaimedTask]:
        """Takes up to ``max_tasks`` ready tasks, waiting up to ``wait_ms`` (at most 60000) for
        some to appear. With ``start``, the claim also starts them (``started`` is true on
        each): they come back executing and need no :meth:`report_started`."""
        return self._call(_ops.claim(agent_id, max_tasks, wait_ms, start, self.timeout))

    def report_started(
        self, task_id: str, agent_id: str, token: int, *, traceparent: Optional[str] = None
    ) -> ReportAnswer:
        """Reports that the agent started the task it was assigned."""
        return self._call(
            _ops.report(Report.started(task_id, agent_id, token, traceparent=traceparent))
        )

    def report_heartbeat(
        self,
        task_id: str,
        agent_id: str,
        token: int,
        progress: JSON = None,
        *,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> ReportAnswer:
        """Reports that the task is still running, with optional progress (any JSON) and
        ``usage``, what the agent has spent so far under this lease by unit (the running
        total: ``{"tokens": 1532, "usd": 0.012}``)."""
        report = Report.heartbeat(
            task_id, agent_id, token, progress, usage=usage, traceparent=traceparent
        )
        return self._call(_ops.report(report))

    def report_succeeded(
        self,
        task_id: str,
        agent_id: str,
        token: int,
        result: JSON,
        *,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> ReportAnswer:
        """Completes the task with ``result`` (any JSON but ``None``), and ``usage`` (the
        running total under this lease, as for :meth:`report_heartbeat`)."""
        report = Report.succeeded(
            task_id, agent_id, token, result, usage=usage, traceparent=traceparent
        )
        return self._call(_ops.report(report))

    def report_failed(
        self,
        task_id: str,
        agent_id: str,
        token: int,
        kind: str,
        message: str,
        *,
        retryable: bool = True,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> ReportAnswer:
        """Fails the attempt; the task's retry policy decides what follows. ``usage`` as for
        :meth:`report_heartbeat`."""
        report = Report.failed(
            task_id,
            agent_id,
            token,
            kind,
            message,
            retryable=retryable,
            usage=usage,
            traceparent=traceparent,
        )
        return self._call(_ops.report(report))

    def report_released(
        self, task_id: str, agent_id: str, token: int, *, traceparent: Optional[str] = None
    ) -> ReportAnswer:
        """Gives the task back, unfailed, for another agent."""
        return self._call(
            _ops.report(Report.released(task_id, agent_id, token, traceparent=traceparent))
        )

    def reports(self, reports: Sequence[ReportLike]) -> List[ReportOutcome]:
        """Sends 1 to 256 reports (:class:`Report`, or mappings with the same keys), on any
        tasks, in one request (``POST /v1/reports``). Each is applied as its own transition,
        reports on one task in their order. Returns one outcome per report, in order: its
        :class:`ReportAnswer`, or the :class:`BatonError` its own ``report_*`` call would have
        raised (a :class:`Conflict` ``stale_lease``, …; ``field`` starts ``reports[i]``),
        returned, not raised, since one refusal changes nothing of the others. Raises only when
        the whole request fails: not a valid batch (:class:`InvalidRequest`), or not
        delivered; each report is safe to send again."""
        return self._call(_ops.reports(reports))

    def add_subtasks(
        self, task_id: str, agent_id: str, token: int, tasks: Sequence[TaskSpecLike]
    ) -> WorkflowCreated:
        """Decomposes an executing task: adds ``tasks`` to its workflow; its dependents wait for
        them too."""
        return self._call(_ops.add_subtasks(task_id, agent_id, token, tasks))

    # ---- artifacts ----------------------------------------------------------------------------

    def put_artifact(
        self, data: ArtifactSource, *, content_type: Optional[str] = None
    ) -> ArtifactStored:
        """Uploads an artifact: ``bytes`` as they are, a path (``str`` or ``os.PathLike``) or a
        binary file object streamed in chunks, never read whole into memory. Refer to it in an
        input or a result with :func:`baton.artifact_ref`. Over the server's limit (256 MiB by
        default) it raises :class:`InvalidRequest` with code ``artifact_too_large`` and nothing
        is stored; the same bytes uploaded again answer ``created`` false."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            return self._call(_ops.put_artifact(raw, content_type, len(raw)))
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                length = os.fstat(f.fileno()).st_size
                return self._call(_ops.put_artifact(_chunks(f), content_type, length))
        return self._call(_ops.put_artifact(_chunks(data), content_type, None))

    def get_artifact(
        self,
        artifact: Union[str, ArtifactStored],
        path: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> Union[bytes, Path]:
        """Downloads an artifact (``sha256:<hex>``, the bare hex, or an :class:`ArtifactStored`),
        checked against its address: its bytes, or with ``path`` written there (the file appears
        only once complete and checked) and the path returned. An unknown artifact raises
        :class:`NotFound` with code ``artifact_not_found``."""
        ref = artifact.artifact if isinstance(artifact, ArtifactStored) else artifact
        request = self._http.build_request(**_ops.request_of(self.url, _ops.get_artifact(ref)))
        request.headers.update(self._headers)
        request.headers["accept"] = "*/*"
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _ops.transport_error(exc) from exc
        try:
            if not response.is_success:
                response.read()
                raise _ops.error_of(response)
            check = _ops.ArtifactCheck(response)
            if path is None:
                parts = []
                for chunk in response.iter_bytes():
                    check.update(chunk)
                    parts.append(chunk)
                check.verify()
                return b"".join(parts)
            target = Path(path)
            part = target.with_name(target.name + ".part")
            try:
                with open(part, "wb") as f:
                    for chunk in response.iter_bytes():
                        check.update(chunk)
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                check.verify()
                os.replace(part, target)
            finally:
                if part.exists():
                    part.unlink()
            return target
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _ops.transport_error(exc) from exc
        finally:
            response.close()


class AsyncClient:
    """The asyncio counterpart of :class:`Client`: the same methods, as coroutines."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 64,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url = _ops.base_url(url)
        self.timeout = timeout
        self._own = http is None
        self._http = http or httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )
        self._headers = _ops.auth_headers(token)

    async def aclose(self) -> None:
        """Closes the connections (if the client made them)."""
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, op: "_ops.Op[T]") -> T:
        request = self._http.build_request(**_ops.request_of(self.url, op))
        request.headers.update(self._headers)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise _ops.transport_error(exc) from exc
        if not response.is_success:
            raise _ops.error_of(response)
        return op.parse(response)

    async def submit_workflow(
        self,
        tasks: Sequence[TaskSpecLike],
        *,
        name: str = "",
        idempotency_key: Optional[str] = None,
        outputs: Optional[Mapping[str, Any]] = None,
        labels: Optional[Mapping[str, str]] = None,
        budgets: Optional[BudgetsLike] = None,
    ) -> WorkflowCreated:
        """See :meth:`Client.submit_workflow`."""
        return await self._call(
            _ops.submit_workflow(tasks, name, idempotency_key, outputs, labels, budgets)
        )

    async def submit_task(
        self,
        task: TaskSpecLike,
        *,
        idempotency_key: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        budgets: Optional[BudgetsLike] = None,
    ) -> TaskCreated:
        """See :meth:`Client.submit_task`."""
        return await self._call(_ops.submit_task(task, idempotency_key, labels, budgets))

    async def get_workflow(self, workflow_id: str) -> WorkflowView:
        """See :meth:`Client.get_workflow`."""
        return await self._call(_ops.get_workflow(workflow_id))

    async def wait_workflow(
        self, workflow_id: str, *, timeout: Optional[float] = None, poll: float = 0.25
    ) -> WorkflowView:
        """See :meth:`Client.wait_workflow`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = await self.get_workflow(workflow_id)
            if view.status != "running":
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"workflow {workflow_id} is still running after {timeout}s")
            await asyncio.sleep(poll)

    async def cancel_workflow(self, workflow_id: str, reason: str = "") -> int:
        """See :meth:`Client.cancel_workflow`."""
        return await self._call(_ops.cancel_workflow(workflow_id, reason))

    async def get_task(self, task_id: str) -> TaskView:
        """See :meth:`Client.get_task`."""
        return await self._call(_ops.get_task(task_id))

    async def task_history(
        self, task_id: str, *, after: Optional[int] = None, limit: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """See :meth:`Client.task_history`."""
        return await self._call(_ops.task_history(task_id, after, limit))

    async def task_upstream(self, task_id: str, *, key: Optional[str] = None) -> Dict[str, Any]:
        """See :meth:`Client.task_upstream`."""
        return await self._call(_ops.task_upstream(task_id, key))

    async def list_tasks(
        self,
        *,
        workflow: Optional[str] = None,
        state: Optional[str] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> TaskPage:
        """See :meth:`Client.list_tasks`."""
        return await self._call(_ops.list_tasks(workflow, state, after, limit))

    async def iter_tasks(
        self,
        *,
        workflow: Optional[str] = None,
        state: Optional[str] = None,
        page_size: int = 100,
    ) -> AsyncIterator[TaskSummary]:
        """See :meth:`Client.iter_tasks`."""
        after: Optional[str] = None
        while True:
            page = await self.list_tasks(
                workflow=workflow, state=state, after=after, limit=page_size
            )
            for task in page.tasks:
                yield task
            if page.next is None or not page.tasks:
                return
            after = page.next

    async def cancel_task(self, task_id: str, reason: str = "") -> ReportAnswer:
        """See :meth:`Client.cancel_task`."""
        return await self._call(_ops.cancel_task(task_id, reason))

    async def retry_task(self, task_id: str) -> ReportAnswer:
        """See :meth:`Client.retry_task`."""
        return await self._call(_ops.retry_task(task_id))

    async def pause_task(self, task_id: str, reason: str, *, now: bool = False) -> ReportAnswer:
        """See :meth:`Client.pause_task`."""
        return await self._call(_ops.pause_task(task_id, reason, now))

    async def resume_task(self, task_id: str, reason: str) -> ReportAnswer:
        """See :meth:`Client.resume_task`."""
        return await self._call(_ops.resume_task(task_id, reason))

    async def skip_task(self, task_id: str, reason: str, result: JSON) -> ReportAnswer:
        """See :meth:`Client.skip_task`."""
        return await self._call(_ops.skip_task(task_id, reason, result))

    async def fail_task(
        self,
        task_id: str,
        reason: str,
        *,
        kind: Optional[str] = None,
        message: Optional[str] = None,
    ) -> ReportAnswer:
        """See :meth:`Client.fail_task`."""
        return await self._call(_ops.fail_task(task_id, reason, kind, message))

    async def rerun_task(
        self, task_id: str, reason: str, *, input: Any = _ops._NO_INPUT, dry_run: bool = False
    ) -> RerunAnswer:
        """See :meth:`Client.rerun_task`."""
        return await self._call(_ops.rerun_task(task_id, reason, input, dry_run))

    async def pause_workflow(
        self, workflow_id: str, reason: str, *, now: bool = False
    ) -> WorkflowControlAnswer:
        """See :meth:`Client.pause_workflow`."""
        return await self._call(_ops.pause_workflow(workflow_id, reason, now))

    async def resume_workflow(self, workflow_id: str, reason: str) -> WorkflowControlAnswer:
        """See :meth:`Client.resume_workflow`."""
        return await self._call(_ops.resume_workflow(workflow_id, reason))

    async def set_budgets(
        self, workflow_id: str, reason: str, budgets: BudgetsLike
    ) -> WorkflowView:
        """See :meth:`Client.set_budgets`."""
        return await self._call(_ops.set_budgets(workflow_id, reason, budgets))

    async def usage(self, *, label: Optional[str] = None) -> Dict[str, float]:
        """See :meth:`Client.usage`."""
        return await self._call(_ops.usage(label))

    async def audit(
        self,
        *,
        actor: Optional[str] = None,
        workflow: Optional[str] = None,
        action: Optional[str] = None,
        since: Optional[int] = None,
        until: Optional[int] = None,
        before: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> AuditPage:
        """See :meth:`Client.audit`."""
        return await self._call(_ops.audit(actor, workflow, action, since, until, before, limit))

    async def signal(
        self,
        workflow_id: str,
        name: str,
        data: JSON = None,
        *,
        reject: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        by: Optional[str] = None,
    ) -> SignalSent:
        """See :meth:`Client.signal`."""
        return await self._call(
            _ops.signal(workflow_id, name, data, reject, idempotency_key, by)
        )

    async def signals(
        self, workflow_id: str, *, after: Optional[int] = None, limit: Optional[int] = None
    ) -> SignalPage:
        """See :meth:`Client.signals`."""
        return await self._call(_ops.signals(workflow_id, after, limit))

    async def waiting(
        self,
        workflow: Optional[str] = None,
        *,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> WaitingPage:
        """See :meth:`Client.waiting`."""
        return await self._call(_ops.waiting(workflow, after, limit))

    async def create_schedule(self, spec: Mapping[str, Any]) -> ScheduleView:
        """See :meth:`Client.create_schedule`."""
        return await self._call(_ops.create_schedule(spec))

    async def list_schedules(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> SchedulePage:
        """See :meth:`Client.list_schedules`."""
        return await self._call(_ops.list_schedules(after, limit))

    async def iter_schedules(self, *, page_size: int = 100) -> AsyncIterator[ScheduleView]:
        """See :meth:`Client.iter_schedules`."""
        after: Optional[str] = None
        while True:
            page = await self.list_schedules(after=after, limit=page_size)
            for schedule in page.schedules:
                yield schedule
            if page.next is None:
                return
            after = page.next

    async def schedules(self) -> List[ScheduleView]:
        """See :meth:`Client.schedules`."""
        return [s async for s in self.iter_schedules(page_size=1000)]

    async def schedule(self, name: str) -> ScheduleView:
        """See :meth:`Client.schedule`."""
        return await self._call(_ops.schedule(name))

    async def pause_schedule(self, name: str) -> ScheduleView:
        """See :meth:`Client.pause_schedule`."""
        return await self._call(_ops.pause_schedule(name, True))

    async def resume_schedule(self, name: str) -> ScheduleView:
        """See :meth:`Client.resume_schedule`."""
        return await self._call(_ops.pause_schedule(name, False))

    async def delete_schedule(self, name: str) -> None:
        """See :meth:`Client.delete_schedule`."""
        await self._call(_ops.delete_schedule(name))

    async def put_trigger(self, name: str, template: Mapping[str, Any]) -> TriggerView:
        """See :meth:`Client.put_trigger`."""
        return await self._call(_ops.put_trigger(name, template))

    async def list_triggers(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> TriggerPage:
        """See :meth:`Client.list_triggers`."""
        return await self._call(_ops.list_triggers(after, limit))

    async def iter_triggers(self, *, page_size: int = 100) -> AsyncIterator[TriggerView]:
        """See :meth:`Client.iter_triggers`."""
        after: Optional[str] = None
        while True:
            page = await self.list_triggers(after=after, limit=page_size)
            for trigger in page.triggers:
                yield trigger
            if page.next is None:
                return
            after = page.next

    async def triggers(self) -> List[TriggerView]:
        """See :meth:`Client.triggers`."""
        return [t async for t in self.iter_triggers(page_size=1000)]

    async def trigger(self, name: str) -> TriggerView:
        """See :meth:`Client.trigger`."""
        return await self._call(_ops.trigger(name))

    async def fire_trigger(
        self, name: str, input: JSON = None, *, idempotency_key: Optional[str] = None
    ) -> WorkflowCreated:
        """See :meth:`Client.fire_trigger`."""
        return await self._call(_ops.fire_trigger(name, input, idempotency_key))

    async def delete_trigger(self, name: str) -> None:
        """See :meth:`Client.delete_trigger`."""
        await self._call(_ops.delete_trigger(name))

    async def set_limit(self, key: str, units: int, per_ms: int) -> LimitView:
        """See :meth:`Client.set_limit`."""
        return await self._call(_ops.set_limit(key, units, per_ms))

    async def limits(self) -> List[LimitView]:
        """See :meth:`Client.limits`."""
        return await self._call(_ops.limits())

    async def limit(self, key: str) -> LimitView:
        """See :meth:`Client.limit`."""
        return await self._call(_ops.limit(key))

    async def delete_limit(self, key: str) -> None:
        """See :meth:`Client.delete_limit`."""
        await self._call(_ops.delete_limit(key))

    async def counts(self, workflow: Optional[str] = None) -> Counts:
        """See :meth:`Client.counts`."""
        return await self._call(_ops.counts(workflow))

    async def list_agents(
        self, *, after: Optional[str] = None, limit: Optional[int] = None
    ) -> AgentPage:
        """See :meth:`Client.list_agents`."""
        return await self._call(_ops.list_agents(after, limit))

    async def iter_agents(self, *, page_size: int = 100) -> AsyncIterator[AgentView]:
        """See :meth:`Client.iter_agents`."""
        after: Optional[str] = None
        while True:
            page = await self.list_agents(after=after, limit=page_size)
            for agent in page.agents:
                yield agent
            if page.next is None or not page.agents:
                return
            after = page.next

    async def agents(self) -> List[AgentView]:
        """See :meth:`Client.agents`."""
        return [a async for a in self.iter_agents(page_size=1000)]

    async def lifecycle(self, format: str = "mermaid") -> str:
        """See :meth:`Client.lifecycle`."""
        return await self._call(_ops.lifecycle(format))

    async def events(
        self,
        workflow: Optional[str] = None,
        *,
        read_timeout: float = EVENTS_READ_TIMEOUT,
        last_event_id: Optional[str] = None,
    ) -> AsyncEventStream:
        """See :meth:`Client.events`."""
        op: _ops.Op[None] = _ops.Op(
            "GET", "/v1/events", lambda r: None, params={"workflow": workflow}
        )
        request = self._http.build_request(
            **_ops.request_of(self.url, op),
            timeout=httpx.Timeout(self.timeout, read=read_timeout),
        )
        request.headers.update(self._headers)
        request.headers["accept"] = "text/event-stream"
        if last_event_id is not None:
            request.headers["last-event-id"] = last_event_id
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _ops.transport_error(exc) from exc
        if not response.is_success:
            await response.aread()
            await response.aclose()
            raise _ops.error_of(response)
        return AsyncEventStream(response, last_event_id)

    async def register_agent(
        self,
        name: str,
        capabilities: Sequence[str] = (),
        concurrency: int = 1,
        *,
        agent_id: Optional[str] = None,
    ) -> AgentView:
        """See :meth:`Client.register_agent`."""
        return await self._call(_ops.register_agent(name, capabilities, concurrency, agent_id))

    async def agent_heartbeat(self, agent_id: str) -> AgentView:
        """See :meth:`Client.agent_heartbeat`."""
        return await self._call(_ops.agent_heartbeat(agent_id))

    async def claim(
        self, agent_id: str, max_tasks: int = 1, wait_ms: int = 0, *, start: bool = False
    ) -> List[ClaimedTask]:
        """See :meth:`Client.claim`."""
        return await self._call(_ops.claim(agent_id, max_tasks, wait_ms, start, self.timeout))

    async def report_started(
        self, task_id: str, agent_id: str, token: int, *, traceparent: Optional[str] = None
    ) -> ReportAnswer:
        """See :meth:`Client.report_started`."""
        return await self._call(
            _ops.report(Report.started(task_id, agent_id, token, traceparent=traceparent))
        )

    async def report_heartbeat(
        self,
        task_id: str,
        agent_id: str,
        token: int,
        progress: JSON = None,
        *,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> ReportAnswer:
        """See :meth:`Client.report_heartbeat`."""
        report = Report.heartbeat(
            task_id, agent_id, token, progress, usage=usage, traceparent=traceparent
        )
        return await self._call(_ops.report(report))

    async def report_succeeded(
        self,
        task_id: str,
        agent_id: str,
        token: int,
        result: JSON,
        *,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> ReportAnswer:
        """See :meth:`Client.report_succeeded`."""
        report = Report.succeeded(
            task_id, agent_id, token, result, usage=usage, traceparent=traceparent
        )
        return await self._call(_ops.report(report))

    async def report_failed(
        self,
        task_id: str,
        agent_id: str,
        token: int,
        kind: str,
        message: str,
        *,
        retryable: bool = True,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> ReportAnswer:
        """See :meth:`Client.report_failed`."""
        report = Report.failed(
            task_id,
            agent_id,
            token,
            kind,
            message,
            retryable=retryable,
            usage=usage,
            traceparent=traceparent,
        )
        return await self._call(_ops.report(report))

    async def report_released(
        self, task_id: str, agent_id: str, token: int, *, traceparent: Optional[str] = None
    ) -> ReportAnswer:
        """See :meth:`Client.report_released`."""
        return await self._call(
            _ops.report(Report.released(task_id, agent_id, token, traceparent=traceparent))
        )

    async def reports(self, reports: Sequence[ReportLike]) -> List[ReportOutcome]:
        """See :meth:`Client.reports`."""
        return await self._call(_ops.reports(reports))

    async def add_subtasks(
        self, task_id: str, agent_id: str, token: int, tasks: Sequence[TaskSpecLike]
    ) -> WorkflowCreated:
        """See :meth:`Client.add_subtasks`."""
        return await self._call(_ops.add_subtasks(task_id, agent_id, token, tasks))

    async def put_artifact(
        self, data: ArtifactSource, *, content_type: Optional[str] = None
    ) -> ArtifactStored:
        """See :meth:`Client.put_artifact`; a file is read off the event loop."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            return await self._call(_ops.put_artifact(raw, content_type, len(raw)))
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                length = os.fstat(f.fileno()).st_size
                return await self._call(_ops.put_artifact(_achunks(f), content_type, length))
        return await self._call(_ops.put_artifact(_achunks(data), content_type, None))

    async def get_artifact(
        self,
        artifact: Union[str, ArtifactStored],
        path: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> Union[bytes, Path]:
        """See :meth:`Client.get_artifact`; a file is written off the event loop."""
        ref = artifact.artifact if isinstance(artifact, ArtifactStored) else artifact
        request = self._http.build_request(**_ops.request_of(self.url, _ops.get_artifact(ref)))
        request.headers.update(self._headers)
        request.headers["accept"] = "*/*"
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _ops.transport_error(exc) from exc
        try:
            if not response.is_success:
                await response.aread()
                raise _ops.error_of(response)
            check = _ops.ArtifactCheck(response)
            if path is None:
                parts = []
                async for chunk in response.aiter_bytes():
                    check.update(chunk)
                    parts.append(chunk)
                check.verify()
                return b"".join(parts)
            target = Path(path)
            part = target.with_name(target.name + ".part")
            try:
                with open(part, "wb") as f:
                    async for chunk in response.aiter_bytes():
                        check.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
                    await asyncio.to_thread(f.flush)
                    await asyncio.to_thread(os.fsync, f.fileno())
                check.verify()
                os.replace(part, target)
            finally:
                if part.exists():
                    part.unlink()
            return target
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _ops.transport_error(exc) from exc
        finally:
            await response.aclose()


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    """A binary file's bytes, chunk by chunk."""
    while True:
        chunk = f.read(_ops.ARTIFACT_CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


async def _achunks(f: BinaryIO) -> AsyncIterator[bytes]:
    """A binary file's bytes, chunk by chunk, each read in a worker thread."""
    while True:
        chunk = await asyncio.to_thread(f.read, _ops.ARTIFACT_CHUNK_BYTES)
        if not chunk:
            return
        yield chunk
