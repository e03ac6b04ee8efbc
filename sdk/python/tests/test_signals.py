"""A blocking agent in its own process stops cleanly on Ctrl-C (SIGINT) and on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import wait_state

import baton

AGENT = textwrap.dedent(
    """
    import signal
    import sys
    import baton

    # Started from a background job, a process inherits SIGINT ignored: Ctrl-C must reach it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    url, cap = sys.argv[1:]
    agent = baton.Agent("signalled-" + cap, url=url, claim_wait_ms=200, shutdown_grace=0.2)

    @agent.task(cap)
    def wait(value, ctx):
        print("started", flush=True)
        ctx.wait_cancelled(30)
        return "too late"

    agent.run()
    print("stopped", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_agent_and_releases_its_task(
    client: baton.Client, url: str, cap: str, signum: int, tmp_path: Path
) -> None:
    created = client.submit_task({"key": "interrupted", "capabilities": [cap]})
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, url, cap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(baton.__file__).parents[1])},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        wait_state(client, created.task, "executing")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["stopped"]
    task = client.get_task(created.task)
    assert (task.state, task.events[-1]) == ("pending", "assignment_released")
    client.cancel_task(created.task)
