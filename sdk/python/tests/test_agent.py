"""The blocking agent against a real server: dependencies, retries, failures, cancellation,
progress and shutdown."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any, Dict, List

from helpers import make_agent, running, wait_for, wait_state

import baton

FAST_RETRY = {"max_attempts": 3, "initial_backoff_ms": 50, "max_backoff_ms": 100, "jitter": 0}


def test_a_workflow_with_a_dependency_is_completed_by_a_decorated_agent(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [
            baton.TaskSpec("fetch", capabilities=[cap], input={"url": "https://example.org"}),
            {"key": "summarize", "depends_on": ["fetch"], "capabilities": [cap], "input": "x"},
        ],
        name="sdk-dependency",
    )
    assert wf.created
    assert client.get_task(wf.tasks["summarize"]).waiting == {
        "reason": "dependencies",
        "open": [{"key": "fetch", "id": wf.tasks["fetch"], "state": "pending"}],
    }
    seen: List[Dict[str, Any]] = []
    agent = make_agent(url, cap)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        seen.append(
            {
                "key": ctx.key,
                "task": ctx.task_id,
                "workflow": ctx.workflow_id,
                "attempt": ctx.attempt,
                "idempotency_key": ctx.idempotency_key,
                "traceparent": ctx.traceparent,
            }
        )
        return {"echo": value, "key": ctx.key}

    with running(agent):
        done = wait_state(client, wf.tasks["summarize"], "completed")

    assert done.result == {"echo": "x", "key": "summarize"}
    assert done.events == [
        "submitted",
        "dependencies_met",
        "agent_assigned",
        "execution_started",
        "execution_succeeded",
    ]
    fetch = client.get_task(wf.tasks["fetch"])
    assert fetch.result == {"echo": {"url": "https://example.org"}, "key": "fetch"}
    assert fetch.entered_at["completed"] <= done.entered_at["assigned"]
    assert [s["key"] for s in seen] == ["fetch", "summarize"]
    first = seen[0]
    assert first["workflow"] == wf.workflow
    assert first["attempt"] == 1
    assert first["idempotency_key"] == f"{first['task']}:1"
    assert first["traceparent"].startswith("00-")
    assert client.counts(wf.workflow) == baton.Counts(completed=2, total=2)


def test_a_handler_that_raises_twice_is_retried_until_it_succeeds(
    client: baton.Client, url: str, cap: str
) -> None:
    created = client.submit_task(baton.TaskSpec("flaky", capabilities=[cap], retry=FAST_RETRY))
    agent = make_agent(url, cap)

    @agent.task(cap)
    def flaky(value: Any, ctx: baton.TaskContext) -> Any:
        if ctx.attempt < 3:
            raise ConnectionError(f"upstream down (attempt {ctx.attempt})")
        return {"attempt": ctx.attempt}

    with running(agent):
        done = wait_state(client, created.task, "completed")

    assert done.attempt == 3
    assert done.result == {"attempt": 3}
    assert [(e["kind"], e["message"], e["retryable"]) for e in done.errors] == [
        ("ConnectionError", "upstream down (attempt 1)", True),
        ("ConnectionError", "upstream down (attempt 2)", True),
    ]


def test_non_retryable_fails_the_task_for_good_at_once(
    client: baton.Client, url: str, cap: str
) -> None:
    created = client.submit_task(baton.TaskSpec("doomed", capabilities=[cap], retry=FAST_RETRY))
    calls = []
    agent = make_agent(url, cap)

    @agent.task(cap)
    def doomed(value: Any, ctx: baton.TaskContext) -> Any:
        calls.append(ctx.attempt)
        raise baton.NonRetryable("the input is not a PDF")

    with running(agent):
        failed = wait_state(client, created.task, "failed")

    assert failed.waiting is None, "no retry is scheduled"
    assert calls == [1]
    assert failed.attempt == 1
    assert failed.events.count("agent_assigned") == 1
    assert [(e["kind"], e["message"], e["retryable"]) for e in failed.errors] == [
        ("NonRetryable", "the input is not a PDF", False)
    ]
    assert client.get_task(created.task).state == "failed"


def test_a_none_result_is_reported_as_an_empty_object_and_a_bad_one_fails(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [
            {"key": "nothing", "capabilities": [cap], "input": "none"},
            {"key": "unserialisable", "capabilities": [cap], "input": "set"},
        ]
    )
    agent = make_agent(url, cap)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        return None if value == "none" else {1, 2}

    with running(agent):
        nothing = wait_state(client, wf.tasks["nothing"], "completed")
        bad = wait_state(client, wf.tasks["unserialisable"], "failed")

    assert nothing.result == {}
    assert bad.errors[0]["kind"] == "TypeError"
    assert bad.errors[0]["retryable"] is False


def test_cancelling_a_running_task_sets_ctx_cancelled(
    client: baton.Client, url: str, cap: str
) -> None:
    created = client.submit_task(
        baton.TaskSpec("long", capabilities=[cap], timeouts=baton.Timeouts(heartbeat_ms=1500))
    )
    started = threading.Event()
    outcome: Dict[str, Any] = {}
    agent = make_agent(url, cap)

    @agent.task(cap)
    def long(value: Any, ctx: baton.TaskContext) -> Any:
        started.set()
        outcome["cancelled"] = ctx.wait_cancelled(10.0)
        outcome["reason"] = ctx.cancel_reason
        return "finished anyway"

    with running(agent):
        assert started.wait(10.0)
        wait_state(client, created.task, "executing")
        answer = client.cancel_task(created.task, reason="no longer needed")
        assert answer.cancelled
        wait_for(lambda: "reason" in outcome, 5.0, "the handler to see the cancellation")

    assert outcome == {"cancelled": True, "reason": "task_cancelled"}
    task = client.get_task(created.task)
    assert task.state == "cancelled"
    assert "execution_succeeded" not in task.events


def test_heartbeats_keep_a_task_alive_past_its_heartbeat_timeout(
    client: baton.Client, url: str, cap: str
) -> None:
    created = client.submit_task(
        baton.TaskSpec(
            "slow",
            capabilities=[cap],
            retry=baton.RetryPolicy(max_attempts=1),
            timeouts=baton.Timeouts(heartbeat_ms=1000),
        )
    )
    agent = make_agent(url, cap)
    deadlines: List[baton.Deadlines] = []

    @agent.task(cap)
    def slow(value: Any, ctx: baton.TaskContext) -> Any:
        deadlines.append(ctx.deadlines)
        first = ctx.deadlines.heartbeat
        assert first is not None
        # Runs until a heartbeat sent after the first heartbeat deadline was accepted, so only
        # heartbeats can have kept the task alive (or until the lease is lost).
        wait_for(
            lambda: ctx.cancelled or (ctx.deadlines.heartbeat or 0) > first + 1000,
            10.0,
            "a heartbeat accepted after the first heartbeat deadline",
        )
        deadlines.append(ctx.deadlines)
        return "cancelled" if ctx.cancelled else "slow but alive"

    with running(agent):
        done = wait_state(client, created.task, "completed")

    assert done.result == "slow but alive"
    first, last = deadlines
    assert first.heartbeat is not None and last.heartbeat is not None
    beats = [h for h in done.history if h["event"] == "heartbeat"]
    assert any(h["at"] > first.heartbeat for h in beats), "alive past the first deadline"
    assert last.heartbeat > first.heartbeat, "the context follows the latest answer"


def test_progress_is_sent_as_a_heartbeat_right_away(
    client: baton.Client, url: str, cap: str
) -> None:
    created = client.submit_task(baton.TaskSpec("report", capabilities=[cap]))
    agent = make_agent(url, cap)

    def progress_recorded() -> bool:
        history = client.get_task(created.task).history
        return any(
            h["event"] == "heartbeat" and h["data"].get("progress") == {"pct": 50} for h in history
        )

    @agent.task(cap)
    def report(value: Any, ctx: baton.TaskContext) -> Any:
        ctx.progress({"pct": 10})
        ctx.progress({"pct": 50})
        wait_for(progress_recorded, 5.0, "the progress heartbeat")
        return "done"

    with running(agent):
        wait_state(client, created.task, "completed")


def test_stopping_releases_the_tasks_still_running_after_the_grace_period(
    client: baton.Client, url: str, cap: str
) -> None:
    created = client.submit_task(baton.TaskSpec("stuck", capabilities=[cap]))
    started = threading.Event()
    reasons: List[Any] = []
    agent = make_agent(url, cap, shutdown_grace=0.2)

    @agent.task(cap)
    def stuck(value: Any, ctx: baton.TaskContext) -> Any:
        started.set()
        ctx.wait_cancelled(60.0)  # far longer than the agent may take to stop
        reasons.append(ctx.cancel_reason)
        return "too late"

    with running(agent, stop_timeout=10.0):
        assert started.wait(10.0)

    task = wait_state(client, created.task, "pending")
    assert task.events[-1] == "assignment_released"
    assert task.attempt == 1, "a release uses up no attempt"
    wait_for(lambda: reasons, 5.0, "the handler to see the shutdown")
    assert reasons == ["agent_stopping"]
    client.cancel_task(created.task)


def test_an_agent_runs_at_most_its_concurrency_at_once(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow([{"key": f"t{i}", "capabilities": [cap]} for i in range(5)])
    lock = threading.Lock()
    running_now = [0]
    peak = [0]
    gate = threading.Event()
    agent = make_agent(url, cap, concurrency=2)

    @agent.task(cap)
    def busy(value: Any, ctx: baton.TaskContext) -> Any:
        with lock:
            running_now[0] += 1
            peak[0] = max(peak[0], running_now[0])
        gate.wait(10.0)
        with lock:
            running_now[0] -= 1
        return ctx.key

    with running(agent):
        wait_for(lambda: client.counts(wf.workflow).executing == 2, 10.0, "two tasks executing")
        # Both slots are taken and held: the agent claims nothing more.
        assert client.counts(wf.workflow) == baton.Counts(executing=2, pending=3, total=5)
        gate.set()
        wait_for(lambda: client.counts(wf.workflow).completed == 5, 10.0, "every task")

    assert peak[0] == 2


def test_an_agent_with_several_handlers_runs_the_one_for_the_task(
    client: baton.Client, url: str, cap: str
) -> None:
    other = f"{cap}-other"
    wf = client.submit_workflow(
        [
            {"key": "first", "capabilities": [cap]},
            {"key": "second", "capabilities": [other]},
            {"key": "both", "capabilities": [other, cap]},
        ]
    )
    agent = make_agent(url, cap, concurrency=3)

    @agent.task(other)
    def handle_other(value: Any, ctx: baton.TaskContext) -> Any:
        return "other"

    @agent.task(cap)
    def handle_cap(value: Any, ctx: baton.TaskContext) -> Any:
        return "cap"

    assert agent.capabilities == sorted([cap, other])
    with running(agent):
        results = {
            key: wait_state(client, task, "completed").result for key, task in wf.tasks.items()
        }
    assert results == {"first": "cap", "second": "other", "both": "other"}


AGENT_SCRIPT = """
import sys, threading, baton
agent = baton.Agent("said", [sys.argv[2]], url=sys.argv[1], claim_wait_ms=200,
                    quiet=sys.argv[3] == "quiet")
agent.task(sys.argv[2])(lambda value, ctx: "ok")
threading.Timer(float(sys.argv[4]), agent.stop).start()
agent.run()
"""


def run_agent_script(
    url: str, cap: str, mode: str, seconds: float
) -> "subprocess.CompletedProcess[str]":
    """An agent as a user's program runs it, logging left unconfigured; its stderr."""
    return subprocess.run(
        [sys.executable, "-c", AGENT_SCRIPT, url, cap, mode, str(seconds)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_agent_says_what_it_does_on_stderr_unless_quiet(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_task({"key": "said", "capabilities": [cap]})
    done = run_agent_script(url, cap, "loud", 1.5)
    assert done.returncode == 0, done.stderr
    assert f"baton: agent said starting: capabilities {cap}, Baton at {url}" in done.stderr
    assert "baton: agent said registered as " in done.stderr
    assert client.get_task(wf.task).state == "completed"

    quiet = run_agent_script(url, cap, "quiet", 0.5)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


def test_an_agent_without_a_server_warns_and_stops_cleanly() -> None:
    done = run_agent_script("http://127.0.0.1:9", "x", "loud", 1.5)
    assert done.returncode == 0, done.stderr
    assert "cannot reach Baton" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
