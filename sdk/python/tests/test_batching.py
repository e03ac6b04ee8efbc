"""Reports in batches against a real server: the low-level ``Client.reports`` /
``AsyncClient.reports`` (``POST /v1/reports``), and the agent's ``batch_reports``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, List, Tuple

import pytest
from helpers import (
    REPORT_KINDS,
    Sent,
    batches,
    count_statuses,
    make_agent,
    record_requests,
    reports_of,
    running,
    single_reports,
    wait_state,
)

import baton
from baton._batch import BATCH_BYTES_MAX


def claim_started(
    client: baton.Client, cap: str, count: int
) -> Tuple[str, List[baton.ClaimedTask]]:
    """A new agent, and ``count`` tasks requiring ``cap`` it claimed and started (in order)."""
    agent = client.register_agent(f"batcher-{cap}", [cap], concurrency=count).id
    specs = [baton.TaskSpec(f"t{i}", capabilities=[cap]) for i in range(count)]
    ids = [client.submit_task(spec).task for spec in specs]
    claimed = client.claim(agent, max_tasks=count, wait_ms=5_000, start=True)
    assert sorted(c.task for c in claimed) == sorted(ids)
    return agent, sorted(claimed, key=lambda c: ids.index(c.task))


def events(client: baton.Client, task_id: str) -> List[str]:
    return [h["event"] for h in client.task_history(task_id)]


def test_a_batch_answers_each_report_in_order_and_a_stale_one_alone(
    client: baton.Client, cap: str
) -> None:
    agent, (a, b, c) = claim_started(client, cap, 3)

    outcomes = client.reports(
        [
            baton.Report.heartbeat(a.task, agent, a.token, {"pct": 50}, usage={"usd": 0.5}),
            baton.Report.succeeded(b.task, agent, b.token, {"b": 1}),
            baton.Report.succeeded(c.task, agent, c.token + 1, {"c": 1}),  # never issued
            baton.Report.succeeded(a.task, agent, a.token, {"a": 1}, usage={"usd": 1.0}),
        ]
    )

    assert len(outcomes) == 4
    beat, b_done, stale, a_done = outcomes
    assert isinstance(beat, baton.ReportAnswer)
    assert (beat.task, beat.state, beat.cancelled) == (a.task, "executing", False)
    assert isinstance(b_done, baton.ReportAnswer) and b_done.state == "completed"
    assert isinstance(stale, baton.Conflict), "the error its own report_succeeded would raise"
    assert (stale.status, stale.code, stale.field) == (409, "stale_lease", "reports[2]")
    assert isinstance(a_done, baton.ReportAnswer)
    assert (a_done.task, a_done.state) == (a.task, "completed"), "applied after its heartbeat"

    # The stale report changed nothing, and undid nothing of the others.
    assert client.get_task(c.task).state == "executing"
    assert client.get_task(b.task).result == {"b": 1}
    done = client.get_task(a.task)
    assert (done.state, done.result) == ("completed", {"a": 1})
    assert events(client, a.task)[-2:] == ["heartbeat", "execution_succeeded"]
    # The refused task still takes a report under its own token.
    [again] = client.reports([baton.Report.released(c.task, agent, c.token)])
    assert isinstance(again, baton.ReportAnswer)
    assert (again.task, again.state) == (c.task, "pending")


def test_a_batch_that_is_not_one_is_refused_whole(client: baton.Client, cap: str) -> None:
    agent, [a] = claim_started(client, cap, 1)
    fine = baton.Report.succeeded(a.task, agent, a.token, {"ok": True})

    with pytest.raises(baton.InvalidRequest) as empty:
        client.reports([])
    assert (empty.value.code, empty.value.field) == ("invalid_field", "reports")
    with pytest.raises(baton.InvalidRequest) as too_many:
        client.reports([fine] * (baton.REPORTS_PER_BATCH_MAX + 1))
    assert too_many.value.field == "reports"
    with pytest.raises(baton.InvalidRequest) as unknown:
        client.reports([fine, {"report": "finished", "task": a.task, "agent": agent, "token": 1}])
    assert unknown.value.field == "reports[1].report"

    assert client.get_task(a.task).state == "executing", "no report of a refused batch applied"


def test_the_async_client_sends_batches_too(url: str, client: baton.Client, cap: str) -> None:
    agent, (a, b) = claim_started(client, cap, 2)

    async def send() -> List[Any]:
        async with baton.AsyncClient(url) as ac:
            return await ac.reports(
                [
                    baton.Report.released(a.task, agent, a.token),
                    # A mapping with the same keys is sent as it is.
                    {"report": "released", "task": b.task, "agent": agent, "token": 0},
                ]
            )

    released, stale = asyncio.run(send())
    assert isinstance(released, baton.ReportAnswer) and released.state == "pending"
    assert isinstance(stale, baton.Conflict) and stale.code == "stale_lease"


TASKS = 24


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
@pytest.mark.parametrize("start_on_claim", [True, False], ids=["start_on_claim", "started_report"])
def test_an_agent_sends_its_reports_in_batches(
    client: baton.Client,
    url: str,
    cap: str,
    monkeypatch: pytest.MonkeyPatch,
    start_on_claim: bool,
    use_asyncio: bool,
) -> None:
    sent = record_requests(monkeypatch)
    created = client.submit_workflow(
        [baton.TaskSpec(f"t{i}", capabilities=[cap], input=i) for i in range(TASKS)]
    )
    agent = make_agent(url, cap, concurrency=6, start_on_claim=start_on_claim)

    @agent.task(cap)
    def work(value: Any, ctx: baton.TaskContext) -> Any:
        ctx.progress({"got": value})
        if value % 5 == 0:
            raise baton.NonRetryable("a fifth fail", kind="Fifth")
        return {"double": value * 2}

    with running(agent, use_asyncio=use_asyncio):
        ended = [
            wait_state(client, created.tasks[f"t{i}"], "failed" if i % 5 == 0 else "completed")
            for i in range(TASKS)
        ]

    assert single_reports(sent) == [], "no report sent on its own"
    sent_batches = batches(sent)
    assert sent_batches and all(1 <= len(b) <= baton.REPORTS_PER_BATCH_MAX for b in sent_batches)
    ids = sorted(created.tasks.values())
    assert sorted(reports_of(sent, "succeeded") + reports_of(sent, "failed")) == ids
    assert sorted(reports_of(sent, "started")) == ([] if start_on_claim else ids)
    for i, view in enumerate(ended):
        history = events(client, view.id)
        assert history[:3] == ["submitted", "agent_assigned", "execution_started"]
        assert history[-1] == ("execution_failed" if i % 5 == 0 else "execution_succeeded")
        assert history.count("execution_started") == 1
        if i % 5:
            assert view.result == {"double": i * 2}


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
def test_with_batching_off_each_report_is_its_own_request(
    client: baton.Client, url: str, cap: str, monkeypatch: pytest.MonkeyPatch, use_asyncio: bool
) -> None:
    sent = record_requests(monkeypatch)
    ids = [client.submit_task(baton.TaskSpec(f"t{i}", capabilities=[cap])).task for i in range(4)]
    agent = make_agent(url, cap, concurrency=2, batch_reports=False, start_on_claim=False)

    @agent.task(cap)
    def work(value: Any, ctx: baton.TaskContext) -> Any:
        return {"key": ctx.key}

    with running(agent, use_asyncio=use_asyncio):
        for task in ids:
            wait_state(client, task, "completed")

    assert batches(sent) == []
    kinds = sorted(s.path.rsplit("/", 1)[1] for s in single_reports(sent))
    assert kinds == sorted(["started"] * 4 + ["succeeded"] * 4)
    assert set(kinds) <= set(REPORT_KINDS)


LARGE_TASKS = 32
LARGE_RESULT = 600_000
"""About 600 KB of JSON per result: 14 of them in one request would pass the server's 8 MiB
body limit, and an agent of concurrency 16 has that many to report at once."""


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
def test_large_results_are_batched_within_the_byte_cap(
    client: baton.Client, url: str, cap: str, monkeypatch: pytest.MonkeyPatch, use_asyncio: bool
) -> None:
    sent = record_requests(monkeypatch)
    statuses = count_statuses(monkeypatch)
    created = client.submit_workflow(
        [baton.TaskSpec(f"t{i}", capabilities=[cap], input=i) for i in range(LARGE_TASKS)]
    )
    agent = make_agent(url, cap, concurrency=16)

    def result(i: int) -> Any:
        return {"i": i, "blob": f"{i:x}".rjust(LARGE_RESULT, "z")}

    @agent.task(cap)
    def work(value: Any, ctx: baton.TaskContext) -> Any:
        # Held until a round's tasks are all running, so their results are reported together.
        time.sleep(0.5)
        return result(value)

    with running(agent, use_asyncio=use_asyncio):
        ended = client.wait_workflow(created.workflow, timeout=60.0)

    assert ended.status == "completed"
    states = {client.get_task(t).state for t in created.tasks.values()}
    assert states == {"completed"}, "no result refused"
    assert client.get_task(created.tasks["t7"]).result == result(7), "stored intact"
    assert 413 not in statuses and statuses[200] > 0, statuses
    sent_batches = batches(sent)
    sizes = [sum(len(json.dumps(r).encode()) for r in b) for b in sent_batches]
    assert max(sizes) <= BATCH_BYTES_MAX, "within the cap"
    assert sorted(reports_of(sent, "succeeded")) == sorted(created.tasks.values())
    assert max(sum(r["report"] == "succeeded" for r in b) for b in sent_batches) == 1
