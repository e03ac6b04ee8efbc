"""The report batchers alone (``baton._batch``), with a stand-in client: a lone report goes at
once, reports queued while a batch is in flight go together in the next one, a request
that fails as a whole hands its error to every report in it, and a batch stays within
``BATCH_BYTES_MAX`` bytes of JSON (a report larger on its own goes alone)."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, List, Sequence

import baton
from baton import _batch, _ops

WAIT_S = 5.0


def report(task: str) -> baton.Report:
    return baton.Report.heartbeat(task, "agent-1", 1)


def answer(r: baton.Report) -> baton.ReportAnswer:
    return baton.ReportAnswer(r.task, "executing", 1, 1, 1, False, baton.Deadlines())


def sized(task: str, size: int) -> baton.Report:
    """A ``succeeded`` report whose JSON is ``size`` bytes."""
    empty = baton.Report.succeeded(task, "agent-1", 1, "")
    return baton.Report.succeeded(task, "agent-1", 1, "x" * (size - _batch._size(empty)))


def alone(op: "_ops.Op[Any]") -> str:
    """The task of a report sent as its own request (``POST /v1/tasks/{task}/{report}``)."""
    assert op.method == "POST" and op.path.startswith("/v1/tasks/"), op.path
    assert op.path.rsplit("/", 1)[1] in baton.REPORT_KINDS
    return f"alone:{op.path.split('/')[3]}"


def answer_alone(op: "_ops.Op[Any]") -> baton.ReportAnswer:
    return answer(baton.Report.released(op.path.split("/")[3], "agent-1", 1))


MIB = _batch.BATCH_BYTES_MAX


class HeldClient:
    """A blocking client whose ``reports`` waits until the test lets each call go; ``fail``
    makes the next call fail as a whole."""

    def __init__(self) -> None:
        self.calls: "queue.Queue[List[str]]" = queue.Queue()
        self.go = threading.Semaphore(0)
        self.fail: List[BaseException] = []

    def reports(self, reports: Sequence[baton.Report]) -> List[Any]:
        self.calls.put([r.task for r in reports])
        assert self.go.acquire(timeout=WAIT_S)
        if self.fail:
            raise self.fail.pop()
        return [answer(r) for r in reports]

    def _call(self, op: "_ops.Op[Any]") -> Any:
        self.calls.put(alone(op))
        assert self.go.acquire(timeout=WAIT_S)
        if self.fail:
            raise self.fail.pop()
        return answer_alone(op)


def test_the_blocking_batcher_sends_at_once_then_what_queued_meanwhile() -> None:
    client = HeldClient()
    batcher = _batch.ReportBatcher(client, queued_max=8)  # type: ignore[arg-type]
    outcomes: "queue.Queue[Any]" = queue.Queue()
    try:
        batcher.submit(report("a"), outcomes.put)
        assert client.calls.get(timeout=WAIT_S) == ["a"], "a lone report goes at once"
        for task in ("b", "c", "d"):
            batcher.submit(report(task), outcomes.put)
        client.go.release()
        assert outcomes.get(timeout=WAIT_S).task == "a"
        assert client.calls.get(timeout=WAIT_S) == ["b", "c", "d"], "queued while a was out"
        client.fail.append(baton.Unavailable(503, "store_unavailable", "busy"))
        client.go.release()
        failed = [outcomes.get(timeout=WAIT_S) for _ in range(3)]
        assert all(isinstance(f, baton.Unavailable) for f in failed), "each gets the failure"
    finally:
        batcher.close()


def test_the_asyncio_batcher_sends_at_once_then_what_queued_meanwhile() -> None:
    async def scenario() -> None:
        calls: List[List[str]] = []
        go = asyncio.Event()
        fail: List[BaseException] = []

        class Client:
            async def reports(self, reports: Sequence[baton.Report]) -> List[Any]:
                calls.append([r.task for r in reports])
                await go.wait()
                go.clear()
                if fail:
                    raise fail.pop()
                return [answer(r) for r in reports]

        batcher = _batch.AsyncReportBatcher(Client(), queued_max=8)  # type: ignore[arg-type]
        outcomes: "asyncio.Queue[Any]" = asyncio.Queue()
        batcher.submit(report("a"), outcomes.put_nowait)
        await asyncio.sleep(0)
        assert calls == [["a"]], "a lone report goes at once"
        for task in ("b", "c"):
            batcher.submit(report(task), outcomes.put_nowait)
        go.set()
        assert (await asyncio.wait_for(outcomes.get(), WAIT_S)).task == "a"
        await asyncio.sleep(0)
        assert calls == [["a"], ["b", "c"]], "queued while a was out"
        fail.append(baton.ConnectionFailed(0, "connection_failed", "refused"))
        go.set()
        failed = [await asyncio.wait_for(outcomes.get(), WAIT_S) for _ in range(2)]
        assert all(isinstance(f, baton.ConnectionFailed) for f in failed)
        await asyncio.sleep(0)
        batcher.submit(report("d"), outcomes.put_nowait)
        await asyncio.sleep(0)
        assert calls[-1] == ["d"], "the sender starts again after it ran dry"
        await batcher.aclose()

    asyncio.run(scenario())


def test_a_report_is_measured_as_the_batch_sends_it() -> None:
    r = baton.Report.succeeded("t", "agent-1", 1, {"text": "caf\u00e9 \u2603", "n": [1, 2.5]})
    sent = _ops.request_of("http://baton", _ops.reports([r]))["content"]
    assert len(sent) == len(b'{"reports": []}') + _batch._size(r)
    assert _batch._size(sized("t", 5000)) == 5000
    nan = baton.Report.heartbeat("t", "agent-1", 1, float("nan"))
    assert _batch._size(nan) > MIB, "not encodable: sent alone, to fail on its own"


def submit_sized(batcher: Any, done: Any) -> None:
    """While ``a`` is in flight: ``b`` and ``c`` (over the cap together), ``d`` (small), ``e``
    (over the cap on its own), ``g`` and ``h`` (the cap exactly together), ``f`` (small)."""
    batcher.submit(sized("b", 600_000), done)
    batcher.submit(sized("c", 600_000), done)
    batcher.submit(report("d"), done)
    batcher.submit(sized("e", MIB + 1), done)
    batcher.submit(sized("g", MIB // 2), done)
    batcher.submit(sized("h", MIB // 2), done)
    batcher.submit(report("f"), done)


SIZED_CALLS = [["b"], ["c", "d"], "alone:e", ["g", "h"], ["f"]]
"""What ``submit_sized`` sends, in order: a report that does not fit waits for the next batch
(the order kept); the oversize one goes alone, through its own endpoint."""


def check_sized(got: List[Any]) -> None:
    assert [getattr(g, "task", None) for g in got] == ["a", "b", "c", "d", None, "g", "h", "f"]
    assert isinstance(got[4], baton.InvalidRequest), "the lone request's error, to it alone"


def test_the_blocking_batcher_keeps_batches_within_the_byte_cap() -> None:
    client = HeldClient()
    batcher = _batch.ReportBatcher(client, queued_max=8)  # type: ignore[arg-type]
    outcomes: "queue.Queue[Any]" = queue.Queue()
    try:
        batcher.submit(report("a"), outcomes.put)
        calls = [client.calls.get(timeout=WAIT_S)]
        submit_sized(batcher, outcomes.put)
        for _ in SIZED_CALLS:
            if calls[-1] == "alone:e":
                client.fail.append(baton.InvalidRequest(400, "invalid_field", "refused"))
            client.go.release()  # the call in flight answers; the next one goes
            calls.append(client.calls.get(timeout=WAIT_S))
        client.go.release()
        assert calls == [["a"], *SIZED_CALLS]
        check_sized([outcomes.get(timeout=WAIT_S) for _ in range(8)])
    finally:
        batcher.close()


def test_the_asyncio_batcher_keeps_batches_within_the_byte_cap() -> None:
    async def scenario() -> None:
        calls: List[Any] = []
        go = asyncio.Event()
        fail: List[BaseException] = []

        async def held(call: Any) -> None:
            calls.append(call)
            await go.wait()
            go.clear()
            if fail:
                raise fail.pop()

        class Client:
            async def reports(self, reports: Sequence[baton.Report]) -> List[Any]:
                await held([r.task for r in reports])
                return [answer(r) for r in reports]

            async def _call(self, op: "_ops.Op[Any]") -> Any:
                await held(alone(op))
                return answer_alone(op)

        batcher = _batch.AsyncReportBatcher(Client(), queued_max=8)  # type: ignore[arg-type]
        outcomes: "asyncio.Queue[Any]" = asyncio.Queue()
        batcher.submit(report("a"), outcomes.put_nowait)
        await asyncio.sleep(0)
        submit_sized(batcher, outcomes.put_nowait)
        for _ in SIZED_CALLS:
            if calls[-1] == "alone:e":
                fail.append(baton.InvalidRequest(400, "invalid_field", "refused"))
            sent = len(calls)
            go.set()  # the call in flight answers; the next one goes
            for _ in range(1000):
                if len(calls) > sent:
                    break
                await asyncio.sleep(0)
        go.set()
        got = [await asyncio.wait_for(outcomes.get(), WAIT_S) for _ in range(8)]
        assert calls == [["a"], *SIZED_CALLS]
        check_sized(got)
        await batcher.aclose()

    asyncio.run(scenario())
