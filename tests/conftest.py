"""Shared fixtures: one real nats-server with JetStream per test session.

Tests never mock NATS. Each test gets its own stream name so tests can share
the server without seeing each other's data.
"""

from __future__ import annotations

import itertools
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aether_audit.nats.server import NatsServer

# The tests sit in folders by subpackage (tests/model/, tests/export/, ...) and
# import the helpers here (``_support``) by name: tests/ on the path makes that
# work from any folder, whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

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


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Start extra nats-servers, each with its own store dir and port; all killed at the end.

    ``server_factory(config_text="", store_dir=None, port=-1)``: pass the
    ``store_dir`` and ``port`` of a stopped server to restart it on its data.
    """
    started: list[NatsServer] = []
    numbers = itertools.count()

    def start(config_text: str = "", *, store_dir: Path | None = None, port: int = -1) -> NatsServer:
        server = NatsServer(store_dir or tmp_path / f"server-{next(numbers)}", config_text=config_text, port=port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()
