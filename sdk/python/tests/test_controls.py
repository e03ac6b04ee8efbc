"""Operators in control: pause (and take back now), resume, skip, fail, rerun with a dry run,
the pause of a whole workflow, and the audit log. Sync and asyncio clients, against a real
server; an agent whose task is taken back sees ``ctx.cancelled`` with the code naming why."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, Iterator

import pytest
from helpers import Server, make_agent, running, wait_for, wait_state

import baton


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of this module's own: other modules leave tasks that require no capability
    pending, and an agent here (which asserts what it is handed) would take them."""
    srv = Server(tmp_path_factory.mktemp("controls"))
    yield srv.url
    srv.stop()


@pytest.fixture
def client(url: str) -> Iterator[baton.Client]:
    with baton.Client(url) as c:
        yield c


def test_a_control_without_a_reason_is_refused_naming_the_field(
    client: baton.Client, cap: str
) -> None:
    created = client.submit_task(baton.TaskSpec("idle", capabilities=[cap]))
    with pytest.raises(baton.InvalidRequest) as refused:
        client.pause_task(created.task, "")
    assert refused.value.field == "reason"
    assert client.get_task(created.task).paused is None


def test_pause_resume_skip_fail_and_rerun_each_leave_the_task_as_asked(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [
            baton.TaskSpec(key="a", capabilities=[cap]),
            baton.TaskSpec(key="b", depends_on=["a"], capabilities=[cap]),
            baton.TaskSpec(key="c", depends_on=["b"], capabilities=[cap]),
        ],
        name="sdk-controls",
    )
    a, b, c = (wf.tasks[k] for k in "abc")
    client.pause_task(a, "budget review")
    paused = client.get_task(a)
    assert paused.paused is not None and paused.paused["reason"] == "budget review"
    assert paused.waiting is not None and paused.waiting["reason"] == "paused"
    assert client.counts(wf.workflow).paused == 1
    listed = {t.key: t.paused for t in client.list_tasks(workflow=wf.workflow).tasks}
    assert listed == {"a": True, "b": False, "c": False}
    agent = client.register_agent("sdk-controls-" + cap, [cap])
    assert client.claim(agent.id) == [], "a paused task is not handed out"
    client.resume_task(a, "approved")

    skipped = client.skip_task(a, "done by hand", {"by": "hand"})
    assert skipped.state == "completed"
    claimed = wait_for(lambda: client.claim(agent.id) or None, 10.0, "b to be released")
    assert claimed[0].task == b
    assert claimed[0].upstream["a"]["result"] == {"by": "hand"}
    client.report_started(b, agent.id, claimed[0].token)
    client.report_succeeded(b, agent.id, claimed[0].token, {"b": 1})

    failed = client.fail_task(c, "wrong prompt", kind="bad_prompt", message="tone")
    assert failed.state == "failed"
    assert client.get_task(c).errors[-1]["kind"] == "bad_prompt"

    dry = client.rerun_task(b, "prompt fixed", dry_run=True)
    assert not dry.applied
    assert [t.key for t in dry.tasks] == ["b", "c"]
    assert dry.superseded == []
    assert client.get_task(b).state == "completed"
    done = client.rerun_task(b, "prompt fixed", input={"tone": "warm"})
    assert done.applied
    assert client.get_task(a).state == "completed", "upstream keeps its result"
    again = wait_for(lambda: client.claim(agent.id) or None, 10.0, "b to run again")
    assert again[0].task == b and again[0].input == {"tone": "warm"}
    assert "reopened" in client.get_task(b).events

    page = client.audit(workflow=wf.workflow)
    assert [e.action for e in page.entries] == ["rerun", "fail", "skip", "resume", "pause"]
    assert page.entries[0].reason == "prompt fixed"
    assert page.entries[0].detail["tasks_changed"] == 2
    older = client.audit(workflow=wf.workflow, limit=2)
    assert len(older.entries) == 2 and older.next is not None
    rest = client.audit(workflow=wf.workflow, before=older.next)
    assert [e.action for e in rest.entries] == ["skip", "resume", "pause"]


def test_a_pause_with_now_takes_the_task_from_a_running_agent(
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
        if started.is_set():
            return "second run"
        started.set()
        outcome["cancelled"] = ctx.wait_cancelled(10.0)
        outcome["reason"] = ctx.cancel_reason
        return "finished anyway"

    with running(agent):
        assert started.wait(10.0)
        wait_state(client, created.task, "executing")
        client.pause_task(created.task, "over budget", now=True)
        wait_for(lambda: "reason" in outcome, 5.0, "the handler to be told")
        assert outcome == {"cancelled": True, "reason": "task_paused"}
        task = client.get_task(created.task)
        assert task.state == "pending" and task.paused is not None
        assert "execution_succeeded" not in task.events
        client.resume_task(created.task, "approved")
        done = wait_state(client, created.task, "completed")
        assert done.result == "second run"


def test_a_workflow_paused_and_resumed_with_the_asyncio_client(url: str, cap: str) -> None:
    async def scenario() -> None:
        async with baton.AsyncClient(url) as client:
            wf = await client.submit_workflow(
                [baton.TaskSpec(key=k, capabilities=[cap]) for k in ("x", "y")],
                name="sdk-async-pause",
            )
            paused = await client.pause_workflow(wf.workflow, "spend review")
            assert paused.tasks_changed == 2
            view = await client.get_workflow(wf.workflow)
            assert view.paused is not None and view.paused["reason"] == "spend review"
            assert view.counts.paused == 2
            resumed = await client.resume_workflow(wf.workflow, "ok")
            assert resumed.tasks_changed == 2
            entries = (await client.audit(workflow=wf.workflow, action="pause")).entries
            assert [(e.action, e.reason) for e in entries] == [("pause", "spend review")]

    asyncio.run(scenario())
