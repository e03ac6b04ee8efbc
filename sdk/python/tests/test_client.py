"""The operator client against a real server: submissions, queries, commands, and how
refusals map to exceptions."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest
from helpers import Server, wait_for

import baton

UNKNOWN = "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a"


def test_a_cycle_is_an_invalid_request_naming_the_field_and_the_cycle(client: baton.Client) -> None:
    with pytest.raises(baton.InvalidRequest) as info:
        client.submit_workflow(
            [{"key": "a", "depends_on": ["b"]}, baton.TaskSpec("b", depends_on=["a"])]
        )
    err = info.value
    assert (err.status, err.code, err.field) == (422, "cycle", "tasks[].depends_on")
    assert err.expected == "an acyclic graph"
    assert err.cycle is not None and set(err.cycle) == {"a", "b"}
    assert err.problem["type"] == "/problems/cycle"


def test_an_out_of_bounds_field_is_named_with_what_was_expected(client: baton.Client) -> None:
    with pytest.raises(baton.InvalidRequest) as info:
        client.submit_workflow([baton.TaskSpec("a", retry=baton.RetryPolicy(max_attempts=0))])
    assert info.value.code == "invalid_field"
    assert info.value.field == "tasks[0].retry.max_attempts"
    assert info.value.expected == "between 1 and 100"


def test_unknown_tasks_and_workflows_are_not_found(client: baton.Client) -> None:
    with pytest.raises(baton.NotFound) as info:
        client.get_task(UNKNOWN)
    assert (info.value.status, info.value.code) == (404, "task_not_found")
    with pytest.raises(baton.NotFound) as wf:
        client.cancel_workflow(UNKNOWN)
    assert wf.value.code == "workflow_not_found"
    with pytest.raises(baton.InvalidRequest) as bad:
        client.get_task("not-a-uuid")
    assert (bad.value.status, bad.value.code, bad.value.field) == (400, "invalid_id", "task_id")


def test_refused_commands_are_conflicts(client: baton.Client, cap: str) -> None:
    created = client.submit_task({"key": "waiting", "capabilities": [cap]})
    with pytest.raises(baton.Conflict) as info:
        client.retry_task(created.task)
    assert (info.value.status, info.value.code, info.value.state) == (
        409,
        "not_accepted",
        "pending",
    )

    key = f"idem-{uuid.uuid4()}"
    first = client.submit_task({"key": "once", "capabilities": [cap]}, idempotency_key=key)
    again = client.submit_task({"key": "once", "capabilities": [cap]}, idempotency_key=key)
    assert first.created and not again.created
    assert again.task == first.task
    with pytest.raises(baton.Conflict) as mismatch:
        client.submit_task({"key": "other", "capabilities": [cap]}, idempotency_key=key)
    assert mismatch.value.code == "idempotency_mismatch"

    assert client.cancel_task(created.task).cancelled
    assert client.cancel_task(created.task).cancelled, "cancelling again changes nothing"
    with pytest.raises(baton.Conflict) as cancelled:
        client.retry_task(created.task)
    assert cancelled.value.code == "task_cancelled"
    client.cancel_task(first.task)


def test_tasks_are_listed_page_by_page_and_counted(client: baton.Client, cap: str) -> None:
    wf = client.submit_workflow(
        [{"key": f"t{i}", "capabilities": [cap]} for i in range(5)], name="listing"
    )
    page = client.list_tasks(workflow=wf.workflow, limit=2)
    assert len(page.tasks) == 2 and page.next == page.tasks[-1].id
    listed = list(client.iter_tasks(workflow=wf.workflow, page_size=2))
    assert sorted(t.key for t in listed) == [f"t{i}" for i in range(5)]
    assert len({t.id for t in listed}) == 5
    assert all(t.state == "pending" for t in listed)
    assert list(client.iter_tasks(workflow=wf.workflow, state="completed")) == []
    assert client.counts(wf.workflow) == baton.Counts(pending=5, total=5)

    view = client.get_workflow(wf.workflow)
    assert (view.name, view.counts.pending) == ("listing", 5)
    assert client.cancel_workflow(wf.workflow, reason="done listing") == 5
    assert client.counts(wf.workflow).cancelled == 5
    with pytest.raises(baton.InvalidRequest) as bad:
        client.list_tasks(state="sleeping")
    assert bad.value.field == "state"


def test_a_task_view_carries_its_history_and_why_it_waits(client: baton.Client, cap: str) -> None:
    created = client.submit_task(baton.TaskSpec("lonely", capabilities=[cap], priority=3))
    task = client.get_task(created.task)
    assert task.state == "pending"
    assert task.waiting == {"reason": "no_capable_agent", "missing": [cap]}
    assert task.events == ["submitted"]
    assert task.spec["priority"] == 3
    first = client.task_history(created.task)[0]
    assert first["seq"] == 1 and first["event"] == "submitted"
    assert first["data"]["task"] == created.task
    assert first["data"]["seed"].isdigit(), "a 64-bit seed comes as a string"
    client.cancel_task(created.task)


def test_agents_and_the_lifecycle_can_be_read(client: baton.Client, cap: str) -> None:
    registered = client.register_agent(f"reader-{cap}", [cap], 2)
    mine = [a for a in client.agents() if a.id == registered.id]
    assert mine and mine[0].capabilities == [cap] and mine[0].online
    assert client.lifecycle().startswith("stateDiagram")
    assert client.lifecycle("dot").startswith("digraph")
    with pytest.raises(baton.InvalidRequest) as bad:
        client.lifecycle("svg")
    assert bad.value.field == "format"


def test_agents_are_listed_a_page_at_a_time(client: baton.Client, cap: str) -> None:
    mine = {client.register_agent(f"pager-{cap}-{i}", [cap], 1).id for i in range(3)}
    seen = []
    after = None
    while True:
        page = client.list_agents(after=after, limit=2)
        assert len(page.agents) <= 2
        seen.extend(page.agents)
        if page.next is None:
            break
        assert page.next == page.agents[-1].id
        after = page.next
    ids = [a.id for a in seen]
    assert ids == sorted(ids), "by id"
    assert len(ids) == len(set(ids)), "each once"
    assert mine <= set(ids)
    assert [a.id for a in client.iter_agents(page_size=2)] == ids
    ours = [a for a in seen if a.id in mine]
    assert all(a.registered_by == "local" and a.liveness_ms > 0 for a in ours)
    with pytest.raises(baton.InvalidRequest) as bad:
        client.list_agents(limit=0)
    assert bad.value.field == "limit"


def test_a_client_that_cannot_connect_raises_connection_failed() -> None:
    with baton.Client("http://127.0.0.1:9", timeout=2.0) as c:
        with pytest.raises(baton.ConnectionFailed) as info:
            c.counts()
    assert info.value.status == 0


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        Path(tmp_path_factory.mktemp("secured")),
        ["--operator-token", "op-secret", "--agent-token", "worker=agent-secret"],
    )
    yield srv
    srv.stop()


def test_tokens_come_from_arguments_or_the_environment(
    secured: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATON_TOKEN", raising=False)
    with baton.Client(secured.url) as anonymous, pytest.raises(baton.Unauthorized) as info:
        anonymous.counts()
    assert info.value.code == "unauthorized"
    with baton.Client(secured.url, "agent-secret") as agent, pytest.raises(baton.Forbidden):
        agent.submit_task({"key": "nope"})
    with baton.Client(secured.url, "op-secret") as operator:
        assert operator.counts().total == 0
    monkeypatch.setenv("BATON_URL", secured.url)
    monkeypatch.setenv("BATON_TOKEN", "op-secret")
    with baton.Client() as from_env:
        assert from_env.url == secured.url
        assert from_env.counts().total == 0


def test_labels_are_submitted_with_a_workflow_and_shown(client: baton.Client, cap: str) -> None:
    # Tasks of this test's own capability, cancelled at the end: a task requiring none would
    # be handed to any other test's agent.
    wf = client.submit_workflow(
        [{"key": "a", "capabilities": [cap]}], name="labelled", labels={"tenant": "acme"}
    )
    assert client.get_workflow(wf.workflow).labels == {"tenant": "acme"}
    one = client.submit_task({"key": "b", "capabilities": [cap]}, labels={"team": "data"})
    assert client.get_workflow(one.workflow).labels == {"team": "data"}
    plain = client.submit_workflow([{"key": "c", "capabilities": [cap]}])
    assert client.get_workflow(plain.workflow).labels == {}
    for workflow in (wf.workflow, one.workflow, plain.workflow):
        client.cancel_workflow(workflow, "test over")


def test_a_compensation_takes_its_own_retry_deadlines_and_priority(
    client: baton.Client, cap: str
) -> None:
    wf = client.submit_workflow(
        [
            baton.TaskSpec(
                "book",
                capabilities=[cap],
                input={"room": 12},
                compensation=baton.Compensation(
                    "unbook",
                    capabilities=[cap],
                    retry=baton.RetryPolicy(max_attempts=4),
                    timeouts=baton.Timeouts(start_ms=2000),
                    priority=7,
                ),
            )
        ],
        name="sdk-compensation",
    )
    client.cancel_task(wf.tasks["book"], "changed plans")

    def created() -> Optional[baton.TaskView]:
        page = client.list_tasks(workflow=wf.workflow)
        undo = [t for t in page.tasks if t.key == "unbook"]
        return client.get_task(undo[0].id) if undo else None

    unbook = wait_for(created, what="the compensation task")
    assert unbook.spec["retry"]["max_attempts"] == 4
    assert unbook.spec["timeouts"]["start_ms"] == 2000
    assert unbook.spec["priority"] == 7
    assert unbook.spec["input"]["task_input"] == {"room": 12}
    assert unbook.spec["input"]["compensates"] == "book"
    assert unbook.spec["input"]["errors"] == []


def test_a_token_over_its_request_rate_gets_rate_limited_with_when_to_retry(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    srv = Server(
        Path(tmp_path_factory.mktemp("rated")),
        ["--operator-token", "op-secret", "--rate-per-token", "5"],
    )
    try:
        with baton.Client(srv.url, "op-secret") as c, pytest.raises(baton.RateLimited) as info:
            for _ in range(50):
                c.counts()
        err = info.value
        assert isinstance(err, baton.Unavailable)
        assert (err.status, err.code) == (429, "rate_limited")
        assert err.retry_after is not None and err.retry_after >= 1
    finally:
        srv.stop()
