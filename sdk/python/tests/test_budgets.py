"""What agents spend, and budgets that stop a workflow: a handler reports usage with
``ctx.report_usage``, the agent sends it with heartbeats and outcomes, the workflow adds it up
and pauses once a budget is reached; a resume is refused until the budget is raised. Sync and
asyncio clients, against a real server."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from helpers import Server, make_agent, running, wait_for

import baton


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of this module's own, so that its usage totals are this module's."""
    srv = Server(tmp_path_factory.mktemp("budgets"))
    yield srv.url
    srv.stop()


@pytest.fixture
def client(url: str) -> Iterator[baton.Client]:
    with baton.Client(url) as c:
        yield c


def test_a_budget_reached_pauses_the_workflow_until_raised_and_resumed(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [baton.TaskSpec(key=f"t{i}", capabilities=[cap]) for i in range(4)],
        name="sdk-budget",
        labels={"team": "sdk-budgets"},
        budgets={"usd": 1},
    )
    assert client.get_workflow(wf.workflow).budgets == {"usd": {"limit": 1, "policy": "pause"}}
    agent = make_agent(url, cap, concurrency=1)

    @agent.task(cap)
    def spend(value: Any, ctx: baton.TaskContext) -> Any:
        ctx.report_usage(tokens=100, usd=0.25)
        ctx.report_usage(usd=0.15)
        assert ctx.usage == {"tokens": 100, "usd": 0.4}
        return "spent"

    with running(agent):
        paused = wait_for(
            lambda: (lambda v: v if v.paused else None)(client.get_workflow(wf.workflow)),
            10.0,
            "the budget to pause the workflow",
        )
        assert paused.paused is not None and paused.paused["by"] == "budget"
        assert paused.paused["reason"] == "budget usd 1 reached (1.2)"
        assert paused.counts.completed == 3 and paused.usage == {"tokens": 300, "usd": 1.2}

        with pytest.raises(baton.Conflict) as refused:
            client.resume_workflow(wf.workflow, "go on")
        assert refused.value.code == "budget_reached"

        raised = client.set_budgets(wf.workflow, "approved", {"usd": {"limit": 5}})
        assert raised.budgets["usd"]["limit"] == 5
        client.resume_workflow(wf.workflow, "raised")
        done = client.wait_workflow(wf.workflow, timeout=10.0)
    assert done.status == "completed"
    assert done.usage == {"tokens": 400, "usd": 1.6}
    assert client.usage(label="team:sdk-budgets") == {"tokens": 400, "usd": 1.6}
    spent = client.get_task(wf.tasks["t0"])
    assert spent.usage == {"tokens": 100, "usd": 0.4}


def test_usage_reported_by_hand_with_the_asyncio_client(url: str, cap: str) -> None:
    async def scenario() -> None:
        async with baton.AsyncClient(url) as client:
            wf = await client.submit_workflow(
                [baton.TaskSpec(key=k, capabilities=[cap]) for k in ("a", "b")],
                name="sdk-usage-by-hand",
                budgets={"tokens": {"limit": 1000, "policy": "fail"}},
            )
            agent = await client.register_agent(f"by-hand-{cap}", [cap])
            claimed = (await client.claim(agent.id))[0]
            await client.report_started(claimed.task, agent.id, claimed.token)
            for total in (600, 600, 1200):
                # Cumulative: the total so far, counted once however often it is sent.
                await client.report_heartbeat(
                    claimed.task, agent.id, claimed.token, usage={"tokens": total}
                )
            # The budget failed what was open, this task included: its agent is told.
            with pytest.raises(baton.Conflict) as refused:
                await client.report_succeeded(claimed.task, agent.id, claimed.token, {"ok": 1})
            assert refused.value.code == "task_failed_by_operator"
            view = await client.get_workflow(wf.workflow)
            assert view.status == "failed" and view.usage == {"tokens": 1200}
            for key in ("a", "b"):
                task = await client.get_task(wf.tasks[key])
                assert task.errors[-1]["kind"] == "budget_exceeded"

    asyncio.run(scenario())
