"""Flow control: named rate limits set, listed, changed and deleted; tasks that draw from a limit
or hold a concurrency key are handed out only while there is room, and say why they wait. Sync
and asyncio clients, against a real server (limits and keys are the server's, so each test
names its own)."""

from __future__ import annotations

import asyncio
import time

import pytest

import baton

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def test_limits_are_set_listed_changed_and_deleted(client: baton.Client, cap: str) -> None:
    key = f"llm-{cap}"
    created = client.set_limit(key, 3000, 60_000)
    assert isinstance(created, baton.LimitView)
    assert (created.key, created.units, created.per_ms) == (key, 3000, 60_000)
    assert (created.available, created.parked) == (3000, 0)

    changed = client.set_limit(key, 10, 1000)
    assert (changed.units, changed.per_ms, changed.available) == (10, 1000, 10)
    got = client.limit(key)
    assert (got.key, got.units, got.per_ms, got.parked) == (key, 10, 1000, 0)
    assert got.updated_at == changed.updated_at
    assert [v.units for v in client.limits() if v.key == key] == [10]

    client.delete_limit(key)
    assert key not in [v.key for v in client.limits()]
    with pytest.raises(baton.NotFound) as missing:
        client.limit(key)
    assert (missing.value.status, missing.value.code) == (404, "limit_not_found")
    with pytest.raises(baton.NotFound) as again:
        client.delete_limit(key)
    assert again.value.code == "limit_not_found"


def test_a_bad_limit_is_refused_naming_the_field(client: baton.Client, cap: str) -> None:
    key = f"bad-{cap}"
    with pytest.raises(baton.InvalidRequest) as units:
        client.set_limit(key, 0, 1000)
    assert (units.value.status, units.value.code, units.value.field) == (
        422,
        "invalid_field",
        "units",
    )
    with pytest.raises(baton.InvalidRequest) as per_ms:
        client.set_limit(key, 5, 0)
    assert per_ms.value.field == "per_ms"
    with pytest.raises(baton.NotFound):
        client.limit(key)


def test_tasks_beyond_a_rate_limit_wait_until_it_is_deleted(
    client: baton.Client, cap: str
) -> None:
    key = f"llm-{cap}"
    client.set_limit(key, 2, HOUR_MS)
    wf = client.submit_workflow(
        [baton.TaskSpec(f"t{i}", capabilities=[cap], rate=[baton.RateUse(key)]) for i in range(3)],
        name="sdk-rate-limited",
    )
    agent = client.register_agent(f"rated-{cap}", [cap], concurrency=10)

    claimed = client.claim(agent.id, max_tasks=3)
    assert len(claimed) == 2
    (held_back,) = set(wf.tasks.values()) - {c.task for c in claimed}
    view = client.get_task(held_back)
    assert view.state == "pending"
    assert view.waiting is not None
    assert view.waiting["reason"] == "rate_limited"
    assert (view.waiting["limit"], view.waiting["units"], view.waiting["available"]) == (
        key,
        1,
        0,
    )
    assert view.waiting["until"] > time.time() * 1000
    bucket = client.limit(key)
    assert (bucket.available, bucket.parked) == (0, 1)

    client.delete_limit(key)
    (last,) = client.claim(agent.id, max_tasks=3, wait_ms=5000)
    assert last.task == held_back
    client.cancel_workflow(wf.workflow, "done")


def test_a_limit_with_a_usage_unit_is_charged_what_the_agent_reported(
    client: baton.Client, cap: str
) -> None:
    key = f"tokens-{cap}"
    client.set_limit(key, 100, DAY_MS)
    created = client.submit_task(
        baton.TaskSpec(
            "write",
            capabilities=[cap],
            rate=[baton.RateUse(key, units=10, usage_unit="tokens")],
        )
    )
    agent = client.register_agent(f"writer-{cap}", [cap])
    (task,) = client.claim(agent.id)
    assert client.limit(key).available == 90
    client.report_started(task.task, agent.id, task.token)
    client.report_succeeded(task.task, agent.id, task.token, {"ok": True}, usage={"tokens": 40})
    assert client.get_task(created.task).state == "completed"
    assert client.limit(key).available == 60
    client.delete_limit(key)


def test_a_full_concurrency_key_holds_tasks_of_the_same_tenant(
    client: baton.Client, cap: str
) -> None:
    tenant = f"acme-{cap}"
    wf = client.submit_workflow(
        [
            baton.TaskSpec(
                k,
                capabilities=[cap],
                input={"tenant": tenant},
                concurrency=[baton.ConcurrencyKey("tenant-{/tenant}", max=1)],
            )
            for k in ("a", "b")
        ],
        name="sdk-concurrency",
    )
    agent = client.register_agent(f"tenanted-{cap}", [cap], concurrency=10)

    (first,) = client.claim(agent.id, max_tasks=2)
    (other,) = set(wf.tasks.values()) - {first.task}
    waiting = client.get_task(other).waiting
    assert waiting == {
        "reason": "concurrency_full",
        "key": f"tenant-{tenant}",
        "held": 1,
        "max": 1,
    }

    client.report_started(first.task, agent.id, first.token)
    client.report_succeeded(first.task, agent.id, first.token, {"ok": True})
    (second,) = client.claim(agent.id, max_tasks=2, wait_ms=5000)
    assert second.task == other
    client.cancel_workflow(wf.workflow, "done")


def test_unknown_limits_and_a_max_of_zero_are_refused_at_submission(
    client: baton.Client, cap: str
) -> None:
    with pytest.raises(baton.InvalidRequest) as unknown:
        client.submit_workflow([baton.TaskSpec("a", rate=[baton.RateUse(f"missing-{cap}")])])
    assert (unknown.value.status, unknown.value.code, unknown.value.field) == (
        422,
        "invalid_field",
        "tasks[0].rate[0].key",
    )
    with pytest.raises(baton.InvalidRequest) as zero:
        client.submit_workflow(
            [{"key": "a"}, {"key": "b", "concurrency": [{"key": "k", "max": 0}]}]
        )
    assert zero.value.field == "tasks[1].concurrency[0].max"


def test_limits_with_the_asyncio_client(url: str, cap: str) -> None:
    async def scenario() -> None:
        async with baton.AsyncClient(url) as client:
            key = f"async-{cap}"
            created = await client.set_limit(key, 5, 1000)
            assert (created.key, created.units, created.available) == (key, 5, 5)
            assert (await client.limit(key)).per_ms == 1000
            assert key in [v.key for v in await client.limits()]
            await client.delete_limit(key)
            with pytest.raises(baton.NotFound) as missing:
                await client.limit(key)
            assert missing.value.code == "limit_not_found"

    asyncio.run(scenario())


def test_a_fairness_key_takes_each_tenant_in_turn(client: baton.Client, cap: str) -> None:
    # Claims take up to 32 tasks of a group a turn: tenant a's first 32, then b's, then a's next.
    keys = [f"a{i}" for i in range(34)] + ["b0", "b1"]
    specs = [
        baton.TaskSpec(
            k,
            capabilities=[cap],
            input={"t": k[0]},
            fairness_key=f"{cap}-{{/t}}",
        )
        for k in keys
    ]
    wf = client.submit_workflow(specs, name="sdk-fairness")
    agent = client.register_agent(f"fair-{cap}", [cap], concurrency=40)
    claimed = client.claim(agent.id, max_tasks=36)
    by_id = {v: k for k, v in wf.tasks.items()}
    order = [by_id[t.task] for t in claimed]
    assert order[32:35] == ["b0", "b1", "a32"], order
    client.cancel_workflow(wf.workflow, "done")
