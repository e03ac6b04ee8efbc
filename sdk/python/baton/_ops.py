"""The API's operations as data, shared by the sync and async clients: each builds the request
(method, path, query, body) and knows how to decode a successful answer."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from ._sse import SseEvent
from .errors import BatonError, ConnectionFailed, error_from_response
from .types import (
    AgentPage,
    AgentView,
    AuditPage,
    RerunAnswer,
    WorkflowControlAnswer,
    ArtifactStored,
    ClaimedTask,
    Counts,
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
    TaskView,
    TransitionEvent,
    TriggerPage,
    TriggerView,
    WaitingPage,
    WorkflowCreated,
    WorkflowEnded,
    WorkflowView,
    report_to_json,
    spec_to_json,
    workflow_template_to_json,
)

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:7700"
CLAIM_WAIT_MAX_MS = 60_000


@dataclass(frozen=True)
class Op(Generic[T]):
    """One request and the decoder of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Optional[Dict[str, Any]] = None
    body: Any = None
    """A JSON body (any JSON value but ``None``)."""
    timeout: Optional[float] = None
    content: Any = None
    """A raw body (bytes or an iterator of chunks) instead of ``body``'s JSON."""
    headers: Optional[Dict[str, str]] = None


def base_url(url: Optional[str]) -> str:
    """``url``, else ``BATON_URL``, else the local default; without a trailing slash."""
    return (url or os.environ.get("BATON_URL") or DEFAULT_URL).rstrip("/")


def auth_headers(token: Optional[str]) -> Dict[str, str]:
    """The headers every request carries: ``token`` (else ``BATON_TOKEN``) as a bearer token."""
    headers = {"accept": "application/json"}
    token = token if token is not None else os.environ.get("BATON_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


def request_of(http_base: str, op: "Op[Any]") -> Dict[str, Any]:
    """Keyword arguments for ``httpx.Client.build_request``."""
    kwargs: Dict[str, Any] = {"method": op.method, "url": http_base + op.path}
    if op.params:
        kwargs["params"] = {k: v for k, v in op.params.items() if v is not None}
    if op.body is not None:
        kwargs["content"] = json.dumps(op.body, allow_nan=False).encode()
        kwargs["headers"] = {"content-type": "application/json"}
    if op.content is not None:
        kwargs["content"] = op.content
    if op.headers:
        kwargs["headers"] = {**kwargs.get("headers", {}), **op.headers}
    if op.timeout is not None:
        kwargs["timeout"] = op.timeout
    return kwargs


def error_of(response: httpx.Response) -> BatonError:
    """The exception for an error answer (its body must have been read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return error_from_response(response.status_code, body, response.headers)


def transport_error(exc: Union[httpx.TransportError, httpx.StreamError]) -> ConnectionFailed:
    """A transport failure as a :class:`ConnectionFailed`."""
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_failed"
    return ConnectionFailed(0, code, str(exc) or type(exc).__name__)


def decode_event(ev: SseEvent) -> Union[TransitionEvent, WorkflowEnded, Lagged, None]:
    """A stream event as a transition, a workflow's end or a lag notice; ``None`` for
    anything else."""
    if ev.event == "transition":
        return TransitionEvent.from_json(json.loads(ev.data))
    if ev.event == "workflow":
        return WorkflowEnded.from_json(json.loads(ev.data))
    if ev.event == "lagged":
        try:
            return Lagged(missed=int(ev.data))
        except ValueError:
            return Lagged(missed=0)
    return None


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _json(r: httpx.Response) -> Any:
    return r.json()


# ---- operators -------------------------------------------------------------------------------


BudgetsLike = Mapping[str, Union[int, float, Mapping[str, Any]]]
"""Budgets per unit: a limit (``{"usd": 5}``, policy ``pause``) or the whole budget
(``{"usd": {"limit": 5, "policy": "fail"}}``)."""


def budgets_to_json(budgets: BudgetsLike) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for unit, b in budgets.items():
        out[unit] = dict(b) if isinstance(b, Mapping) else {"limit": b}
    return out


def submit_workflow(
    tasks: Sequence[TaskSpecLike],
    name: str,
    idempotency_key: Optional[str],
    outputs: Optional[Mapping[str, Any]] = None,
    labels: Optional[Mapping[str, str]] = None,
    budgets: Optional[BudgetsLike] = None,
) -> Op[WorkflowCreated]:
    body: Dict[str, Any] = {"tasks": [spec_to_json(t) for t in tasks]}
    if name:
        body["name"] = name
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if outputs is not None:
        body["outputs"] = dict(outputs)
    if labels:
        body["labels"] = dict(labels)
    if budgets:
        body["budgets"] = budgets_to_json(budgets)
    return Op("POST", "/v1/workflows", lambda r: WorkflowCreated.from_json(r.json()), body=body)


def submit_task(
    task: TaskSpecLike,
    idempotency_key: Optional[str],
    labels: Optional[Mapping[str, str]] = None,
    budgets: Optional[BudgetsLike] = None,
) -> Op[TaskCreated]:
    body: Dict[str, Any] = {"task": spec_to_json(task)}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if labels:
        body["labels"] = dict(labels)
    if budgets:
        body["budgets"] = budgets_to_json(budgets)
    return Op("POST", "/v1/tasks", lambda r: TaskCreated.from_json(r.json()), body=body)


def get_workflow(workflow_id: str) -> Op[WorkflowView]:
    return Op(
        "GET", f"/v1/workflows/{_seg(workflow_id)}", lambda r: WorkflowView.from_json(r.json())
    )


def cancel_workflow(workflow_id: str, reason: str) -> Op[int]:
    return Op(
        "POST",
        f"/v1/workflows/{_seg(workflow_id)}/cancel",
        lambda r: int(r.json()["cancelled"]),
        body={"reason": reason},
    )


def get_task(task_id: str) -> Op[TaskView]:
    return Op("GET", f"/v1/tasks/{_seg(task_id)}", lambda r: TaskView.from_json(r.json()))


def task_history(
    task_id: str, after: Optional[int], limit: Optional[int]
) -> Op[List[Dict[str, Any]]]:
    return Op(
        "GET",
        f"/v1/tasks/{_seg(task_id)}/history",
        _json,
        params={"after": after, "limit": limit},
    )


def task_upstream(task_id: str, key: Optional[str]) -> Op[Dict[str, Any]]:
    return Op("GET", f"/v1/tasks/{_seg(task_id)}/upstream", _json, params={"key": key})


def list_tasks(
    workflow: Optional[str], state: Optional[str], after: Optional[str], limit: Optional[int]
) -> Op[TaskPage]:
    return Op(
        "GET",
        "/v1/tasks",
        lambda r: TaskPage.from_json(r.json()),
        params={"workflow": workflow, "state": state, "after": after, "limit": limit},
    )


def cancel_task(task_id: str, reason: str) -> Op[ReportAnswer]:
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/cancel",
        lambda r: ReportAnswer.from_json(r.json()),
        body={"reason": reason},
    )


def retry_task(task_id: str) -> Op[ReportAnswer]:
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/retry",
        lambda r: ReportAnswer.from_json(r.json()),
        body={},
    )


def pause_task(task_id: str, reason: str, now: bool) -> Op[ReportAnswer]:
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/pause",
        lambda r: ReportAnswer.from_json(r.json()),
        body={"reason": reason, "now": now},
    )


def resume_task(task_id: str, reason: str) -> Op[ReportAnswer]:
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/resume",
        lambda r: ReportAnswer.from_json(r.json()),
        body={"reason": reason},
    )


def skip_task(task_id: str, reason: str, result: Any) -> Op[ReportAnswer]:
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/skip",
        lambda r: ReportAnswer.from_json(r.json()),
        body={"reason": reason, "result": result},
    )


def fail_task(
    task_id: str, reason: str, kind: Optional[str], message: Optional[str]
) -> Op[ReportAnswer]:
    body: Dict[str, Any] = {"reason": reason}
    if kind is not None:
        body["error"] = {"kind": kind, "message": message if message is not None else reason}
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/fail",
        lambda r: ReportAnswer.from_json(r.json()),
        body=body,
    )


_NO_INPUT = object()


def rerun_task(task_id: str, reason: str, input: Any, dry_run: bool) -> Op[RerunAnswer]:
    body: Dict[str, Any] = {"reason": reason, "dry_run": dry_run}
    if input is not _NO_INPUT:
        body["input"] = input
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/rerun",
        lambda r: RerunAnswer.from_json(r.json()),
        body=body,
    )


def pause_workflow(workflow_id: str, reason: str, now: bool) -> Op[WorkflowControlAnswer]:
    return Op(
        "POST",
        f"/v1/workflows/{_seg(workflow_id)}/pause",
        lambda r: WorkflowControlAnswer.from_json(r.json()),
        body={"reason": reason, "now": now},
    )


def resume_workflow(workflow_id: str, reason: str) -> Op[WorkflowControlAnswer]:
    return Op(
        "POST",
        f"/v1/workflows/{_seg(workflow_id)}/resume",
        lambda r: WorkflowControlAnswer.from_json(r.json()),
        body={"reason": reason},
    )


def set_budgets(workflow_id: str, reason: str, budgets: BudgetsLike) -> Op[WorkflowView]:
    return Op(
        "PUT",
        f"/v1/workflows/{_seg(workflow_id)}/budgets",
        lambda r: WorkflowView.from_json(r.json()),
        body={"reason": reason, "budgets": budgets_to_json(budgets)},
    )


def usage(label: Optional[str]) -> Op[Dict[str, float]]:
    return Op(
        "GET",
        "/v1/usage",
        lambda r: dict(r.json()["usage"]),
        params={"label": label},
    )


def audit(
    actor: Optional[str],
    workflow: Optional[str],
    action: Optional[str],
    since: Optional[int],
    until: Optional[int],
    before: Optional[int],
    limit: Optional[int],
) -> Op[AuditPage]:
    return Op(
        "GET",
        "/v1/audit",
        lambda r: AuditPage.from_json(r.json()),
        params={
            "actor": actor,
            "workflow": workflow,
            "action": action,
            "since": since,
            "until": until,
            "before": before,
            "limit": limit,
        },
    )


def signal(
    workflow_id: str,
    name: str,
    data: Any,
    reject: Optional[str],
    idempotency_key: Optional[str],
    by: Optional[str],
) -> Op[SignalSent]:
    if reject is not None and data is not None:
        raise ValueError("a signal carries data or rejects, not both")
    # Data is sent as a literal, so that data which looks like a rejection ({"reject": …})
    # completes the tasks as it is, like `baton signal --data`.
    body: Dict[str, Any] = (
        {"reject": reject} if reject is not None else {"$literal": {} if data is None else data}
    )
    return Op(
        "POST",
        f"/v1/workflows/{_seg(workflow_id)}/signals/{_seg(name)}",
        lambda r: SignalSent.from_json(r.json()),
        params={"by": by},
        body=body,
        headers={"idempotency-key": idempotency_key} if idempotency_key is not None else None,
    )


def signals(workflow_id: str, after: Optional[int], limit: Optional[int]) -> Op[SignalPage]:
    return Op(
        "GET",
        f"/v1/workflows/{_seg(workflow_id)}/signals",
        lambda r: SignalPage.from_json(r.json()),
        params={"after": after, "limit": limit},
    )


def waiting(
    workflow: Optional[str], after: Optional[str], limit: Optional[int]
) -> Op[WaitingPage]:
    return Op(
        "GET",
        "/v1/waiting",
        lambda r: WaitingPage.from_json(r.json()),
        params={"workflow": workflow, "after": after, "limit": limit},
    )


def create_schedule(spec: Mapping[str, Any]) -> Op[ScheduleView]:
    if not isinstance(spec, Mapping):
        raise TypeError(f"a schedule spec must be a mapping, not {type(spec).__name__}")
    body = dict(spec)
    if isinstance(body.get("workflow"), Mapping):
        body["workflow"] = workflow_template_to_json(body["workflow"])
    return Op("POST", "/v1/schedules", lambda r: ScheduleView.from_json(r.json()), body=body)


def list_schedules(after: Optional[str], limit: Optional[int]) -> Op[SchedulePage]:
    return Op(
        "GET",
        "/v1/schedules",
        lambda r: SchedulePage.from_json(r.json()),
        params={"after": after, "limit": limit},
    )


def schedule(name: str) -> Op[ScheduleView]:
    return Op("GET", f"/v1/schedules/{_seg(name)}", lambda r: ScheduleView.from_json(r.json()))


def pause_schedule(name: str, paused: bool) -> Op[ScheduleView]:
    verb = "pause" if paused else "resume"
    return Op(
        "POST",
        f"/v1/schedules/{_seg(name)}/{verb}",
        lambda r: ScheduleView.from_json(r.json()),
        body={},
    )


def delete_schedule(name: str) -> Op[None]:
    return Op("DELETE", f"/v1/schedules/{_seg(name)}", lambda r: None)


def put_trigger(name: str, template: Mapping[str, Any]) -> Op[TriggerView]:
    return Op(
        "PUT",
        f"/v1/triggers/{_seg(name)}",
        lambda r: TriggerView.from_json(r.json()),
        body=workflow_template_to_json(template),
    )


def list_triggers(after: Optional[str], limit: Optional[int]) -> Op[TriggerPage]:
    return Op(
        "GET",
        "/v1/triggers",
        lambda r: TriggerPage.from_json(r.json()),
        params={"after": after, "limit": limit},
    )


def trigger(name: str) -> Op[TriggerView]:
    return Op("GET", f"/v1/triggers/{_seg(name)}", lambda r: TriggerView.from_json(r.json()))


def fire_trigger(name: str, data: Any, idempotency_key: Optional[str]) -> Op[WorkflowCreated]:
    return Op(
        "POST",
        f"/v1/triggers/{_seg(name)}",
        lambda r: WorkflowCreated.from_json(r.json()),
        body={} if data is None else data,
        headers={"idempotency-key": idempotency_key} if idempotency_key is not None else None,
    )


def delete_trigger(name: str) -> Op[None]:
    return Op("DELETE", f"/v1/triggers/{_seg(name)}", lambda r: None)


def set_limit(key: str, units: int, per_ms: int) -> Op[LimitView]:
    return Op(
        "PUT",
        f"/v1/limits/{_seg(key)}",
        lambda r: LimitView.from_json(r.json()),
        body={"units": units, "per_ms": per_ms},
    )


def limits() -> Op[List[LimitView]]:
    return Op(
        "GET", "/v1/limits", lambda r: [LimitView.from_json(v) for v in r.json()["limits"]]
    )


def limit(key: str) -> Op[LimitView]:
    return Op("GET", f"/v1/limits/{_seg(key)}", lambda r: LimitView.from_json(r.json()))


def delete_limit(key: str) -> Op[None]:
    return Op("DELETE", f"/v1/limits/{_seg(key)}", lambda r: None)


def counts(workflow: Optional[str]) -> Op[Counts]:
    return Op(
        "GET", "/v1/counts", lambda r: Counts.from_json(r.json()), params={"workflow": workflow}
    )


def list_agents(after: Optional[str], limit: Optional[int]) -> Op[AgentPage]:
    return Op(
        "GET",
        "/v1/agents",
        lambda r: AgentPage.from_json(r.json()),
        params={"after": after, "limit": limit},
    )


def lifecycle(fmt: str) -> Op[str]:
    return Op("GET", "/v1/lifecycle", lambda r: r.text, params={"format": fmt})


# ---- agents ----------------------------------------------------------------------------------


def register_agent(
    name: str, capabilities: Sequence[str], concurrency: int, agent_id: Optional[str]
) -> Op[AgentView]:
    body: Dict[str, Any] = {
        "name": name,
        "capabilities": sorted(set(capabilities)),
        "concurrency": concurrency,
    }
    if agent_id is not None:
        body["id"] = agent_id
    return Op("POST", "/v1/agents", lambda r: AgentView.from_json(r.json()), body=body)


def agent_heartbeat(agent_id: str) -> Op[AgentView]:
    return Op(
        "POST", f"/v1/agents/{_seg(agent_id)}/heartbeat", lambda r: AgentView.from_json(r.json())
    )


def claim(
    agent_id: str, max_tasks: int, wait_ms: int, start: bool, timeout: float
) -> Op[List[ClaimedTask]]:
    wait_ms = max(0, min(int(wait_ms), CLAIM_WAIT_MAX_MS))
    body: Dict[str, Any] = {"max": max_tasks, "wait_ms": wait_ms}
    if start:
        # Sent only when set, so that a plain claim still suits a server without the field.
        body["start"] = True
    return Op(
        "POST",
        f"/v1/agents/{_seg(agent_id)}/claim",
        lambda r: [ClaimedTask.from_json(t) for t in r.json()["tasks"]],
        body=body,
        timeout=wait_ms / 1000 + timeout,
    )


def report(item: Report) -> Op[ReportAnswer]:
    """One report as its own request (``POST /v1/tasks/{task}/{report}``)."""
    return Op(
        "POST",
        f"/v1/tasks/{_seg(item.task)}/{item.report}",
        lambda r: ReportAnswer.from_json(r.json()),
        body=item.body(),
    )


ReportOutcome = Union[ReportAnswer, BatonError]
"""What one report of a batch got: its answer, or the error its own request would have
raised."""


def reports(items: Sequence[ReportLike]) -> Op[List[ReportOutcome]]:
    """Reports in one request (``POST /v1/reports``), each answered on its own, in order."""
    body = {"reports": [report_to_json(i) for i in items]}
    return Op("POST", "/v1/reports", lambda r: _outcomes(r, len(body["reports"])), body=body)


def _outcomes(r: httpx.Response, sent: int) -> List[ReportOutcome]:
    answers = r.json()["answers"]
    if len(answers) != sent:
        # The server answers every report; anything else is a broken answer, not a refusal.
        raise BatonError(r.status_code, "bad_answer", f"{len(answers)} answers to {sent} reports")
    return [_outcome(a) for a in answers]


def _outcome(item: Mapping[str, Any]) -> ReportOutcome:
    if item.get("answer") is not None:
        return ReportAnswer.from_json(item["answer"])
    status = int(item.get("status", 0))
    problem = item.get("problem")
    if problem is None:
        return BatonError(status, "bad_answer", f"report on {item.get('task')}: no answer")
    # The error the report's own request would have raised (a Conflict for a 409, …).
    return error_from_response(status, problem)


def add_subtasks(
    task_id: str, agent_id: str, token: int, tasks: Sequence[TaskSpecLike]
) -> Op[WorkflowCreated]:
    return Op(
        "POST",
        f"/v1/tasks/{_seg(task_id)}/subtasks",
        lambda r: WorkflowCreated.from_json(r.json()),
        body={"agent": agent_id, "token": token, "tasks": [spec_to_json(t) for t in tasks]},
    )


# ---- artifacts -------------------------------------------------------------------------------

ARTIFACT_CHUNK_BYTES = 1024 * 1024
"""Bytes read from a file per chunk of an upload."""
ARTIFACT_TRANSFER_TIMEOUT = 3600.0
"""Longest an artifact's upload or download may take, in seconds."""


def put_artifact(
    content: Any, content_type: Optional[str], length: Optional[int]
) -> Op[ArtifactStored]:
    """``content`` is bytes or an iterator of chunks; ``length``, when known, lets the server
    refuse an upload over its limit before it is sent."""
    headers: Dict[str, str] = {"content-type": content_type or "application/octet-stream"}
    if length is not None:
        headers["content-length"] = str(length)
    return Op(
        "PUT",
        "/v1/artifacts",
        lambda r: ArtifactStored.from_json(r.json()),
        content=content,
        headers=headers,
        timeout=ARTIFACT_TRANSFER_TIMEOUT,
    )


def get_artifact(artifact: str) -> Op[None]:
    """Sent streamed: the client reads and checks the bytes itself."""
    return Op(
        "GET",
        f"/v1/artifacts/{_seg(artifact)}",
        lambda r: None,
        timeout=ARTIFACT_TRANSFER_TIMEOUT,
    )


class ArtifactCheck:
    """Hashes a download as it arrives; :meth:`verify` raises if the bytes are not the
    artifact asked for (the address is the SHA-256 of the bytes)."""

    def __init__(self, response: httpx.Response) -> None:
        import hashlib

        etag = response.headers.get("etag", "").strip('"')
        self.artifact = etag
        self._sha = hashlib.sha256()
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._size += len(chunk)

    def verify(self) -> None:
        got = f"sha256:{self._sha.hexdigest()}"
        if got != self.artifact:
            raise ConnectionFailed(
                0,
                "artifact_corrupt",
                f"the {self._size} bytes received are not artifact {self.artifact or '?'}",
            )
