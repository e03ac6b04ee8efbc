"""Fixtures: a real ``baton`` server (one per session, on a free port, with a temporary data
directory), a client for it, and a capability unique to each test."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest
from helpers import Server

import baton


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("baton"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def url(server: Server) -> str:
    return server.url


@pytest.fixture
def client(url: str) -> Iterator[baton.Client]:
    with baton.Client(url) as c:
        yield c


@pytest.fixture
def cap() -> str:
    """A capability no other test uses, so agents only see their own test's tasks."""
    return f"cap-{uuid.uuid4().hex[:12]}"
