"""The agent's state machine alone (``baton._core``), no server: feed it events at chosen
instants, check the actions it answers with. Each test is one decision the runners rely on."""

from __future__ import annotations

import functools
import inspect
import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import pytest

import baton
from baton import _core as core

WALL_START = 1_800_000_000.0
BEAT_TIMEOUT_MS = 3_000


def agent(*caps: str, **options: Any) -> baton.Agent:
    """An agent with a handler per capability (``"default"``: the default handler)."""
    a = baton.Agent("unit", concurrency=options.pop("concurrency", 2), **options)
    for cap in caps or ("work",):
        a.task(None if cap == "default" else cap)(lambda value, ctx: value)
    return a


def claimed(
    task: str,
    token: int = 1,
    started: bool = False,
    deadlines: Optional[baton.Deadlines] = None,
    capabilities: Sequence[str] = ("work",),
) -> baton.ClaimedTask:
    return baton.ClaimedTask(
        task=task,
        workflow="wf",
        key=f"key-{task}",
        attempt=1,
        lease=f"lease-{task}",
        token=token,
        input={"task": task},
        deadlines=deadlines or baton.Deadlines(),
        traceparent="00-trace-span-01",
        idempotency_key=f"{task}:1",
        started=started,
        version=3 if started else 2,
        capabilities=list(capabilities),
    )


def report_answer(
    task: str, wall: float, cancelled: bool = False, beat_ms: Optional[int] = BEAT_TIMEOUT_MS
) -> baton.ReportAnswer:
    heartbeat = None if beat_ms is None else int(wall * 1000) + beat_ms
    return baton.ReportAnswer(
        task=task,
        state="executing",
        version=3,
        attempt=1,
        token=1,
        cancelled=cancelled,
        deadlines=baton.Deadlines(heartbeat=heartbeat),
    )


def agent_view(agent_id: str = "agent-1") -> baton.AgentView:
    return baton.AgentView(agent_id, "unit", ["work"], 2, True, 0, 0)


def conflict(code: str = "stale_lease") -> baton.Conflict:
    return baton.Conflict(409, code, "the lease is gone")


def unavailable(retry_after: Optional[float] = None) -> baton.Unavailable:
    err = baton.Unavailable(503, "store_unavailable", "try again")
    err.retry_after = retry_after
    return err


def down() -> baton.ConnectionFailed:
    return baton.ConnectionFailed(0, "connection_failed", "connection refused")


class Harness:
    """One core, its clock, and what it answered last (``out``)."""

    def __init__(self, a: Optional[baton.Agent] = None) -> None:
        self.agent = a or agent()
        self.mono = 100.0
        self.wall = WALL_START
        self.wakes = 0
        self.beat_ms: Optional[int] = BEAT_TIMEOUT_MS
        self.outstanding: List[core.Request] = []
        self.core = core.AgentCore(self.agent, self._wake)
        self.out = self._checked(self.core.start(self.now))

    def _wake(self) -> None:
        self.wakes += 1

    @property
    def now(self) -> core.Instant:
        return core.Instant(self.mono, self.wall)

    def _checked(self, actions: List[core.Action]) -> List[core.Action]:
        at = self.core.wake_at()
        assert at is None or at > self.mono, "the core acted on everything due"
        self.outstanding += [a.request for a in actions if isinstance(a, core.Send)]
        return actions

    def feed(self, event: core.Event) -> List[core.Action]:
        self.out = self._checked(self.core.handle(event, self.now))
        return self.out

    def advance(self, seconds: float) -> List[core.Action]:
        self.mono += seconds
        self.wall += seconds
        return self.feed(core.Wake())

    def advance_to_timer(self) -> List[core.Action]:
        at = self.core.wake_at()
        assert at is not None, "a timer is armed"
        return self.advance(at - self.mono)

    def answer(self, request: core.Request, value: Any) -> List[core.Action]:
        self.outstanding.remove(request)
        return self.feed(core.Answered(request, value))

    def refuse(self, request: core.Request, error: BaseException) -> List[core.Action]:
        self.outstanding.remove(request)
        return self.feed(core.Refused(request, error))

    def pending(self, method: str) -> core.Request:
        """The one request of ``method`` sent and not yet answered."""
        requests = [r for r in self.outstanding if r.method == method]
        assert len(requests) == 1, f"one {method} out of {self.outstanding}"
        return requests[0]

    def sent(self, method: Optional[str] = None) -> List[core.Request]:
        return [
            a.request
            for a in self.out
            if isinstance(a, core.Send) and method in (None, a.request.method)
        ]

    def one(self, method: str) -> core.Request:
        requests = self.sent(method)
        assert len(requests) == 1, f"one {method} in {self.out}"
        return requests[0]

    def runs(self) -> List[core.Run]:
        return [a for a in self.out if isinstance(a, core.Run)]

    def logs(self) -> List[str]:
        return [a.message % a.args for a in self.out if isinstance(a, core.Log)]

    def done(self) -> Optional[core.Done]:
        return next((a for a in self.out if isinstance(a, core.Done)), None)

    # ---- scenario steps ----------------------------------------------------------------------

    def register(self) -> core.Request:
        """Answers the registration; returns the first claim."""
        self.answer(self.one("register_agent"), agent_view())
        return self.one("claim")

    def hold(self, claim: core.Request, *tasks: str) -> List[core.Run]:
        """Answers ``claim`` with ``tasks`` and their ``started``; returns the runs."""
        self.answer(claim, [claimed(t) for t in tasks])
        started = self.sent("report_started")
        assert [r.task for r in started] == list(tasks)
        runs: List[core.Run] = []
        for request in started:
            self.answer(request, report_answer(request.task or "", self.wall, beat_ms=self.beat_ms))
            runs += self.runs()
        return runs

    def running(self, *tasks: str) -> List[core.Run]:
        return self.hold(self.register(), *tasks)


def test_it_registers_then_claims_as_many_tasks_as_it_has_free_slots() -> None:
    h = Harness(agent(concurrency=3))
    register = h.one("register_agent")
    assert register.args == ("unit", ["work"], 3) and register.kwargs == {"agent_id": None}
    claim = h.register()
    assert h.agent.id == "agent-1"
    assert h.logs() == [
        "agent unit registered as agent-1 (capabilities work; at most 3 task(s) at once)"
    ]
    assert claim.args == ("agent-1", 3, 5_000)
    assert claim.kwargs == {"start": False}

    h.answer(claim, [claimed("t1")])
    assert [r.method for r in h.sent()] == ["report_started", "claim"]
    assert h.one("claim").args == ("agent-1", 2, 5_000)


def test_a_started_task_runs_its_handler_with_its_context() -> None:
    h = Harness()
    [run] = h.running("t1")
    assert (run.task, run.input) == ("t1", {"task": "t1"})
    assert (run.ctx.task_id, run.ctx.agent_id, run.ctx.token) == ("t1", "agent-1", 1)
    assert run.ctx.deadlines.heartbeat == int(WALL_START * 1000) + BEAT_TIMEOUT_MS


def test_a_task_its_claim_started_runs_at_once_and_heartbeats_from_the_claims_deadlines() -> None:
    h = Harness()
    claim = h.register()
    beat = int(h.wall * 1000) + BEAT_TIMEOUT_MS
    h.answer(claim, [claimed("t1", started=True, deadlines=baton.Deadlines(heartbeat=beat))])
    assert h.sent("report_started") == [], "the claim started it"
    [run] = h.runs()
    assert (run.task, run.ctx.deadlines.heartbeat) == ("t1", beat)
    assert h.core.wake_at() == pytest.approx(h.mono + BEAT_TIMEOUT_MS / 1000 / 3)
    h.advance_to_timer()
    assert h.one("report_heartbeat").args == ("t1", "agent-1", 1, None)


def test_with_start_on_claim_off_claims_do_not_start_tasks() -> None:
    h = Harness(agent(start_on_claim=False))
    claim = h.register()
    assert claim.kwargs == {"start": False}
    h.answer(claim, [claimed("t1")])
    assert h.one("report_started").args == ("t1", "agent-1", 1)
    assert h.runs() == [], "the handler waits for the started answer"


def test_a_started_task_picks_its_handler_or_is_released_as_a_reported_one_is() -> None:
    h = Harness(agent("other", "work", concurrency=2))
    claim = h.register()
    h.answer(claim, [claimed("t1", started=True, capabilities=["other"])])
    [run] = h.runs()
    assert run.handler is h.agent._handlers["other"]

    h.feed(core.Stop())
    h.answer(h.pending("claim"), [claimed("t2", started=True)])
    assert h.one("report_released").args == ("t2", "agent-1", 1), "claimed too late: given back"


def test_no_claim_goes_out_while_every_slot_is_taken() -> None:
    h = Harness(agent(concurrency=2))
    claim = h.register()
    h.hold(claim, "t1", "t2")
    assert h.sent("claim") == []

    h.feed(core.Returned("t1", "one"))
    assert h.sent("claim") == []  # t1's report is not answered yet: its slot is still taken
    h.answer(h.one("report_succeeded"), report_answer("t1", h.wall))
    assert h.one("claim").args == ("agent-1", 1, 5_000)


def test_an_outcome_is_reported_and_a_bad_result_fails_for_good() -> None:
    h = Harness(agent(concurrency=3))
    h.running("t1", "t2", "t3")
    h.feed(core.Returned("t1", None))
    assert h.one("report_succeeded").args == ("t1", "agent-1", 1, {})
    h.feed(core.Returned("t2", {1, 2}))
    failed = h.one("report_failed")
    assert failed.args[:4] == ("t2", "agent-1", 1, "TypeError")
    assert failed.kwargs == {"retryable": False}
    h.feed(core.Raised("t3", ValueError("no")))
    assert h.one("report_failed").args == ("t3", "agent-1", 1, "ValueError", "no")
    assert h.one("report_failed").kwargs == {"retryable": True}
    assert h.logs() == ["task t3 (key-t3) failed: ValueError: no"]


def test_heartbeats_follow_a_third_of_the_time_left_and_the_latest_deadline() -> None:
    h = Harness()
    [run] = h.running("t1")
    assert h.core.wake_at() == pytest.approx(h.mono + BEAT_TIMEOUT_MS / 1000 / 3)
    h.advance(0.5)
    assert h.sent() == []
    h.advance(0.5)
    beat = h.one("report_heartbeat")
    assert beat.args == ("t1", "agent-1", 1, None)

    h.answer(beat, report_answer("t1", h.wall, beat_ms=30_000))
    assert run.ctx.deadlines.heartbeat == int(h.wall * 1000) + 30_000
    assert h.core.wake_at() == pytest.approx(h.mono + 10.0), "at most heartbeat_max_interval"


def test_progress_goes_out_at_once_in_a_heartbeat() -> None:
    h = Harness()
    [run] = h.running("t1")
    run.ctx.progress({"pct": 10})
    run.ctx.progress({"pct": 50})
    assert h.wakes == 2
    h.feed(core.Wake())
    assert h.one("report_heartbeat").args == ("t1", "agent-1", 1, {"pct": 50})


def test_a_refused_heartbeat_cancels_the_handler_and_its_outcome_is_not_reported() -> None:
    h = Harness()
    [run] = h.running("t1")
    h.advance_to_timer()
    h.refuse(h.one("report_heartbeat"), conflict())
    assert run.ctx.cancelled and run.ctx.cancel_reason == "stale_lease"
    assert h.logs() == ["task t1: heartbeat refused (stale_lease): cancelling its handler"]
    h.advance(5.0)
    assert h.sent("report_heartbeat") == []

    h.feed(core.Returned("t1", "late"))
    assert h.sent("report_succeeded") == []
    assert h.logs() == ["task t1: stale_lease, outcome not reported"]
    assert "t1" not in h.core.held


def test_a_cancelled_answer_cancels_the_handler() -> None:
    h = Harness()
    [run] = h.running("t1")
    h.advance_to_timer()
    h.answer(h.one("report_heartbeat"), report_answer("t1", h.wall, cancelled=True))
    assert run.ctx.cancel_reason == "task_cancelled"


def test_a_heartbeat_failing_for_a_transient_reason_is_tried_again_a_second_later() -> None:
    h = Harness()
    [run] = h.running("t1")
    h.advance_to_timer()
    h.refuse(h.one("report_heartbeat"), down())
    assert not run.ctx.cancelled
    assert h.core.wake_at() == pytest.approx(h.mono + core.BEAT_AFTER_FAILURE_S)


def test_a_report_waits_for_the_heartbeat_in_flight() -> None:
    h = Harness()
    h.running("t1")
    h.advance_to_timer()
    beat = h.one("report_heartbeat")
    h.feed(core.Returned("t1", "done"))
    assert h.sent() == []
    h.answer(beat, report_answer("t1", h.wall))
    assert h.one("report_succeeded").args == ("t1", "agent-1", 1, "done")


def test_a_report_failing_for_transient_reasons_is_tried_five_times_then_given_up() -> None:
    h = Harness()
    h.running("t1")
    h.feed(core.Returned("t1", "done"))
    report = h.one("report_succeeded")
    pauses = []
    for _ in range(core.REPORT_ATTEMPTS - 1):
        h.refuse(report, unavailable())
        assert h.sent() == []
        before = h.mono
        h.advance_to_timer()
        pauses.append(round(h.mono - before, 3))
        assert h.one("report_succeeded") is report
    assert pauses == [0.4, 0.8, 1.6, 3.2]
    h.refuse(report, unavailable())
    assert h.logs() == ["task t1: report refused: 503 store_unavailable: try again"]
    assert "t1" not in h.core.held


def test_a_refused_start_gives_the_task_up() -> None:
    h = Harness()
    claim = h.register()
    h.answer(claim, [claimed("t1")])
    h.refuse(h.one("report_started"), conflict("task_cancelled"))
    assert h.runs() == []
    assert h.logs() == ["task t1: report refused: 409 task_cancelled: the lease is gone"]
    assert h.core.held == {}


def test_claims_back_off_on_transient_failures_and_follow_retry_after() -> None:
    h = Harness()
    claim = h.register()
    h.refuse(claim, down())
    assert h.logs() == ["claim failed: 0 connection_failed: connection refused"]
    assert h.core.wake_at() == pytest.approx(h.mono + 0.4)
    h.advance(0.4)
    claim = h.one("claim")
    h.refuse(claim, unavailable(retry_after=1.0))
    assert h.core.wake_at() == pytest.approx(h.mono + 1.0)
    h.advance(1.0)
    pauses = []
    for _ in range(5):
        h.refuse(h.pending("claim"), down())
        pauses.append(round(h.core.claim_at - h.mono, 3))
        h.advance(pauses[-1])
    assert pauses == [1.6, 3.2, 5.0, 5.0, 5.0]
    h.answer(h.pending("claim"), [])
    assert h.one("claim"), "after a success, the next claim goes out at once"
    h.refuse(h.one("claim"), down())
    assert h.core.claim_at - h.mono == pytest.approx(0.4), "and the backoff starts over"


def forgot() -> baton.NotFound:
    return baton.NotFound(404, "agent_not_found", "no such agent")


def test_an_agent_baton_forgot_registers_again_as_a_new_agent() -> None:
    h = Harness()
    claim = h.register()
    h.refuse(claim, forgot())
    register = h.one("register_agent")
    assert register.kwargs == {"agent_id": None}, "Baton makes ids: none is sent"
    h.advance(5.0)
    assert h.sent("claim") == [], "no claim before the agent is registered again"
    h.answer(register, agent_view("agent-2"))
    assert h.agent.id == "agent-2"
    assert h.logs() == ["Baton had forgotten agent agent-1: registered again as agent-2"]
    claim = h.one("claim")
    assert claim.args[0] == "agent-2"
    h.answer(claim, [claimed("t1")])
    assert h.one("report_started").args[:2] == ("t1", "agent-2")


def test_a_keep_alive_baton_does_not_know_registers_again() -> None:
    h = Harness(agent(concurrency=1))
    h.running("t1")
    h.advance(9.0)
    h.refuse(h.pending("report_heartbeat"), down())
    h.advance(1.0)
    h.refuse(h.one("agent_heartbeat"), forgot())
    assert h.one("register_agent").kwargs == {"agent_id": None}


def test_a_refused_report_baton_does_not_know_registers_again_once() -> None:
    h = Harness(agent(concurrency=3))
    [run1, run2] = h.running("t1", "t2")
    claim = h.pending("claim")
    h.feed(core.Returned("t1", "done"))
    h.refuse(h.one("report_succeeded"), forgot())
    register = h.one("register_agent")
    assert register.kwargs == {"agent_id": None}
    assert run1.ctx.cancel_reason == "agent_not_found"
    h.refuse(claim, forgot())
    assert h.sent("register_agent") == [], "one registration at a time"
    h.answer(register, agent_view("agent-2"))
    h.advance(1.0)
    assert h.pending("claim").args[0] == "agent-2"

    # t2's lease was the old agent's: its heartbeat goes out under the new id and is refused.
    beat = h.pending("report_heartbeat")
    assert beat.args[:2] == ("t2", "agent-2")
    h.refuse(beat, conflict())
    assert run2.ctx.cancel_reason == "stale_lease"
    h.feed(core.Returned("t2", "late"))
    assert h.sent() == [], "its outcome is not reported"
    assert h.core.held == {}


def test_an_answer_about_an_id_the_agent_no_longer_has_registers_nothing() -> None:
    h = Harness(agent(concurrency=1))
    h.running("t1")
    h.advance(9.0)
    beat = h.pending("report_heartbeat")
    h.advance(1.0)
    h.refuse(h.one("agent_heartbeat"), forgot())
    h.answer(h.one("register_agent"), agent_view("agent-2"))
    h.refuse(beat, forgot())
    assert h.sent("register_agent") == [], "already registered again"
    assert h.agent.id == "agent-2"


def test_an_explicit_id_baton_does_not_know_falls_back_to_a_new_agent() -> None:
    h = Harness(agent(agent_id="gone"))
    register = h.one("register_agent")
    assert register.kwargs == {"agent_id": "gone"}
    h.refuse(register, forgot())
    assert h.done() is None
    assert h.logs() == ["Baton has no agent gone: registering as a new agent"]
    again = h.one("register_agent")
    assert again.kwargs == {"agent_id": None}
    h.answer(again, agent_view("agent-2"))
    assert h.agent.id == "agent-2"
    assert h.logs() == [
        "agent unit registered as agent-2 (capabilities work; at most 2 task(s) at once)"
    ]
    assert h.one("claim").args[0] == "agent-2"


def test_registration_is_tried_until_it_works_and_a_refusal_ends_the_agent() -> None:
    h = Harness()
    register = h.one("register_agent")
    for _ in range(8):
        h.refuse(register, down())
        h.advance_to_timer()
        assert h.one("register_agent") is register
    refusal = baton.Unauthorized(401, "unauthorized", "no token")
    h.refuse(register, refusal)
    done = h.done()
    assert done is not None and done.error is refusal
    assert h.advance(1.0) == []


def test_a_quiet_agent_sends_keep_alives() -> None:
    h = Harness()
    h.register()
    h.advance(9.0)
    assert h.sent() == [], "the claim in flight is a long poll"
    h.advance(1.0)
    keepalive = h.one("agent_heartbeat")
    h.advance(10.0)
    assert h.sent() == [], "one keep-alive at a time"
    h.refuse(keepalive, down())
    assert h.core.wake_at() == pytest.approx(h.mono + 5.0), "sooner after a failure"


def test_several_handlers_pick_the_first_one_the_claimed_task_requires() -> None:
    h = Harness(agent("other", "work", "default", concurrency=2))
    claim = h.register()
    h.answer(claim, [claimed("t1", capabilities=["work", "other"]), claimed("t2", capabilities=[])])
    for started in h.sent("report_started"):
        h.answer(started, report_answer(started.task or "", h.wall))
    assert [r.method for r in h.sent()] == [], "no lookup: the claim carries the capabilities"
    t1, t2 = sorted(h.core.held.values(), key=lambda held: held.task)
    assert t1.running and t2.running
    h2 = Harness(agent("other", "work", "default", concurrency=1))
    h2.answer(h2.register(), [claimed("t1", capabilities=["work", "other"])])
    h2.answer(h2.one("report_started"), report_answer("t1", h2.wall))
    [run] = h2.runs()
    assert run.handler is h2.agent._handlers["other"], "the first decorated it requires"
    h3 = Harness(agent("other", "work", "default", concurrency=1))
    h3.answer(h3.register(), [claimed("t1", capabilities=[])])
    h3.answer(h3.one("report_started"), report_answer("t1", h3.wall))
    [run] = h3.runs()
    assert run.handler is h3.agent._default, "none required: the default handler"


def test_a_task_no_handler_can_run_fails() -> None:
    h = Harness(agent("other", "work", concurrency=1))
    h.answer(h.register(), [claimed("t1", capabilities=["else"])])
    h.answer(h.one("report_started"), report_answer("t1", h.wall))
    assert h.runs() == []
    failed = h.one("report_failed")
    assert failed.args[3:] == ("no_handler", "agent unit has no handler for capabilities ['else']")


def test_every_report_the_core_sends_is_a_report_a_batch_carries() -> None:
    h = Harness(agent(concurrency=1))
    h.answer(h.register(), [claimed("t1")])
    started = h.one("report_started")
    assert started.as_report() == baton.Report.started("t1", "agent-1", 1)
    h.answer(started, report_answer("t1", h.wall))
    h.core.held["t1"].ctx.report_usage(usd=0.5)
    h.core.held["t1"].ctx.progress({"pct": 50})
    h.feed(core.Wake())
    beat = h.one("report_heartbeat")
    assert beat.as_report() == baton.Report.heartbeat(
        "t1", "agent-1", 1, {"pct": 50}, usage={"usd": 0.5}
    )
    h.answer(beat, report_answer("t1", h.wall))
    h.feed(core.Raised("t1", baton.NonRetryable("no", kind="Bad")))
    assert h.one("report_failed").as_report().to_json() == {  # type: ignore[union-attr]
        "report": "failed",
        "task": "t1",
        "agent": "agent-1",
        "token": 1,
        "error": {"kind": "Bad", "message": "no", "retryable": False},
        "usage": {"usd": 0.5},
    }
    assert core.Request("claim", ("agent-1", 1, 0)).as_report() is None


def quiet_agent(**options: Any) -> Harness:
    """A harness whose agent sends no heartbeat or keep-alive for 100 s."""
    h = Harness(agent(heartbeat_max_interval=100.0, keepalive_interval=100.0, **options))
    h.beat_ms = None
    return h


def test_stopping_lets_handlers_finish_within_the_grace_period() -> None:
    h = quiet_agent(concurrency=2, shutdown_grace=30.0)
    h.running("t1")
    claim = h.pending("claim")
    h.feed(core.Stop())
    h.answer(claim, [claimed("t2")])
    assert h.one("report_released").args == ("t2", "agent-1", 1), "claimed too late: given back"
    h.answer(h.one("report_released"), report_answer("t2", h.wall))
    assert h.logs() == ["task t2 released (agent_stopping)"]
    h.feed(core.Returned("t1", "done"))
    assert h.sent("claim") == [] and h.done() is None
    h.answer(h.one("report_succeeded"), report_answer("t1", h.wall))
    assert h.done() == core.Done()


def test_after_the_grace_period_unfinished_tasks_are_released() -> None:
    h = quiet_agent(concurrency=2, shutdown_grace=30.0)
    [run] = h.running("t1")
    h.feed(core.Stop())
    h.answer(h.pending("claim"), [])
    assert h.core.wake_at() == pytest.approx(h.mono + 30.0)
    h.advance(29.0)
    assert h.sent("report_released") == [] and not run.ctx.cancelled
    h.advance(1.0)
    release = h.one("report_released")
    assert run.ctx.cancel_reason == "agent_stopping"
    h.answer(release, report_answer("t1", h.wall))
    assert h.done() == core.Done(), "a released handler is not waited for"


def test_hurrying_releases_at_once_and_waits_for_the_heartbeat_in_flight() -> None:
    h = Harness()
    h.running("t1")
    h.advance_to_timer()
    beat = h.one("report_heartbeat")
    h.feed(core.Hurry())
    assert h.sent() == []
    h.answer(h.pending("claim"), [])
    h.answer(beat, report_answer("t1", h.wall))
    h.answer(h.one("report_released"), report_answer("t1", h.wall))
    assert h.done() == core.Done()


def test_a_task_released_while_its_start_is_in_flight_never_runs() -> None:
    h = Harness()
    h.answer(h.register(), [claimed("t1")])
    started = h.one("report_started")
    h.feed(core.Hurry())
    assert h.sent() == [], "the release waits for the start's answer"
    h.answer(started, report_answer("t1", h.wall))
    assert h.runs() == []
    assert h.one("report_released").args == ("t1", "agent-1", 1)


def test_events_that_arrive_together_are_decided_on_once() -> None:
    h = Harness(agent(concurrency=2))
    claim = h.register()
    h.answer(claim, [claimed("t1"), claimed("t2")])
    started = h.sent("report_started")
    h.outstanding.clear()
    h.out = h.core.handle_all(
        [core.Answered(r, report_answer(r.task or "", h.wall)) for r in started], h.now
    )
    assert [run.task for run in h.runs()] == ["t1", "t2"]
    h.out = h.core.handle_all([core.Returned("t1", 1), core.Returned("t2", 2)], h.now)
    reports = h.sent("report_succeeded")
    assert [r.args[3] for r in reports] == [1, 2]
    h.out = h.core.handle_all(
        [core.Answered(r, report_answer(r.task or "", h.wall)) for r in reports], h.now
    )
    assert h.one("claim").args == ("agent-1", 2, 5_000), "one claim for both freed slots"


def test_stopping_gives_up_on_baton_a_request_timeout_after_the_grace_period() -> None:
    h = quiet_agent(shutdown_grace=1.0, request_timeout=30.0)
    h.running("t1")
    h.feed(core.Stop())
    h.advance(1.0)
    assert h.one("report_released")
    h.advance(29.0)
    assert h.done() is None
    h.advance(1.0)
    assert h.done() == core.Done()
    assert h.logs() == ["stopping without waiting any longer for Baton"]


def test_a_stop_before_registration_ends_once_registered() -> None:
    h = Harness()
    h.feed(core.Stop())
    h.answer(h.pending("register_agent"), agent_view())
    assert h.sent("claim") == []
    assert h.done() == core.Done()


@pytest.mark.parametrize(
    "error,lost",
    [
        (conflict("stale_lease"), "stale_lease"),
        (baton.NotFound(404, "task_not_found", "gone"), "task_not_found"),
        (unavailable(), None),
        (baton.InvalidRequest(422, "invalid_field", "bad"), None),
    ],
)
def test_which_refusals_mean_the_lease_is_lost(error: BaseException, lost: Optional[str]) -> None:
    assert core.lease_lost(error) == lost


def test_messages_are_cut_and_non_retryable_keeps_its_kind() -> None:
    kind, message, retryable = core.failure_of(baton.NonRetryable("x" * 10_000, kind="Bad"))
    assert (kind, len(message), message[-1], retryable) == ("Bad", 8192, "…", False)


@functools.lru_cache(maxsize=None)
def signature(client: type, method: str) -> inspect.Signature:
    return inspect.signature(getattr(client, method))


def calls(request: core.Request) -> None:
    """Checks that ``request`` is a valid call of both clients' method (the core names it)."""
    for client in (baton.Client, baton.AsyncClient):
        signature(client, request.method).bind(None, *request.args, **request.kwargs)
    if request.method.startswith("report_"):
        assert request.as_report() is not None, "a batching runner sends it as a Report"


# ---- seeded simulation ---------------------------------------------------------------------

SIMULATIONS = 150
SIMULATION_STEPS = 400


class Simulation:
    """A core driven by a seeded random world: answers, refusals, handler outcomes, progress,
    time and a stop come in random order; :meth:`check` holds after every step."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        concurrency = self.rng.randint(1, 4)
        caps = self.rng.choice([("work",), ("work", "other"), ("work", "default")])
        start = self.rng.random() < 0.5
        self.h = Harness(
            agent(*caps, concurrency=concurrency, shutdown_grace=5.0, start_on_claim=start)
        )
        self.started_by_claim: Set[str] = set()
        self.running: List[str] = []
        self.tasks = 0
        self.ended: Set[Optional[str]] = set()
        self.given_back: Set[Optional[str]] = set()
        self.concurrency = concurrency
        self.stopped = False
        self.done: Optional[core.Done] = None
        self.registrations = 0
        self.absorb()

    def absorb(self) -> None:
        for action in self.h.out:
            if isinstance(action, core.Done):
                assert self.done is None, "one Done"
                self.done = action
            if isinstance(action, core.Run):
                assert action.task not in self.running
                assert action.task not in self.given_back, "a released task never runs"
                self.running.append(action.task)
            if isinstance(action, core.Send):
                r = action.request
                calls(r)
                assert r.task not in self.ended, "nothing after a final report"
                assert not (self.stopped and r.method == "claim"), "no claim after a stop"
                if r.method == "report_started":
                    assert r.task not in self.started_by_claim, "no started report when claimed so"
                if r.method == "report_released":
                    self.given_back.add(r.task)
                elif r.method.startswith("report_") and r.method != "report_heartbeat":
                    assert r.task not in self.given_back, "no outcome for a released task"
        self.check()

    def check(self) -> None:
        c = self.h.core
        by_task: Dict[str, core.Request] = {}
        singles = {"claim": 0, "register_agent": 0, "agent_heartbeat": 0}
        for r in self.h.outstanding:
            if r.task is not None:
                assert r.task not in by_task, f"two requests out for {r.task}"
                by_task[r.task] = r
            else:
                singles[r.method] += 1
        assert all(n <= 1 for n in singles.values()), singles
        assert len(c.held) <= self.concurrency
        assert len(self.running) <= self.concurrency

    def value_for(self, r: core.Request) -> Any:
        if r.method == "register_agent":
            self.registrations += 1
            return agent_view(f"agent-{self.registrations}")
        if r.method == "agent_heartbeat":
            return agent_view(r.args[0])
        if r.method == "claim":
            count = self.rng.randint(0, r.args[1])
            self.tasks += count
            started = r.kwargs["start"]
            if started:
                self.started_by_claim |= {f"t{self.tasks - i}" for i in range(count)}
            required = [["work"], ["other"], ["else"], []]
            return [
                claimed(f"t{i}", started=started, capabilities=self.rng.choice(required))
                for i in range(self.tasks - count + 1, self.tasks + 1)
            ]
        cancelled = r.method == "report_heartbeat" and self.rng.random() < 0.05
        return report_answer(r.task or "", self.h.wall, cancelled=cancelled)

    def error_for(self) -> BaseException:
        return self.rng.choice(
            [
                down(),
                unavailable(),
                unavailable(retry_after=2.0),
                conflict(),
                conflict("task_cancelled"),
                forgot(),
            ]
        )

    def step(self) -> None:
        """One random move among those possible now."""
        rng = self.rng
        moves: List[Tuple[float, Callable[[], None]]] = [(1.0, self.tick)]
        if self.h.outstanding:
            moves.append((4.0, self.reply))
        if self.running:
            moves += [(2.0, self.end_handler), (0.5, self.progress)]
        if not self.stopped:
            moves.append((0.02, self.stop))
        weights, funcs = zip(*moves)
        rng.choices(funcs, weights)[0]()
        self.absorb()

    def tick(self) -> None:
        self.h.advance(self.rng.choice([0.05, 0.5, 2.0]))

    def reply(self) -> None:
        request = self.rng.choice(self.h.outstanding)
        if not self.stopped and self.rng.random() < 0.2:
            self.h.refuse(request, self.error_for())
        else:
            self.answer(request)

    def answer(self, request: core.Request) -> None:
        if request.method in ("report_succeeded", "report_failed", "report_released"):
            self.ended.add(request.task)
        self.h.answer(request, self.value_for(request))

    def end_handler(self) -> None:
        task = self.running.pop(self.rng.randrange(len(self.running)))
        outcomes: List[core.Event] = [
            core.Returned(task, {"ok": 1}),
            core.Returned(task, {1}),  # not JSON: fails for good
            core.Raised(task, OSError("x")),
        ]
        self.h.feed(self.rng.choice(outcomes))

    def progress(self) -> None:
        held = self.h.core.held.get(self.rng.choice(self.running))
        if held is not None:
            held.ctx.progress({"at": self.h.mono})
        self.h.feed(core.Wake())

    def stop(self) -> None:
        self.stopped = True
        stops: List[core.Event] = [core.Stop(), core.Hurry()]
        self.h.feed(self.rng.choice(stops))

    def finish(self) -> core.Done:
        """Stops, then answers everything and lets every handler return until Done."""
        if not self.stopped:
            self.stopped = True
            self.h.feed(core.Stop())
            self.absorb()
        for _ in range(10_000):
            if self.done is not None:
                return self.done
            if self.h.outstanding:
                self.answer(self.h.outstanding[0])
            elif self.running:
                self.h.feed(core.Returned(self.running.pop(0), None))
            else:
                self.h.advance_to_timer()
            self.absorb()
        raise AssertionError("the agent never stopped")


@pytest.mark.parametrize("seed", range(SIMULATIONS))
def test_a_seeded_random_world_keeps_the_invariants_and_stops(seed: int) -> None:
    sim = Simulation(seed)
    for _ in range(SIMULATION_STEPS):
        if sim.done is not None:
            break
        sim.step()
    done = sim.finish()
    if done.error is not None:
        assert not sim.h.core.registered, "only a refused first registration ends with an error"
        return
    assert done == core.Done()
    for held in sim.h.core.held.values():
        assert held.released and held.quiet, "what is left at the end was released"
