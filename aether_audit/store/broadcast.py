"""Broadcasters: who hears of an event after the store saved it.

The Go store calls ``broadcaster.Publish(namespace, event)`` with an
``EventStored`` event after each successful save. Here a broadcaster is any
object with ``publish(namespace, event)``, plain or ``async``.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..model.records import Event, now
from ..model.wire import encode_event, sanitize

__all__ = ["EventBroadcaster", "InMemoryBroadcaster", "NatsBroadcaster", "event_stored"]

EVENT_STORED = "EventStored"


@runtime_checkable
class EventBroadcaster(Protocol):
    """Receives ``EventStored`` events; ``publish`` may be a coroutine function."""

    def publish(self, namespace: str, event: Event) -> Any: ...


def event_stored(original: Event) -> Event:
    """The ``EventStored`` event the Go store broadcasts for ``original``.

    Example:
        >>> e = Event.new("order-1", "OrderPlaced", 1)
        >>> event_stored(e).data["eventId"] == e.id
        True
    """
    return Event(
        id=str(uuid.uuid4()),
        event_type=EVENT_STORED,
        actor_id=original.actor_id,
        version=original.version,
        data={
            "eventId": original.id,
            "actorId": original.actor_id,
            "version": original.version,
            # Go's Timestamp.Unix(): whole seconds.
            "timestamp": original.timestamp.value // 1_000_000_000,
        },
        timestamp=now(),
    )


async def deliver(broadcaster: EventBroadcaster, namespace: str, event: Event) -> None:
    result = broadcaster.publish(namespace, event)
    if inspect.isawaitable(result):
        await result


class InMemoryBroadcaster:
    """Keeps what was published, and calls subscribers (tests, notebooks).

    Example:
        >>> b = InMemoryBroadcaster()
        >>> b.publish("", Event.new("a-1", "X", 1)); len(b.published)
        1
    """

    def __init__(self) -> None:
        self.published: list[tuple[str, Event]] = []
        self._subscribers: list[Callable[[str, Event], Any]] = []

    def subscribe(self, callback: Callable[[str, Event], Any]) -> None:
        self._subscribers.append(callback)

    def publish(self, namespace: str, event: Event) -> None:
        self.published.append((namespace, event))
        for callback in self._subscribers:
            callback(namespace, event)


class NatsBroadcaster:
    """Publishes each event's Go JSON on core NATS, ``{prefix}.{namespace}``.

    The namespace token is sanitised; an empty namespace publishes on
    ``{prefix}`` alone. ``connection`` is a connected nats-py client (for
    example ``store.nats`` of an async store).
    """

    def __init__(self, connection: Any, prefix: str = "aether.broadcast") -> None:
        self._connection = connection
        self.prefix = prefix

    def subject(self, namespace: str) -> str:
        return f"{self.prefix}.{sanitize(namespace)}" if namespace else self.prefix

    async def publish(self, namespace: str, event: Event) -> None:
        await self._connection.publish(self.subject(namespace), encode_event(event))
