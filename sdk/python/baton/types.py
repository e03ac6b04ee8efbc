"""Wire types of the Baton ``/v1`` API.

Requests are built from :class:`TaskSpec` (or plain dicts with the same keys); responses are
decoded into frozen dataclasses. Fields the server adds later are ignored, so an older SDK
keeps working against a newer server. Times are milliseconds since the Unix epoch; ids are
UUID strings; task states are lower-case names (``"pending"``, ``"completed"``...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Type, TypeVar, Union

__all__ = [
    "STATES",
    "TERMINAL_STATES",
    "JSON",
    "RetryPolicy",
    "Timeouts",
    "Compensation",
    "RateUse",
    "ConcurrencyKey",
    "TaskSpec",
    "TaskSpecLike",
    "spec_to_json",
    "Report",
    "ReportLike",
    "REPORT_KINDS",
    "REPORTS_PER_BATCH_MAX",
    "report_to_json",
    "WorkflowCreated",
    "TaskCreated",
    "Counts",
    "WorkflowView",
    "TaskSummary",
    "TaskPage",
    "Lease",
    "Deadlines",
    "Dependency",
    "TaskView",
    "AgentView",
    "ClaimedTask",
    "ReportAnswer",
    "TransitionEvent",
    "Lagged",
    "ArtifactStored",
    "artifact_ref",
    "SignalView",
    "SignalDelivery",
    "SignalSent",
    "SignalPage",
    "WaitingTask",
    "WaitingPage",
    "ScheduleView",
    "TriggerView",
    "LimitView",
    "workflow_template_to_json",
]

JSON = Any
"""Any JSON value: ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``."""

STATES = ("blocked", "pending", "assigned", "executing", "completed", "failed", "cancelled")
"""Every task state, in lifecycle order."""

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
"""States a task may end in. A ``failed`` task may still be retried (see ``TaskView.waiting``)."""


# ---- requests --------------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """How often and how patiently a task is retried. ``None`` leaves the server's default."""

    max_attempts: Optional[int] = None
    initial_backoff_ms: Optional[int] = None
    backoff_multiplier: Optional[float] = None
    max_backoff_ms: Optional[int] = None
    jitter: Optional[float] = None
    non_retryable: Optional[Sequence[str]] = None
    """Error kinds (a handler's exception class names) that fail the task at once."""


@dataclass
class Timeouts:
    """Watchdog deadlines in milliseconds. ``None`` leaves the server's default.

    To switch a deadline off, pass a mapping with an explicit ``None`` instead, e.g.
    ``TaskSpec("k", timeouts={"heartbeat_ms": None})``.
    """

    schedule_to_start_ms: Optional[int] = None
    start_ms: Optional[int] = None
    start_to_close_ms: Optional[int] = None
    heartbeat_ms: Optional[int] = None


@dataclass
class Compensation:
    """The task submitted if its task ends failed for good or cancelled. Unset ``retry`` and
    ``timeouts`` take the server's defaults, unset ``priority`` the failed task's. Its handler
    gets ``{"compensates", "task", "input", "task_input", "errors", "error"}`` (the OpenAPI
    document's ``CompensationInput``)."""

    key: str
    capabilities: Sequence[str] = ()
    input: JSON = None
    retry: Union["RetryPolicy", Mapping[str, Any], None] = None
    timeouts: Union["Timeouts", Mapping[str, Any], None] = None
    priority: Optional[int] = None


@dataclass
class RateUse:
    """Units a task draws from the named rate limit ``key`` (:meth:`Client.set_limit`) when it
    is claimed; ``None`` units draw 1. With ``usage_unit`` (e.g. ``"tokens"``), ``units`` is an
    estimate: when the attempt ends, the limit is charged what the agent reported in that unit
    (``ctx.report_usage``) instead."""

    key: str
    units: Optional[int] = None
    usage_unit: Optional[str] = None


@dataclass
class ConcurrencyKey:
    """At most ``max`` tasks holding ``key`` are assigned or executing at once, across
    workflows. The key may name values of the task's input as ``{/json/pointer}``
    (``"tenant-{/tenant}"``)."""

    key: str
    max: int


def ref(key: str, pointer: str = "") -> Dict[str, Any]:
    """A value of a task's ``input`` that stands for the result of its dependency ``key``, or
    what the JSON Pointer ``pointer`` (RFC 6901, e.g. ``"/sections/0"``) finds in it: the server
    resolves it when the task becomes ready. Also the shape of ``TaskSpec.for_each``."""
    out: Dict[str, Any] = {"$from": key}
    if pointer:
        out["pointer"] = pointer
    return out


def literal(value: JSON) -> Dict[str, Any]:
    """An input value taken as written even if it looks like a reference (``{"$from": ...}``)."""
    return {"$literal": value}


@dataclass
class TaskSpec:
    """One task to submit. Only ``key`` is required; unset fields take the server's defaults.

    ``capabilities`` are all required of the agent that runs it; ``depends_on`` names other
    tasks of the same workflow by key; ``on_agent_lost`` is ``"fail"`` or ``"requeue"``.
    ``input`` may hold references to dependencies' results (:func:`ref`). With ``for_each``
    (a :func:`ref` to an array in a dependency's result) the task is run by no agent: it
    expands into one task per element (keys ``KEY[0]``, ``KEY[1]``, …, the element at
    ``item`` in their input, which must then be a mapping) and completes with their results
    in element order. With ``wait_for`` (``{"signal": NAME, "timeout_ms": N}``, the timeout
    optional) the task is run by no agent either: once ready it waits until a signal ``NAME``
    is sent to its workflow (:meth:`Client.signal`), whose data becomes its result.
    ``rate`` (:class:`RateUse`) and ``concurrency`` (:class:`ConcurrencyKey`) hold the task
    back while a named rate limit lacks its units or a concurrency key is full. Among ready
    tasks of equal priority, claims take from each ``fairness_key`` (e.g.
    ``"tenant-{/tenant}"``, filled in from the input; the workflow without one) in turn, up to
    32 tasks of a group at a time.
    """

    key: str
    depends_on: Sequence[str] = ()
    capabilities: Sequence[str] = ()
    input: JSON = None
    priority: Optional[int] = None
    retry: Union[RetryPolicy, Mapping[str, Any], None] = None
    timeouts: Union[Timeouts, Mapping[str, Any], None] = None
    on_agent_lost: Optional[str] = None
    compensation: Union[Compensation, Mapping[str, Any], None] = None
    for_each: Optional[Mapping[str, Any]] = None
    wait_for: Optional[Mapping[str, Any]] = None
    rate: Sequence[Union[RateUse, Mapping[str, Any]]] = ()
    concurrency: Sequence[Union[ConcurrencyKey, Mapping[str, Any]]] = ()
    fairness_key: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        """The spec as the server expects it, without the fields left unset."""
        out: Dict[str, Any] = {"key": self.key}
        if self.depends_on:
            out["depends_on"] = list(self.depends_on)
        if self.capabilities:
            out["capabilities"] = list(self.capabilities)
        if self.input is not None:
            out["input"] = self.input
        if self.priority is not None:
            out["priority"] = self.priority
        if self.on_agent_lost is not None:
            out["on_agent_lost"] = self.on_agent_lost
        if self.for_each is not None:
            out["for_each"] = dict(self.for_each)
        if self.wait_for is not None:
            out["wait_for"] = dict(self.wait_for)
        if self.rate:
            out["rate"] = [_set_fields(r) for r in self.rate]
        if self.concurrency:
            out["concurrency"] = [_set_fields(c) for c in self.concurrency]
        if self.fairness_key is not None:
            out["fairness_key"] = self.fairness_key
        for name in ("retry", "timeouts", "compensation"):
            value = _set_fields(getattr(self, name))
            if value is not None:
                out[name] = value
        return out


TaskSpecLike = Union[TaskSpec, Mapping[str, Any]]
"""A :class:`TaskSpec` or a mapping with the same keys, sent as it is."""


def spec_to_json(spec: TaskSpecLike) -> Dict[str, Any]:
    """The JSON object for a :class:`TaskSpec` or a mapping."""
    if isinstance(spec, TaskSpec):
        return spec.to_json()
    if isinstance(spec, Mapping):
        return dict(spec)
    raise TypeError(f"a task spec must be a TaskSpec or a mapping, not {type(spec).__name__}")


REPORT_KINDS = ("started", "heartbeat", "succeeded", "failed", "released")
"""What an agent reports on a task it holds (``POST /v1/tasks/{task}/{kind}``)."""

REPORTS_PER_BATCH_MAX = 256
"""Most reports one :meth:`Client.reports` request may carry (the server's bound)."""


@dataclass(frozen=True)
class Report:
    """One report of an agent on a task it holds, as sent in a batch (:meth:`Client.reports`):
    the body of ``POST /v1/tasks/{task}/{report}`` with ``task`` and ``report`` (one of
    :data:`REPORT_KINDS`) beside it. Build it with the constructor of its kind
    (:meth:`started`, :meth:`heartbeat`, :meth:`succeeded`, :meth:`failed`, :meth:`released`),
    which take the arguments of the matching ``Client.report_*`` call; the fields a kind does
    not carry stay ``None``."""

    report: str
    task: str
    agent: str
    token: int
    traceparent: Optional[str] = None
    progress: JSON = None
    """``heartbeat``: the progress (any JSON; ``None``: none)."""
    usage: Optional[Mapping[str, float]] = None
    """``heartbeat``, ``succeeded``, ``failed``: spending under this lease so far, by unit."""
    result: JSON = None
    """``succeeded``: the result (any JSON but ``None``)."""
    error: Optional[Mapping[str, Any]] = None
    """``failed``: ``{"kind": …, "message": …, "retryable": …}``."""

    @classmethod
    def started(
        cls, task_id: str, agent_id: str, token: int, *, traceparent: Optional[str] = None
    ) -> "Report":
        """As :meth:`Client.report_started`."""
        return cls("started", task_id, agent_id, token, traceparent)

    @classmethod
    def heartbeat(
        cls,
        task_id: str,
        agent_id: str,
        token: int,
        progress: JSON = None,
        *,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> "Report":
        """As :meth:`Client.report_heartbeat`."""
        return cls("heartbeat", task_id, agent_id, token, traceparent, progress, usage)

    @classmethod
    def succeeded(
        cls,
        task_id: str,
        agent_id: str,
        token: int,
        result: JSON,
        *,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> "Report":
        """As :meth:`Client.report_succeeded`."""
        return cls("succeeded", task_id, agent_id, token, traceparent, usage=usage, result=result)

    @classmethod
    def failed(
        cls,
        task_id: str,
        agent_id: str,
        token: int,
        kind: str,
        message: str,
        *,
        retryable: bool = True,
        usage: Optional[Mapping[str, float]] = None,
        traceparent: Optional[str] = None,
    ) -> "Report":
        """As :meth:`Client.report_failed`."""
        error = {"kind": kind, "message": message, "retryable": retryable}
        return cls("failed", task_id, agent_id, token, traceparent, usage=usage, error=error)

    @classmethod
    def released(
        cls, task_id: str, agent_id: str, token: int, *, traceparent: Optional[str] = None
    ) -> "Report":
        """As :meth:`Client.report_released`."""
        return cls("released", task_id, agent_id, token, traceparent)

    def body(self) -> Dict[str, Any]:
        """The body of its own request (``POST /v1/tasks/{task}/{report}``)."""
        out: Dict[str, Any] = {"agent": self.agent, "token": self.token}
        if self.report == "succeeded":
            out["result"] = self.result
        if self.progress is not None:
            out["progress"] = self.progress
        if self.error is not None:
            out["error"] = dict(self.error)
        if self.usage:
            out["usage"] = dict(self.usage)
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
        return out

    def to_json(self) -> Dict[str, Any]:
        """The report as an item of a batch."""
        return {"report": self.report, "task": self.task, **self.body()}


ReportLike = Union[Report, Mapping[str, Any]]
"""A :class:`Report` or a mapping with the keys of a batch's item, sent as it is."""


def report_to_json(report: ReportLike) -> Dict[str, Any]:
    """The JSON object for a :class:`Report` or a mapping."""
    if isinstance(report, Report):
        return report.to_json()
    if isinstance(report, Mapping):
        return dict(report)
    raise TypeError(f"a report must be a Report or a mapping, not {type(report).__name__}")


def workflow_template_to_json(template: Mapping[str, Any]) -> Dict[str, Any]:
    """A schedule's or trigger's workflow (``name``, ``tasks``, ``outputs``) as JSON, its tasks
    given as :class:`TaskSpec` or mappings."""
    if not isinstance(template, Mapping):
        raise TypeError(
            "a workflow template must be a mapping with `tasks`, not "
            f"{type(template).__name__}"
        )
    out = dict(template)
    tasks = out.get("tasks")
    if isinstance(tasks, (list, tuple)):
        out["tasks"] = [spec_to_json(t) for t in tasks]
    return out


def _set_fields(value: Any) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    out = {}
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if v is None:
            continue
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = _set_fields(v)
        out[f.name] = list(v) if isinstance(v, (tuple, list)) else v
    return out


# ---- responses -------------------------------------------------------------------------------

T = TypeVar("T")


def _build(cls: Type[T], data: Mapping[str, Any], **convert: Callable[[Any], Any]) -> T:
    """``cls`` from the known keys of ``data``, nested values converted by ``convert``."""
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in convert and value is not None:
            value = convert[f.name](value)
        kwargs[f.name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class WorkflowCreated:
    """A submitted workflow. ``created`` is false when an earlier submission with the same
    idempotency key is returned. ``tasks`` maps task keys to task ids."""

    workflow: str
    created: bool
    tasks: Dict[str, str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkflowCreated":
        return _build(cls, data)


@dataclass(frozen=True)
class ArtifactStored:
    """An uploaded artifact. ``artifact`` is its reference, ``sha256:<hex>`` (the SHA-256 of
    its bytes); put it in an input or a result with :func:`artifact_ref`. ``created`` is false
    when the same bytes were stored already."""

    artifact: str
    size: int
    created: bool
    content_type: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ArtifactStored":
        return _build(cls, data)


def artifact_ref(artifact: Union[str, "ArtifactStored"]) -> Dict[str, str]:
    """The JSON value that refers to an artifact in an input or a result:
    ``{"$artifact": "sha256:…"}``."""
    ref = artifact.artifact if isinstance(artifact, ArtifactStored) else artifact
    return {"$artifact": ref}


@dataclass(frozen=True)
class TaskCreated:
    """A task submitted as a workflow of its own."""

    workflow: str
    task: str
    created: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskCreated":
        return _build(cls, data)


@dataclass(frozen=True)
class Counts:
    """Tasks per state."""

    blocked: int = 0
    pending: int = 0
    assigned: int = 0
    executing: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0
    #: Of the tasks above, how many an operator has paused (they keep their state).
    paused: int = 0
    #: Of the ``failed`` tasks, those with a retry scheduled (``failed - retrying`` failed for
    #: good).
    retrying: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Counts":
        return _build(cls, data)


@dataclass(frozen=True)
class WorkflowView:
    """A workflow, its task counts and where it stands: ``status`` is ``"running"`` until
    every task has ended, then ``"completed"``, ``"failed"`` or ``"cancelled"``. ``result`` is
    its declared ``outputs`` resolved, once it has ended (``get_workflow`` only); ``unresolved``
    names an output reference that found nothing; ``labels`` are those it was submitted with."""

    id: str
    name: str
    idempotency_key: Optional[str]
    created_at: int
    counts: Counts
    status: str = "running"
    outputs: Optional[Dict[str, Any]] = None
    result: JSON = None
    unresolved: Optional[Dict[str, Any]] = None
    labels: Dict[str, str] = field(default_factory=dict)
    #: While an operator (or a budget: ``by`` is ``"budget"``) has paused the workflow:
    #: ``{"by", "reason", "at"}``.
    paused: Optional[Dict[str, Any]] = None
    #: What its agents have reported spending, by unit (``{"tokens": 900, "usd": 2.4}``).
    usage: Dict[str, float] = field(default_factory=dict)
    #: Its budgets by unit: ``{"usd": {"limit": 5, "policy": "pause"}}``.
    budgets: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkflowView":
        return _build(cls, data, counts=Counts.from_json)


@dataclass(frozen=True)
class TaskSummary:
    """A task as listed by ``GET /v1/tasks``."""

    id: str
    workflow: str
    key: str
    state: str
    attempt: int
    version: int
    priority: int
    updated_at: int
    #: An operator paused it (in whatever state it is).
    paused: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskSummary":
        return _build(cls, data)


@dataclass(frozen=True)
class TaskPage:
    """One page of tasks; pass ``next`` as ``after`` for the following page (``None`` at the
    end)."""

    tasks: List[TaskSummary]
    next: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskPage":
        return _build(cls, data, tasks=lambda ts: [TaskSummary.from_json(t) for t in ts])


@dataclass(frozen=True)
class Lease:
    """The lease an agent holds on a task; ``token`` is the fencing token."""

    id: str
    agent: str
    token: int
    granted_at: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Lease":
        return _build(cls, data)


@dataclass(frozen=True)
class Deadlines:
    """A task's armed deadlines, in ms since the epoch (``None`` when not armed)."""

    schedule_to_start: Optional[int] = None
    start: Optional[int] = None
    start_to_close: Optional[int] = None
    heartbeat: Optional[int] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Deadlines":
        return _build(cls, data)


@dataclass(frozen=True)
class Dependency:
    """A task another depends on, and where it stands."""

    key: str
    id: str
    state: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Dependency":
        return _build(cls, data)


@dataclass(frozen=True)
class TaskView:
    """A task with everything known about it.

    ``detail`` is the state with its data (lease, result, error, retry time, cancel reason);
    ``errors`` every failed attempt, oldest first (``{"kind", "message", "retryable", ...}``);
    ``waiting`` why a task that has not ended waits (``{"reason": "dependencies" |
    "no_capable_agent" | "agents_busy" | "rate_limited" | "concurrency_full" | "leased" |
    "backing_off" | "signal" | "timer", ...}``, ``None`` once it has ended; ``rate_limited``
    adds the ``limit``, the ``units`` the task draws, those ``available`` and ``until`` when the
    limit will have them; ``concurrency_full`` adds the ``key`` as filled in from the input, how
    many tasks ``held`` it and its ``max``); ``history`` every event, oldest first (``{"seq",
    "at", "actor", "event", "data"}``).
    ``input`` is, for a task whose ``spec["input"]`` holds references, the input resolved when
    it became ready (what its agent was handed); ``None`` otherwise.
    """

    id: str
    workflow: str
    key: str
    state: str
    version: int
    attempt: int
    attempts_allowed: int
    fencing_token: int
    spec: Dict[str, Any]
    detail: Dict[str, Any] = field(default_factory=dict)
    result: JSON = None
    errors: List[Dict[str, Any]] = field(default_factory=list)
    lease: Optional[Lease] = None
    deadlines: Deadlines = field(default_factory=Deadlines)
    entered_at: Dict[str, int] = field(default_factory=dict)
    waiting: Optional[Dict[str, Any]] = None
    dependencies: List[Dependency] = field(default_factory=list)
    dependents: List[str] = field(default_factory=list)
    history: List[Dict[str, Any]] = field(default_factory=list)
    created_at: int = 0
    updated_at: int = 0
    input: JSON = None
    #: While an operator has paused the task: ``{"by", "reason", "at"}``.
    paused: Optional[Dict[str, Any]] = None
    #: What its agents have reported spending, by unit, all attempts together.
    usage: Dict[str, float] = field(default_factory=dict)
    #: The operator's control that last took its lease away or ended it: ``{"event", "by",
    #: "reason"}``.
    overruled: Optional[Dict[str, Any]] = None

    @property
    def events(self) -> List[str]:
        """The names of the history's events, oldest first."""
        return [str(h.get("event")) for h in self.history]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TaskView":
        return _build(
            cls,
            data,
            lease=Lease.from_json,
            deadlines=Deadlines.from_json,
            dependencies=lambda ds: [Dependency.from_json(d) for d in ds],
        )


@dataclass(frozen=True)
class AgentView:
    """A registered agent. ``leased`` lists the tasks it holds leases on; ``liveness_ms`` is
    the silence after which it is declared dead; ``registered_by`` the token that first
    registered it (``local`` for loopback clients without tokens): each token may have at most
    so many agents (``baton serve --agents-per-token-max``), and an agent silent for the agent
    retention is deleted."""

    id: str
    name: str
    capabilities: List[str]
    concurrency: int
    online: bool
    registered_at: int
    last_seen: int
    leased: List[str] = field(default_factory=list)
    liveness_ms: int = 0
    registered_by: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AgentView":
        return _build(cls, data)


@dataclass(frozen=True)
class AgentPage:
    """One page of agents, by id (their registration order); pass ``next`` as ``after`` for
    the following page (``None`` at the end)."""

    agents: List[AgentView]
    next: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AgentPage":
        return _build(cls, data, agents=lambda xs: [AgentView.from_json(a) for a in xs])


@dataclass(frozen=True)
class ClaimedTask:
    """A task handed to an agent with its lease. Send ``token`` back with every report;
    ``idempotency_key`` is stable across redeliveries of this attempt."""

    task: str
    workflow: str
    key: str
    attempt: int
    lease: str
    token: int
    input: JSON
    deadlines: Deadlines
    traceparent: str
    idempotency_key: str
    upstream: Dict[str, Any] = field(default_factory=dict)
    """The dependencies' results by key, as sent: ``{"task": id, "result": value}``, or
    ``{"task": id, "withheld_bytes": n}`` for a result the claim answer withheld over its size
    budget (:attr:`baton.TaskContext.upstream` reads those on access)."""
    started: bool = False
    """The claim started it (``claim(..., start=True)``): it is executing, its deadlines are
    running, and no ``started`` report is needed."""
    version: int = 0
    """The task's version as the claim left it."""
    capabilities: List[str] = field(default_factory=list)
    """The capabilities the task requires (a subset of the agent's): with several handlers,
    the agent picks one by them."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ClaimedTask":
        return _build(cls, data, deadlines=Deadlines.from_json)


@dataclass(frozen=True)
class ReportAnswer:
    """Where a task stands after a report or an operator's command."""

    task: str
    state: str
    version: int
    attempt: int
    token: int
    cancelled: bool
    deadlines: Deadlines

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ReportAnswer":
        return _build(cls, data, deadlines=Deadlines.from_json)


@dataclass(frozen=True)
class TransitionEvent:
    """One accepted transition, as the event stream sends it. ``from_`` is ``None`` for the
    submission."""

    task: str
    workflow: str
    key: str
    event: str
    from_: Optional[str]
    to: str
    version: int
    attempt: int
    at: int
    agent: Optional[str] = None
    seq: int = 0
    """Its number in the serving node's stream."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TransitionEvent":
        renamed = dict(data)
        renamed["from_"] = renamed.pop("from", None)
        return _build(cls, renamed)


@dataclass(frozen=True)
class WorkflowEnded:
    """A workflow ended: every task of it has. ``status`` is ``"completed"``, ``"failed"`` or
    ``"cancelled"``; read :meth:`Client.get_workflow` for its result."""

    workflow: str
    status: str
    at: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkflowEnded":
        return _build(cls, data)


@dataclass(frozen=True)
class Lagged:
    """The event stream fell behind and dropped ``missed`` transitions; re-read the tasks you
    follow (e.g. with ``list_tasks``) to catch up."""

    missed: int


@dataclass(frozen=True)
class SignalView:
    """A signal sent to a workflow. ``id`` increases in the order signals were sent; ``data``
    is what completes the waiting tasks (``None`` for a rejection, whose reason is
    ``reject``); ``sent_by`` is who sent it (the token's name; without tokens ``"local"``
    unless told); ``delivered_at`` is
    ``None`` while it is kept for a task that does not wait yet."""

    id: int
    workflow: str
    name: str
    sent_by: str
    sent_at: int
    data: JSON = None
    reject: Optional[str] = None
    idempotency_key: Optional[str] = None
    delivered_at: Optional[int] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SignalView":
        return _build(cls, data)


@dataclass(frozen=True)
class SignalDelivery:
    """A task a signal ended: ``state`` is ``"completed"``, or ``"failed"`` for a rejection."""

    id: str
    key: str
    state: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SignalDelivery":
        return _build(cls, data)


@dataclass(frozen=True)
class SignalSent:
    """What sending a signal did. ``created`` is false when its ``Idempotency-Key`` was used
    before: ``signal`` is then the first one, applied once, and ``delivered_to`` is empty.
    ``delivered_to`` is also empty when no task waited: the signal is kept for the next task
    of the workflow that waits for it."""

    signal: SignalView
    created: bool
    delivered_to: List[SignalDelivery] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SignalSent":
        return _build(
            cls,
            data,
            signal=SignalView.from_json,
            delivered_to=lambda ds: [SignalDelivery.from_json(d) for d in ds],
        )


@dataclass(frozen=True)
class SignalPage:
    """One page of a workflow's signals, oldest first; pass ``next`` as ``after`` for the
    following page (``None`` at the end)."""

    signals: List[SignalView]
    next: Optional[int] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SignalPage":
        return _build(cls, data, signals=lambda ss: [SignalView.from_json(s) for s in ss])


@dataclass(frozen=True)
class WaitingTask:
    """A task waiting for a signal: send ``signal`` to ``workflow`` to end its wait. ``since``
    is when it started waiting, ``until`` when the wait times out (``None``: never); ``input``
    is what it was given (what a person approves)."""

    id: str
    workflow: str
    workflow_name: str
    key: str
    signal: str
    since: int
    attempt: int
    until: Optional[int] = None
    input: JSON = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WaitingTask":
        return _build(cls, data)


@dataclass(frozen=True)
class WaitingPage:
    """One page of tasks waiting for a signal; pass ``next`` as ``after`` for the following
    page (``None`` at the end)."""

    tasks: List[WaitingTask]
    next: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WaitingPage":
        return _build(cls, data, tasks=lambda ts: [WaitingTask.from_json(t) for t in ts])


@dataclass(frozen=True)
class ScheduleView:
    """A schedule: its ``spec`` as created (``name``, ``cron``, ``timezone``, ``workflow``,
    ``overlap``, ``catch_up``), whether it is ``paused``, its ``next`` fire times (none while
    paused), and its last tick that submitted a workflow (``last_tick_at``,
    ``last_workflow``)."""

    name: str
    spec: Dict[str, Any]
    paused: bool
    next: List[int]
    created_at: int
    updated_at: int
    last_tick_at: Optional[int] = None
    last_workflow: Optional[str] = None

    @property
    def cron(self) -> str:
        return str(self.spec["cron"])

    @property
    def timezone(self) -> str:
        return str(self.spec.get("timezone", "UTC"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ScheduleView":
        return _build(cls, data)


@dataclass(frozen=True)
class TriggerView:
    """A trigger: the ``workflow`` (``name``, ``tasks``, ``outputs``) that firing it submits,
    ``{"$input": "/json/pointer"}`` in its tasks' inputs standing for the fired input."""

    name: str
    workflow: Dict[str, Any]
    created_at: int
    updated_at: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TriggerView":
        return _build(cls, data)


@dataclass(frozen=True)
class SchedulePage:
    """One page of schedules, by name; pass ``next`` as ``after`` for the following page
    (``None`` at the end)."""

    schedules: List[ScheduleView]
    next: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SchedulePage":
        return _build(cls, data, schedules=lambda xs: [ScheduleView.from_json(s) for s in xs])


@dataclass(frozen=True)
class TriggerPage:
    """One page of triggers, by name; pass ``next`` as ``after`` for the following page
    (``None`` at the end)."""

    triggers: List[TriggerView]
    next: Optional[str] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TriggerPage":
        return _build(cls, data, triggers=lambda xs: [TriggerView.from_json(t) for t in xs])


@dataclass(frozen=True)
class LimitView:
    """A named rate limit, shared by every node: a token bucket holding at most ``units``,
    refilled continuously over ``per_ms`` milliseconds. ``available`` is the whole units a claim
    could draw now, ``full_at`` when the bucket is full again, ``parked`` how many pending tasks
    wait for its units."""

    key: str
    units: int
    per_ms: int
    available: int
    full_at: int
    parked: int = 0
    updated_at: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LimitView":
        return _build(cls, data)


@dataclass(frozen=True)
class RerunTask:
    """A task a rerun reopens, with its state before the rerun."""

    id: str
    key: str
    state: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RerunTask":
        return _build(cls, data)


@dataclass(frozen=True)
class RerunAnswer:
    """What a rerun reopened (``applied``) or, as a dry run, would reopen: the task it starts
    from, then everything downstream of it; and ``superseded``, what earlier runs of them created
    that no longer counts: the items of the fan-outs that expand anew, the sub-tasks they
    added (reopened if added again with the same spec but for their input)."""

    applied: bool
    tasks: List[RerunTask]
    superseded: List[RerunTask] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RerunAnswer":
        items = lambda ts: [RerunTask.from_json(t) for t in ts]  # noqa: E731
        return _build(cls, data, tasks=items, superseded=items)


@dataclass(frozen=True)
class WorkflowControlAnswer:
    """A workflow paused or resumed, and how many of its tasks that changed."""

    workflow: str
    tasks_changed: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkflowControlAnswer":
        return _build(cls, data)


@dataclass(frozen=True)
class AuditEntry:
    """One operator action: who (the token's name), what, on which workflow or task, why, and
    what it changed (``detail``)."""

    id: int
    at: int
    actor: str
    action: str
    reason: str
    workflow: Optional[str] = None
    task: Optional[str] = None
    detail: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AuditEntry":
        return _build(cls, data)


@dataclass(frozen=True)
class AuditPage:
    """A page of the audit log, newest first; pass ``next`` as ``before`` for the older page
    (``None`` at the end)."""

    entries: List[AuditEntry]
    next: Optional[int] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AuditPage":
        return _build(cls, data, entries=lambda es: [AuditEntry.from_json(e) for e in es])
