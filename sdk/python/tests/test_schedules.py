"""Schedules and triggers through the SDK: a schedule is created, read, paused, resumed and
deleted; a trigger is registered, fired (its input filling the template's ``$input``
placeholders, an idempotency key submitting once) and deleted; refusals name the field at
fault and change nothing. Sync and asyncio clients, against a real server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import baton


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def test_a_schedule_is_created_listed_paused_resumed_and_deleted(client: baton.Client) -> None:
    name = unique("nightly")
    created = client.create_schedule(
        {
            "name": name,
            "cron": "0 30 9 * * MON-FRI",
            "timezone": "Europe/Berlin",
            "workflow": {"name": "digest", "tasks": [baton.TaskSpec(key="collect")]},
            "overlap": "allow",
            "catch_up": {"policy": "latest"},
        }
    )
    assert isinstance(created, baton.ScheduleView)
    assert (created.name, created.cron, created.timezone) == (
        name,
        "0 30 9 * * MON-FRI",
        "Europe/Berlin",
    )
    assert created.spec["workflow"]["tasks"][0]["key"] == "collect"
    assert len(created.next) == 5 and created.next == sorted(created.next)
    assert not created.paused and created.last_workflow is None
    assert name in [s.name for s in client.schedules()]
    assert client.schedule(name).spec["overlap"] == "allow"

    paused = client.pause_schedule(name)
    assert paused.paused and paused.next == []
    resumed = client.resume_schedule(name)
    assert not resumed.paused and len(resumed.next) == 5

    client.delete_schedule(name)
    with pytest.raises(baton.NotFound) as gone:
        client.schedule(name)
    assert gone.value.code == "schedule_not_found"
    assert name not in [s.name for s in client.schedules()]


def test_a_bad_schedule_is_refused_naming_its_field(client: baton.Client) -> None:
    name = unique("bad")
    spec = {"name": name, "cron": "every day", "workflow": {"tasks": [{"key": "a"}]}}
    with pytest.raises(baton.InvalidRequest) as refused:
        client.create_schedule(spec)
    assert refused.value.field == "cron"
    with pytest.raises(baton.NotFound):
        client.schedule(name)

    client.create_schedule({**spec, "cron": "0 0 3 * * *"})
    with pytest.raises(baton.Conflict) as taken:
        client.create_schedule({**spec, "cron": "0 0 4 * * *"})
    assert taken.value.code == "schedule_exists"
    assert client.schedule(name).cron == "0 0 3 * * *"
    client.delete_schedule(name)
    with pytest.raises(TypeError):
        client.create_schedule([spec])  # type: ignore[arg-type]


def test_a_trigger_is_fired_once_per_key_with_its_input_and_deleted(
    client: baton.Client, cap: str
) -> None:
    name = unique("ci")
    put = client.put_trigger(
        name,
        {
            "name": "on-push",
            "tasks": [
                baton.TaskSpec(
                    key="build",
                    capabilities=[cap],
                    input={"repo": {"$input": "/repo"}, "all": {"$input": ""}},
                )
            ],
        },
    )
    assert isinstance(put, baton.TriggerView)
    assert (put.name, put.workflow["name"]) == (name, "on-push")
    assert name in [t.name for t in client.triggers()]
    assert client.trigger(name).workflow["tasks"][0]["key"] == "build"

    fired = client.fire_trigger(name, {"repo": "baton"}, idempotency_key="push-1")
    assert fired.created
    build = client.get_task(fired.tasks["build"])
    assert build.spec["input"] == {"repo": "baton", "all": {"repo": "baton"}}
    again = client.fire_trigger(name, {"repo": "baton"}, idempotency_key="push-1")
    assert (again.workflow, again.created) == (fired.workflow, False)
    with pytest.raises(baton.Conflict) as mismatch:
        client.fire_trigger(name, {"repo": "other"}, idempotency_key="push-1")
    assert mismatch.value.code == "idempotency_mismatch"
    other = client.fire_trigger(name, {"repo": "baton"})
    assert other.created and other.workflow != fired.workflow

    with pytest.raises(baton.InvalidRequest) as lacking:
        client.fire_trigger(name, {"branch": "main"})
    assert lacking.value.field == "body"
    assert "/repo" in (lacking.value.expected or "")

    replaced = client.put_trigger(name, {"tasks": [{"key": "deploy", "capabilities": [cap]}]})
    assert replaced.created_at == put.created_at
    assert replaced.workflow["tasks"][0]["key"] == "deploy"

    client.delete_trigger(name)
    with pytest.raises(baton.NotFound) as gone:
        client.fire_trigger(name, {"repo": "baton"})
    assert gone.value.code == "trigger_not_found"
    with pytest.raises(baton.NotFound):
        client.delete_trigger(name)
    client.cancel_workflow(fired.workflow)
    client.cancel_workflow(other.workflow)


def test_a_bad_trigger_is_refused_naming_the_placeholder(client: baton.Client) -> None:
    name = unique("bad")
    with pytest.raises(baton.InvalidRequest) as refused:
        client.put_trigger(name, {"tasks": [{"key": "a", "input": {"$input": "repo"}}]})
    assert refused.value.field == "workflow.tasks[0].input.$input"
    with pytest.raises(baton.NotFound):
        client.trigger(name)


def test_the_async_client_has_the_same_schedule_and_trigger_calls(url: str, cap: str) -> None:
    schedule_name = unique("async")
    trigger_name = unique("async")

    async def main() -> None:
        async with baton.AsyncClient(url) as client:
            created = await client.create_schedule(
                {"name": schedule_name, "cron": "0 0 3 * * *", "workflow": {"tasks": [{"key": "a"}]}}
            )
            assert created.timezone == "UTC"
            assert schedule_name in [s.name for s in await client.schedules()]
            assert (await client.pause_schedule(schedule_name)).paused
            assert not (await client.resume_schedule(schedule_name)).paused
            assert (await client.schedule(schedule_name)).name == schedule_name
            await client.delete_schedule(schedule_name)
            with pytest.raises(baton.NotFound):
                await client.schedule(schedule_name)

            await client.put_trigger(
                trigger_name,
                {"tasks": [{"key": "a", "capabilities": [cap], "input": {"$input": "/n"}}]},
            )
            assert trigger_name in [t.name for t in await client.triggers()]
            assert (await client.trigger(trigger_name)).name == trigger_name
            fired = await client.fire_trigger(trigger_name, {"n": 7}, idempotency_key="k")
            again = await client.fire_trigger(trigger_name, {"n": 7}, idempotency_key="k")
            assert fired.created and not again.created and again.workflow == fired.workflow
            assert (await client.get_task(fired.tasks["a"])).spec["input"] == 7
            await client.delete_trigger(trigger_name)
            with pytest.raises(baton.NotFound):
                await client.trigger(trigger_name)
            await client.cancel_workflow(fired.workflow)

    asyncio.run(main())


def test_schedules_and_triggers_are_listed_a_page_at_a_time_by_name(
    client: baton.Client, url: str
) -> None:
    prefix = unique("paged")
    names = [f"{prefix}/{i}" for i in (3, 1, 4, 0, 2)]
    template = {"tasks": [{"key": "a"}]}
    for name in names:
        client.create_schedule({"name": name, "cron": "0 0 3 * * *", "workflow": template})
        client.put_trigger(name, template)
    first = client.list_schedules(limit=2)
    assert len(first.schedules) == 2 and first.next == first.schedules[-1].name
    walked = [s.name for s in client.iter_schedules(page_size=2)]
    assert walked == sorted(set(walked)), "by name, each once"
    assert [n for n in walked if n.startswith(prefix)] == sorted(names)
    triggers = [t.name for t in client.iter_triggers(page_size=2)]
    assert [n for n in triggers if n.startswith(prefix)] == sorted(names)
    assert [t.name for t in client.triggers()] == triggers

    async def main() -> None:
        async with baton.AsyncClient(url) as aclient:
            page = await aclient.list_triggers(after=names[0], limit=1)
            assert [t.name for t in page.triggers] == [triggers[triggers.index(names[0]) + 1]]
            assert [s.name async for s in aclient.iter_schedules(page_size=2)] == walked
            assert [t.name async for t in aclient.iter_triggers(page_size=3)] == triggers

    asyncio.run(main())
    for name in names:
        client.delete_schedule(name)
        client.delete_trigger(name)
