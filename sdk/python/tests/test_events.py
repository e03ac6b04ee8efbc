"""The event stream: transitions of one workflow, as they happen.

The server publishes each transition after committing it, from whichever task committed it,
so two transitions of one task may arrive out of order: the tests order them by version."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Set, Tuple

from helpers import make_agent, running

import baton


def test_the_event_stream_yields_the_transitions_of_the_chosen_workflow(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [
            {"key": "a", "capabilities": [cap]},
            {"key": "b", "depends_on": ["a"], "capabilities": [cap]},
        ]
    )
    other = client.submit_task({"key": "elsewhere", "capabilities": [f"{cap}-idle"]})
    agent = make_agent(url, cap)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        return ctx.key

    seen: List[baton.TransitionEvent] = []
    completed: Set[str] = set()
    with client.events(workflow=wf.workflow, read_timeout=10.0) as stream, running(agent):
        deadline = time.monotonic() + 15.0
        for item in stream:
            assert isinstance(item, baton.TransitionEvent), item
            seen.append(item)
            if item.to == "completed":
                completed.add(item.key)
            if completed == {"a", "b"} or time.monotonic() > deadline:
                break

    assert completed == {"a", "b"}
    assert {e.workflow for e in seen} == {wf.workflow}
    assert other.workflow not in {e.workflow for e in seen}
    by_task: Dict[str, List[Tuple[Any, str, str]]] = {}
    for e in sorted(seen, key=lambda e: e.version):
        by_task.setdefault(e.key, []).append((e.from_, e.to, e.event))
    assert by_task["a"] == [
        ("pending", "assigned", "agent_assigned"),
        ("assigned", "executing", "execution_started"),
        ("executing", "completed", "execution_succeeded"),
    ]
    assert by_task["b"][0] == ("blocked", "pending", "dependencies_met")
    assert by_task["b"][-1] == ("executing", "completed", "execution_succeeded")
    assert all(e.agent == agent.id for e in seen if e.event == "agent_assigned")
    client.cancel_task(other.task)


def test_the_event_stream_says_when_the_workflow_ends(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow([{"key": "only", "capabilities": [cap]}])
    agent = make_agent(url, cap)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        return "done"

    ended: List[baton.WorkflowEnded] = []
    with client.events(workflow=wf.workflow, read_timeout=10.0) as stream, running(agent):
        deadline = time.monotonic() + 15.0
        for item in stream:
            if isinstance(item, baton.WorkflowEnded):
                ended.append(item)
                break
            if time.monotonic() > deadline:
                break

    assert [(e.workflow, e.status) for e in ended] == [(wf.workflow, "completed")]


def test_a_stream_opened_again_from_its_last_event_id_gets_what_it_missed_first(
    client: baton.Client, cap: str
) -> None:
    first = client.submit_workflow([{"key": "one", "capabilities": [f"{cap}-idle"]}])
    with client.events(workflow=first.workflow, read_timeout=10.0) as stream:
        client.cancel_task(first.tasks["one"])
        for item in stream:
            assert isinstance(item, baton.TransitionEvent), item
            if item.to == "cancelled":
                break
        last = stream.last_event_id
    assert last is not None and last.endswith(f"-{item.seq}")
    second = client.submit_workflow([{"key": "two", "capabilities": [f"{cap}-idle"]}])
    client.cancel_task(second.tasks["two"])
    missed: List[Tuple[str, str]] = []
    with client.events(read_timeout=10.0, last_event_id=last) as stream:
        for item in stream:
            # The first workflow's end may be announced after its last transition.
            if isinstance(item, baton.WorkflowEnded):
                continue
            assert isinstance(item, baton.TransitionEvent), item
            if item.workflow == second.workflow:
                missed.append((item.key, item.to))
            if item.key == "two" and item.to == "cancelled":
                break
    assert missed == [("two", "pending"), ("two", "cancelled")]
