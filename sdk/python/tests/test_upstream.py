"""Results flow down the graph: a handler reads its dependencies' results from
``ctx.upstream``, those a claim answer withheld over its size budget included, under both
runners."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from helpers import make_agent, running, wait_state

import baton

BIG = "z" * (900 * 1024)
"""Five of these are over one claim answer's 4 MiB: one result comes withheld."""


@pytest.mark.parametrize("use_asyncio", [False, True])
def test_a_join_reads_every_upstream_result_withheld_ones_included(
    client: baton.Client, url: str, cap: str, use_asyncio: bool
) -> None:
    parts = [f"part-{i}" for i in range(5)]
    wf = client.submit_workflow(
        [{"key": p, "capabilities": [cap], "input": p} for p in parts]
        + [{"key": "join", "depends_on": parts, "capabilities": [cap]}],
        name="sdk-upstream",
    )
    seen: Dict[str, Any] = {}
    agent = make_agent(url, cap, concurrency=1)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        if ctx.key != "join":
            assert len(ctx.upstream) == 0
            return {"part": value, "text": BIG}
        seen["keys"] = sorted(ctx.upstream)
        seen["ids"] = {k: ctx.upstream.task_id(k) for k in ctx.upstream}
        seen["parts"] = {k: ctx.upstream[k]["part"] for k in ctx.upstream}
        seen["sizes"] = {k: len(ctx.upstream[k]["text"]) for k in ctx.upstream}
        return {"joined": len(ctx.upstream)}

    with running(agent, use_asyncio=use_asyncio):
        done = wait_state(client, wf.tasks["join"], "completed", timeout=30.0)

    assert done.result == {"joined": 5}
    assert seen["keys"] == parts
    assert seen["ids"] == {p: wf.tasks[p] for p in parts}
    assert seen["parts"] == {p: p for p in parts}
    assert seen["sizes"] == {p: len(BIG) for p in parts}
    withheld = [
        k for k, u in client.task_upstream(wf.tasks["join"]).items() if "result" not in u
    ]
    assert len(withheld) == 1, "a read carries at most 4 MiB of results, as a claim does"
    one = client.task_upstream(wf.tasks["join"], key="part-0")
    assert list(one) == ["part-0"] and one["part-0"]["result"]["part"] == "part-0"


@pytest.mark.parametrize("use_asyncio", [False, True])
def test_references_and_a_fan_out_hand_results_down_the_graph(
    client: baton.Client, url: str, cap: str, use_asyncio: bool
) -> None:
    wf = client.submit_workflow(
        [
            baton.TaskSpec("plan", capabilities=[cap], input={"step": "plan"}),
            baton.TaskSpec(
                "section",
                depends_on=["plan"],
                capabilities=[cap],
                for_each=baton.ref("plan", "/sections"),
                input={"step": "write", "topic": baton.ref("plan", "/topic")},
            ),
            baton.TaskSpec(
                "edit",
                depends_on=["section"],
                capabilities=[cap],
                input={
                    "step": "edit",
                    "drafts": baton.ref("section"),
                    "note": baton.literal({"$from": "as written"}),
                },
            ),
        ],
        name="sdk-fan-out",
        outputs={"drafts": baton.ref("edit", "/drafts"), "sections": 2},
    )
    agent = make_agent(url, cap, concurrency=2)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        if value["step"] == "plan":
            return {"topic": "tides", "sections": ["moon", "sun"]}
        if value["step"] == "write":
            return f"{value['topic']}: {value['item']}"
        return {"drafts": value["drafts"], "note": value["note"]}

    with running(agent, use_asyncio=use_asyncio):
        done = wait_state(client, wf.tasks["edit"], "completed", timeout=30.0)

    assert done.result == {
        "drafts": ["tides: moon", "tides: sun"],
        "note": {"$from": "as written"},
    }
    assert done.input is not None and done.input["drafts"] == done.result["drafts"]
    assert done.spec["input"]["drafts"] == {"$from": "section"}
    fan_out = client.get_task(wf.tasks["section"])
    assert fan_out.state == "completed"
    assert fan_out.result == ["tides: moon", "tides: sun"]
    ended = client.wait_workflow(wf.workflow, timeout=10.0)
    assert ended.status == "completed"
    assert ended.result == {"drafts": ["tides: moon", "tides: sun"], "sections": 2}
