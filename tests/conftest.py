"""Shared fixtures: one real nats-server with JetStream per test session.

Tests never mock NATS. Each test gets its own stream name so tests can share
the server without seeing each other's data.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from aether_audit._server import NatsServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory):
    """A nats-server on 127.0.0.1, a free port, data in a temp dir."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def stream_name() -> str:
    """A stream name no other test uses (letters, digits and _ only)."""
    return f"t{next(_counter)}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _no_ambient_nats_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's NATS_URL must never point tests at a real deployment.
    monkeypatch.delenv("NATS_URL", raising=False)
