"""Tasks that wait for a signal (``wait_for``): ``client.signal`` completes them with its data,
which flows on to their dependents; a rejection fails them; an idempotency key applies a signal
once; ``client.waiting`` lists what waits. Sync and asyncio clients, against a real server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict

import pytest
from helpers import make_agent, running, wait_state

import baton

HOUR_MS = 3_600_000


def approval(key: str, signal: str = "approve", **extra: Any) -> baton.TaskSpec:
    return baton.TaskSpec(
        key=key,
        input={"plan": "spend $40"},
        wait_for={"signal": signal, "timeout_ms": HOUR_MS},
        **extra,
    )


def test_a_signal_completes_the_waiting_task_and_its_data_flows_to_the_dependent(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [
            approval("review"),
            baton.TaskSpec(
                key="deploy",
                depends_on=["review"],
                capabilities=[cap],
                input={"approved_by": baton.ref("review", "/by")},
            ),
        ],
        name="sdk-approval",
    )
    review = wf.tasks["review"]
    waiting = client.waiting(wf.workflow)
    assert [t.id for t in waiting.tasks] == [review]
    listed = waiting.tasks[0]
    assert (listed.key, listed.signal) == ("review", "approve")
    assert listed.workflow_name == "sdk-approval"
    assert listed.input == {"plan": "spend $40"}
    assert listed.until is not None and listed.until > listed.since
    assert waiting.next is None
    assert client.get_task(review).waiting["reason"] == "signal"  # type: ignore[index]

    # Data that reads like a rejection is still data: it is sent as it is.
    sent = client.signal(wf.workflow, "approve", {"by": "alice", "reject": "no"}, by="alice")
    assert sent.created
    assert [(d.id, d.key, d.state) for d in sent.delivered_to] == [(review, "review", "completed")]
    assert (sent.signal.name, sent.signal.sent_by) == ("approve", "alice")
    assert sent.signal.delivered_at is not None

    done = client.get_task(review)
    assert done.state == "completed"
    assert done.result == {"by": "alice", "reject": "no"}
    received = [h for h in done.history if h["event"] == "signal_received"]
    assert [h["data"]["sent_by"] for h in received] == ["alice"]
    assert client.waiting(wf.workflow).tasks == []

    seen: Dict[str, Any] = {}
    agent = make_agent(url, cap)

    @agent.task(cap)
    def deploy(value: Any, ctx: baton.TaskContext) -> Any:
        seen["input"] = value
        return "deployed"

    with running(agent):
        wait_state(client, wf.tasks["deploy"], "completed")
    assert seen["input"] == {"approved_by": "alice"}
    assert [s.id for s in client.signals(wf.workflow).signals] == [sent.signal.id]


def test_a_rejection_fails_the_waiting_task(client: baton.Client) -> None:
    wf = client.submit_workflow([approval("review")], name="sdk-reject")
    sent = client.signal(wf.workflow, "approve", reject="over budget", by="bob")
    assert [(d.key, d.state) for d in sent.delivered_to] == [("review", "failed")]
    assert sent.signal.reject == "over budget"
    assert sent.signal.data is None
    failed = client.get_task(wf.tasks["review"])
    assert failed.state == "failed"
    assert failed.errors[0]["kind"] == "rejected"
    assert "over budget" in failed.errors[0]["message"]
    with pytest.raises(ValueError):
        client.signal(wf.workflow, "approve", {"ok": True}, reject="both")


def test_an_idempotency_key_applies_a_signal_once(client: baton.Client) -> None:
    wf = client.submit_workflow([approval("first")], name="sdk-idempotent")
    key = f"click-{uuid.uuid4()}"
    first = client.signal(wf.workflow, "approve", {"ok": True}, idempotency_key=key)
    assert first.created and [d.key for d in first.delivered_to] == ["first"]
    # The same click again: answered with the first signal, nothing applied again.
    again = client.signal(wf.workflow, "approve", {"ok": True}, idempotency_key=key)
    assert not again.created
    assert again.delivered_to == []
    assert again.signal.id == first.signal.id
    assert again.signal.idempotency_key == key
    # The same key with other data is refused.
    with pytest.raises(baton.Conflict) as refused:
        client.signal(wf.workflow, "approve", {"ok": False}, idempotency_key=key)
    assert refused.value.code == "idempotency_mismatch"
    assert [s.id for s in client.signals(wf.workflow).signals] == [first.signal.id]


def test_an_early_signal_is_kept_for_the_task_that_comes_to_wait(
    client: baton.Client, url: str, cap: str
) -> None:
    wf = client.submit_workflow(
        [baton.TaskSpec(key="plan", capabilities=[cap]), approval("review", depends_on=["plan"])],
        name="sdk-early",
    )
    early = client.signal(wf.workflow, "approve", {"ok": True})
    assert early.created and early.delivered_to == [] and early.signal.delivered_at is None
    agent = make_agent(url, cap)

    @agent.task(cap)
    def plan(value: Any, ctx: baton.TaskContext) -> Any:
        return "planned"

    with running(agent):
        done = wait_state(client, wf.tasks["review"], "completed")
    assert done.result == {"ok": True}


def test_the_async_client_signals_and_lists_what_waits(url: str) -> None:
    async def main() -> None:
        async with baton.AsyncClient(url) as client:
            wf = await client.submit_workflow(
                [approval("review", signal="go")], name="sdk-async-approval"
            )
            waiting = await client.waiting(wf.workflow)
            assert [(t.key, t.signal) for t in waiting.tasks] == [("review", "go")]
            sent = await client.signal(wf.workflow, "go", [1, 2], by="carol")
            assert [d.state for d in sent.delivered_to] == ["completed"]
            assert (await client.get_task(wf.tasks["review"])).result == [1, 2]
            page = await client.signals(wf.workflow)
            assert [(s.name, s.sent_by, s.data) for s in page.signals] == [("go", "carol", [1, 2])]
            assert (await client.waiting(wf.workflow)).tasks == []

    asyncio.run(main())
