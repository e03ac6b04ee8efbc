"""Artifacts: uploads from bytes, a path or a file object (streamed), downloads checked
against their address into memory or a file, references in inputs, and the server's refusals
as typed errors; with the sync and the async client."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Iterator

import pytest
from helpers import Server

import baton


def address(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose artifacts are at most 1 KiB."""
    srv = Server(tmp_path_factory.mktemp("small"), ["--artifact-bytes-max", "1024"])
    yield srv
    srv.stop()


def test_artifacts_go_up_and_come_back_checked(client: baton.Client, tmp_path: Path) -> None:
    stored = client.put_artifact(b"hello artifacts", content_type="text/plain")
    assert stored.artifact == address(b"hello artifacts")
    assert stored.size == len(b"hello artifacts")
    # The session's server may have it from an earlier run of this test: stored or recognised.
    assert stored.content_type == "text/plain"
    assert client.get_artifact(stored.artifact) == b"hello artifacts"
    assert client.get_artifact(stored) == b"hello artifacts"

    data = bytes(range(256)) * (3 * 4096 + 1)  # about 3 MiB: several upload chunks
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    from_path = client.put_artifact(src)
    assert from_path.artifact == address(data) and from_path.size == len(data)
    with open(src, "rb") as f:
        from_file = client.put_artifact(f)
    assert from_file.artifact == from_path.artifact
    assert from_file.created is False, "the same bytes are stored once"

    out = tmp_path / "out.bin"
    assert client.get_artifact(from_path.artifact, out) == out
    assert out.read_bytes() == data
    assert not (tmp_path / "out.bin.part").exists()

    wf = client.submit_workflow(
        [{"key": "a", "input": {"doc": baton.artifact_ref(from_path)}}], name="sdk-artifacts"
    )
    view = client.get_task(wf.tasks["a"])
    assert view.spec["input"] == {"doc": {"$artifact": from_path.artifact}}
    # It requires no capability: left pending, another test's agent would be handed it.
    client.cancel_workflow(wf.workflow, "test over")


def test_refusals_come_back_as_typed_errors(
    client: baton.Client, small_server: Server, tmp_path: Path
) -> None:
    missing = address(b"never uploaded")
    with pytest.raises(baton.NotFound) as e:
        client.get_artifact(missing)
    assert e.value.code == "artifact_not_found"
    with pytest.raises(baton.InvalidRequest) as e:
        client.get_artifact("sha256:nothex")
    assert e.value.code == "artifact_ref_invalid"
    with pytest.raises(baton.InvalidRequest) as e:
        client.submit_workflow(
            [{"key": "a", "input": {"doc": baton.artifact_ref(missing)}}], name="sdk-missing"
        )
    assert e.value.code == "artifact_not_found"
    assert e.value.field == "tasks[0].input.doc"

    with baton.Client(small_server.url) as small:
        with pytest.raises(baton.InvalidRequest) as e:
            small.put_artifact(b"x" * 1025)
        assert e.value.status == 413 and e.value.code == "artifact_too_large"
        big = tmp_path / "big.bin"
        big.write_bytes(b"y" * 1025)
        with pytest.raises(baton.InvalidRequest) as e:
            small.put_artifact(big)
        assert e.value.code == "artifact_too_large"
        with pytest.raises(baton.NotFound):
            small.get_artifact(address(b"x" * 1025))
        assert small.put_artifact(b"z" * 1024).size == 1024


def test_the_async_client_uploads_and_downloads_too(url: str, tmp_path: Path) -> None:
    data = b"async " * 300_000
    src = tmp_path / "a.bin"
    src.write_bytes(data)

    async def main() -> None:
        async with baton.AsyncClient(url) as client:
            stored = await client.put_artifact(src, content_type="application/x-demo")
            assert stored.artifact == address(data)
            again = await client.put_artifact(io.BytesIO(data))
            assert again.artifact == stored.artifact and again.created is False
            assert await client.get_artifact(stored.artifact) == data
            out = tmp_path / "b.bin"
            assert await client.get_artifact(stored, out) == out
            assert out.read_bytes() == data
            with pytest.raises(baton.NotFound):
                await client.get_artifact(address(b"nothing"))

    asyncio.run(main())
