"""Both runners against a server that goes away and comes back without the agent: the agent
backs off while it cannot connect, registers again as a new agent (Baton makes agents' ids) when
the new server does not know it, and goes on working under its new id. And an agent given an id
Baton does not know registers as a new agent."""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import Server, make_agent, running, wait_for, wait_state

import baton


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
def test_an_agent_outlives_a_server_that_forgot_it(
    tmp_path: Path, cap: str, use_asyncio: bool, caplog: pytest.LogCaptureFixture
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    server = Server(tmp_path / "first", listen=listen)
    agent = make_agent(server.url, cap)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        return {"agent": ctx.agent_id}

    try:
        with caplog.at_level(logging.INFO, logger="baton.agent"), running(
            agent, use_asyncio=use_asyncio
        ):
            with baton.Client(server.url) as client:
                before = client.submit_task({"key": "before", "capabilities": [cap]})
                assert wait_state(client, before.task, "completed").result == {"agent": agent.id}
            forgotten = agent.id
            server.stop()
            # Same address, empty store: the agent's claims fail to connect, then the new server
            # answers that it does not know the agent.
            server = Server(tmp_path / "second", listen=listen)
            with baton.Client(server.url) as client:
                after = client.submit_task({"key": "after", "capabilities": [cap]})
                done = wait_state(client, after.task, "completed", timeout=30.0)
                assert agent.id != forgotten, "registered again as a new agent"
                assert done.result == {"agent": agent.id}, "and worked under its new id"
                assert [a.id for a in client.iter_agents()] == [agent.id], "once"
        said = f"Baton had forgotten agent {forgotten}: registered again as {agent.id}"
        assert said in caplog.messages
    finally:
        server.stop()


@pytest.mark.parametrize("use_asyncio", [False, True], ids=["run", "run_async"])
def test_an_agent_given_an_id_baton_does_not_know_registers_as_a_new_agent(
    url: str, client: baton.Client, cap: str, use_asyncio: bool, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = str(uuid.uuid4())
    agent = make_agent(url, cap, agent_id=unknown)

    @agent.task(cap)
    def handle(value: Any, ctx: baton.TaskContext) -> Any:
        return {"agent": ctx.agent_id}

    with caplog.at_level(logging.INFO, logger="baton.agent"):
        with running(agent, use_asyncio=use_asyncio):
            wait_for(lambda: agent.id != unknown, what="the agent to register as a new one")
            task = client.submit_task({"key": "fresh", "capabilities": [cap]})
            assert wait_state(client, task.task, "completed").result == {"agent": agent.id}
    assert f"Baton has no agent {unknown}: registering as a new agent" in caplog.messages
