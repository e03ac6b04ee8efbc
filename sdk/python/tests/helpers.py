"""Helpers for the tests: a real ``baton`` server process, waiting for conditions, running
agents in threads."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    TypeVar,
    Union,
)

import httpx
import pytest

import baton

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 30.0
POLL_S = 0.02
"""How often a wait looks at its condition again."""
BUILD_TIMEOUT_S = 1800.0

T = TypeVar("T")


def baton_binary() -> Path:
    """``BATON_BIN``, else the workspace's debug build, built if missing."""
    configured = os.environ.get("BATON_BIN")
    if configured:
        path = Path(configured)
        if not path.is_file():
            pytest.exit(f"BATON_BIN={configured} does not exist", returncode=2)
        return path
    path = REPO / "target" / "debug" / "baton"
    if not path.is_file():
        subprocess.run(
            ["cargo", "build", "-p", "baton-cli"], cwd=REPO, check=True, timeout=BUILD_TIMEOUT_S
        )
    return path


class Server:
    """A ``baton serve`` process listening on a free loopback port."""

    def __init__(
        self, data_dir: Path, extra_args: Optional[List[str]] = None, listen: str = "127.0.0.1:0"
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "server.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                str(baton_binary()),
                "serve",
                "--listen",
                listen,
                "--data-dir",
                str(data_dir),
                *(extra_args or []),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        self.url = self._await_address()
        self._await_health()

    def _await_address(self) -> str:
        lines: "queue.Queue[str]" = queue.Queue()

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                lines.put(raw.decode(errors="replace"))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.startswith("Baton listening on "):
                return line.split()[3]
        self.stop()
        raise RuntimeError(
            f"baton did not start; see {self.log_path}:\n{self.log_path.read_text()}"
        )

    def _await_health(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
        raise RuntimeError("baton never became healthy")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def wait_for(check: Callable[[], Optional[T]], timeout: float = 10.0, what: str = "condition") -> T:
    """Polls ``check`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_S)


async def wait_for_async(
    check: Callable[[], Union[Optional[T], Awaitable[Optional[T]]]],
    timeout: float = 10.0,
    what: str = "condition",
) -> T:
    """:func:`wait_for` on the event loop: ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_S)


def wait_state(
    client: baton.Client, task_id: str, state: str, timeout: float = 10.0
) -> baton.TaskView:
    """The task once it is in ``state``."""

    def check() -> Optional[baton.TaskView]:
        view = client.get_task(task_id)
        return view if view.state == state else None

    return wait_for(check, timeout, f"task {task_id} to be {state}")


@contextlib.contextmanager
def running(
    agent: baton.Agent, stop_timeout: float = 15.0, use_asyncio: bool = False
) -> Iterator[baton.Agent]:
    """Runs ``agent.run()`` (or ``agent.run_async()`` on its own event loop) in a thread for
    the block, then stops it and checks it stopped."""
    errors: List[BaseException] = []

    def target() -> None:
        try:
            if use_asyncio:
                asyncio.run(agent.run_async())
            else:
                agent.run()
        except BaseException as exc:  # noqa: B036 - handed back to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        wait_for(lambda: agent.id, 10.0, "the agent to register")
        yield agent
    finally:
        agent.stop()
        thread.join(stop_timeout)
    assert not thread.is_alive(), "the agent did not stop"
    if errors:
        raise errors[0]


def make_agent(url: str, cap: str, **kwargs: object) -> baton.Agent:
    """An agent tuned for tests: short long polls so that it stops quickly."""
    options: Dict[str, Any] = {"concurrency": 2, "claim_wait_ms": 200, "shutdown_grace": 5.0}
    options.update(kwargs)
    return baton.Agent(f"agent-{cap}", url=url, **options)


class Sent(NamedTuple):
    """A request an SDK client sent: its path and its JSON body (``None``: none)."""

    path: str
    body: Any


REPORT_KINDS = ("started", "heartbeat", "succeeded", "failed", "released")


def record_requests(monkeypatch: pytest.MonkeyPatch) -> List[Sent]:
    """Every request the SDK's clients (blocking and asyncio) send from now on, in order."""
    sent: List[Sent] = []
    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    def note(request: httpx.Request) -> None:
        is_json = request.headers.get("content-type") == "application/json"
        sent.append(Sent(request.url.path, json.loads(request.content) if is_json else None))

    def record(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        note(request)
        return sync_send(self, request, **kwargs)

    async def record_async(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        note(request)
        return await async_send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", record)
    monkeypatch.setattr(httpx.AsyncClient, "send", record_async)
    return sent


def count_statuses(monkeypatch: pytest.MonkeyPatch) -> "collections.Counter[int]":
    """How many responses of each status the SDK's clients (blocking and asyncio) get from now
    on (with :func:`record_requests` too, call it after)."""
    statuses: "collections.Counter[int]" = collections.Counter()
    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    def count(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = sync_send(self, request, **kwargs)
        statuses[response.status_code] += 1
        return response

    async def count_async(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response = await async_send(self, request, **kwargs)
        statuses[response.status_code] += 1
        return response

    monkeypatch.setattr(httpx.Client, "send", count)
    monkeypatch.setattr(httpx.AsyncClient, "send", count_async)
    return statuses


def single_reports(sent: List[Sent]) -> List[Sent]:
    """The reports among ``sent`` that were requests of their own."""
    return [
        s
        for s in sent
        if s.path.startswith("/v1/tasks/") and s.path.rsplit("/", 1)[1] in REPORT_KINDS
    ]


def batches(sent: List[Sent]) -> List[List[Dict[str, Any]]]:
    """The items of each ``POST /v1/reports`` among ``sent``."""
    return [s.body["reports"] for s in sent if s.path == "/v1/reports"]


def reports_of(sent: List[Sent], kind: str) -> List[str]:
    """The tasks of the ``kind`` reports among ``sent``, batched or not."""
    single = [s.path.split("/")[3] for s in single_reports(sent) if s.path.endswith(f"/{kind}")]
    batched = [r["task"] for b in batches(sent) for r in b if r["report"] == kind]
    return single + batched
