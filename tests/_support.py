"""Helpers shared by the fault and cluster tests (no fixtures: those are in conftest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Fault:
    """Runs ``action`` once, right after the store's scanner handed out its first
    raw batch, and counts the scanner's connection attempts.

    It wraps two methods of the store's ``StreamScanner`` instance; the
    server itself is real and the fault is a real stop, kill or restart.
    """

    def __init__(self, store: Any, action: Callable[[], None]) -> None:
        self.handshakes = 0
        self.fired = False
        scanner = store.core._scanner  # the connection a lone scan uses
        real_scan, real_handshake = scanner.scan, scanner._handshake

        async def scan(*args: Any, **kwargs: Any) -> Any:
            async for batch in real_scan(*args, **kwargs):
                if not self.fired:
                    self.fired = True
                    action()  # blocks the store's loop while the server goes away
                yield batch

        async def handshake(url: str) -> None:
            self.handshakes += 1
            await real_handshake(url)

        scanner.scan = scan
        scanner._handshake = handshake
