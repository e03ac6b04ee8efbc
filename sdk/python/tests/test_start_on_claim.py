"""Claims that start their tasks (``claim(..., start=True)``, the agent's ``start_on_claim``)
against a real server: the task comes back executing and no ``started`` report is needed."""

from __future__ import annotations

from typing import Any, List

import pytest
from helpers import Sent, make_agent, record_requests, reports_of, running, wait_state

import baton


def started_entries(client: baton.Client, task_id: str) -> List[Any]:
    return [h for h in client.task_history(task_id) if h["event"] == "execution_started"]


def test_a_claim_with_start_hands_out_executing_tasks(client: baton.Client, cap: str) -> None:
    agent = client.register_agent(f"starter-{cap}", [cap], concurrency=2)
    ids = [client.submit_task(baton.TaskSpec(k, capabilities=[cap])).task for k in ("a", "b")]
    claimed = client.claim(agent.id, max_tasks=2, wait_ms=5_000, start=True)

    assert sorted(c.task for c in claimed) == sorted(ids)
    for c in claimed:
        view = client.get_task(c.task)
        assert c.started and c.version == view.version
        assert view.state == "executing"
        assert view.events == ["submitted", "agent_assigned", "execution_started"]
        [entry] = started_entries(client, c.task)
        assert entry["actor"] == {"actor": "agent", "agent": agent.id}
        assert c.deadlines == view.deadlines

    first = claimed[0]
    again = client.report_started(first.task, agent.id, first.token)
    assert (again.state, again.version, again.cancelled) == ("executing", first.version, False)
    assert len(started_entries(client, first.task)) == 1, "a duplicate started changes nothing"
    client.report_succeeded(first.task, agent.id, first.token, {"ok": True})
    assert client.get_task(first.task).state == "completed"


def test_a_plain_claim_leaves_the_task_assigned(client: baton.Client, cap: str) -> None:
    agent = client.register_agent(f"plain-{cap}", [cap])
    created = client.submit_task(baton.TaskSpec("a", capabilities=[cap]))
    [c] = client.claim(agent.id, wait_ms=5_000)
    view = client.get_task(created.task)
    assert not c.started and c.version == view.version
    assert view.state == "assigned"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> List[Sent]:
    """Every request the agents' (and the test's) clients send."""
    return record_requests(monkeypatch)


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
@pytest.mark.parametrize("start_on_claim", [True, False], ids=["start_on_claim", "started_report"])
def test_an_agent_starts_its_tasks_by_claim_unless_told_not_to(
    client: baton.Client,
    url: str,
    cap: str,
    sent: List[Sent],
    start_on_claim: bool,
    use_asyncio: bool,
) -> None:
    ids = [client.submit_task(baton.TaskSpec(f"t{i}", capabilities=[cap])).task for i in range(3)]
    agent = make_agent(url, cap, start_on_claim=start_on_claim)
    deadlines: List[baton.Deadlines] = []

    @agent.task(cap)
    def work(value: Any, ctx: baton.TaskContext) -> Any:
        deadlines.append(ctx.deadlines)
        return {"key": ctx.key}

    with running(agent, use_asyncio=use_asyncio):
        done = [wait_state(client, task, "completed") for task in ids]

    assert [d.result for d in done] == [{"key": f"t{i}"} for i in range(3)]
    # Batched (the default) or not, no `started` report when the claim started the task.
    assert sorted(reports_of(sent, "started")) == ([] if start_on_claim else sorted(ids))
    assert all(d.start_to_close is not None for d in deadlines), "handlers see the start's"
    for task in ids:
        entries = started_entries(client, task)
        assert [e["actor"] for e in entries] == [{"actor": "agent", "agent": agent.id}]
