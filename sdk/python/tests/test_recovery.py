"""Both runners against a server that goes away and comes back without the agent: the agent
backs off while it cannot connect, registers again under its id when the new server does not
know it, and goes on working."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from helpers import Server, make_agent, running, wait_state

import baton


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
def test_an_agent_outlives_a_server_that_forgot_it(
    tmp_path: Path, cap: str, use_asyncio: bool
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    server = Server(tmp_path / "first", listen=listen)
    agent = make_agent(server.url, cap)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        return {"agent": ctx.agent_id}

    try:
        with running(agent, use_asyncio=use_asyncio):
            with baton.Client(server.url) as client:
                before = client.submit_task({"key": "before", "capabilities": [cap]})
                assert wait_state(client, before.task, "completed").result == {"agent": agent.id}
            server.stop()
            # Same address, empty store: the agent's claims fail to connect, then the new server
            # answers that it does not know the agent.
            server = Server(tmp_path / "second", listen=listen)
            with baton.Client(server.url) as client:
                after = client.submit_task({"key": "after", "capabilities": [cap]})
                done = wait_state(client, after.task, "completed", timeout=30.0)
                assert done.result == {"agent": agent.id}, "registered again under its id"
    finally:
        server.stop()
