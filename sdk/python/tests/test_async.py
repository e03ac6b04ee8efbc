"""The asyncio client and agent against a real server."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional

import pytest
from helpers import wait_for_async

import baton


async def completed(client: baton.AsyncClient, task_id: str) -> baton.TaskView:
    async def check() -> Optional[baton.TaskView]:
        view = await client.get_task(task_id)
        return view if view.state == "completed" else None

    return await wait_for_async(check, what=f"task {task_id} to be completed")


async def progress_recorded(client: baton.AsyncClient, task_id: str, progress: Any) -> bool:
    history = (await client.get_task(task_id)).history
    return any(h["event"] == "heartbeat" and h["data"].get("progress") == progress for h in history)


def test_an_async_agent_completes_tasks_with_async_and_blocking_handlers(
    url: str, cap: str
) -> None:
    blocking_cap = f"{cap}-blocking"

    async def main() -> None:
        agent = baton.Agent(f"async-{cap}", url=url, concurrency=3, claim_wait_ms=200)
        progress: List[Any] = []

        @agent.task(cap)
        async def summarize(value: Any, ctx: baton.TaskContext) -> Any:
            ctx.progress({"pct": 50})
            await wait_for_async(
                lambda: progress_recorded(client, ctx.task_id, {"pct": 50}),
                what="the progress heartbeat",
            )
            progress.append(ctx.key)
            return {"summary": value["text"][:5], "attempt": ctx.attempt}

        @agent.task(blocking_cap)
        def count(value: Any, ctx: baton.TaskContext) -> Any:
            return len(value)

        async with baton.AsyncClient(url) as client:
            wf = await client.submit_workflow(
                [
                    baton.TaskSpec("summarize", capabilities=[cap], input={"text": "hello world"}),
                    baton.TaskSpec(
                        "count",
                        capabilities=[blocking_cap],
                        input=[1, 2, 3],
                        depends_on=["summarize"],
                    ),
                ]
            )
            stream = await client.events(workflow=wf.workflow, read_timeout=10.0)
            runner = asyncio.ensure_future(agent.run_async())
            summary = await completed(client, wf.tasks["summarize"])
            counted = await completed(client, wf.tasks["count"])

            transitions = []
            async with stream:
                async for item in stream:
                    assert isinstance(item, baton.TransitionEvent)
                    transitions.append((item.key, item.to))
                    if item.key == "count" and item.to == "completed":
                        break

            agent.stop()
            await asyncio.wait_for(runner, 10.0)

            assert summary.result == {"summary": "hello", "attempt": 1}
            assert counted.result == 3
            assert progress == ["summarize"]
            assert ("summarize", "completed") in transitions
            assert (await client.counts(wf.workflow)).completed == 2
            with pytest.raises(baton.NotFound):
                await client.get_task("0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a")
            keys = [t.key async for t in client.iter_tasks(workflow=wf.workflow, page_size=1)]
            assert sorted(keys) == ["count", "summarize"]

    asyncio.run(main())


def test_cancelling_run_async_releases_what_it_holds(url: str, cap: str) -> None:
    async def main() -> None:
        agent = baton.Agent(f"async-{cap}", url=url, claim_wait_ms=200, shutdown_grace=0.1)
        started = asyncio.Event()

        @agent.task(cap)
        async def forever(value: Any, ctx: baton.TaskContext) -> Any:
            started.set()
            await asyncio.Event().wait()  # until cancelled

        async with baton.AsyncClient(url) as client:
            created = await client.submit_task({"key": "forever", "capabilities": [cap]})
            runner = asyncio.ensure_future(agent.run_async())
            await asyncio.wait_for(started.wait(), 10.0)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10.0)
            task = await client.get_task(created.task)
            assert task.state == "pending"
            assert task.events[-1] == "assignment_released"
            await client.cancel_task(created.task)

    asyncio.run(main())


def test_an_async_handler_sees_its_task_cancelled(url: str, cap: str) -> None:
    async def main() -> None:
        agent = baton.Agent(f"async-{cap}", url=url, claim_wait_ms=200)
        running = asyncio.Event()
        reasons: List[Any] = []

        @agent.task(cap)
        async def patient(value: Any, ctx: baton.TaskContext) -> Any:
            running.set()
            await wait_for_async(lambda: ctx.cancelled, what="the handler to be cancelled")
            reasons.append(ctx.cancel_reason)
            return "ignored"

        async with baton.AsyncClient(url) as client:
            created = await client.submit_task(
                baton.TaskSpec("patient", capabilities=[cap], timeouts={"heartbeat_ms": 1500})
            )
            runner = asyncio.ensure_future(agent.run_async())
            await asyncio.wait_for(running.wait(), 10.0)
            await client.cancel_task(created.task, reason="changed my mind")
            await wait_for_async(lambda: reasons, what="the handler to see the cancellation")
            agent.stop()
            await asyncio.wait_for(runner, 10.0)
            task = await client.get_task(created.task)

        assert reasons == ["task_cancelled"]
        assert task.state == "cancelled"
        assert task.detail["reason"]["reason"] == "changed my mind"

    asyncio.run(main())


def test_the_async_client_lists_agents_a_page_at_a_time(url: str, cap: str) -> None:
    async def main() -> None:
        async with baton.AsyncClient(url) as client:
            mine = set()
            for i in range(3):
                mine.add((await client.register_agent(f"apager-{cap}-{i}", [cap], 1)).id)
            first = await client.list_agents(limit=1)
            assert len(first.agents) == 1 and first.next == first.agents[0].id
            every = [a.id async for a in client.iter_agents(page_size=2)]
            assert every == sorted(every) and mine <= set(every)
            assert [a.id for a in await client.agents()] == every

    asyncio.run(main())
