"""Scenario files: a stream's history written down as JSON Lines, and seeding it.

A scenario is a ``.jsonl`` file, one step per line, run in order. Blank
lines and lines starting with ``#`` are ignored. Any step may carry a
``"name"`` (so a later ``delete`` can refer to it) and a ``"note"`` (ignored).
``at`` is a timestamp: RFC 3339 text (``"2026-11-20T10:00:00.123456789Z"``),
or relative to the moment the step runs: ``"now"``, ``"now-90s"``,
``"now+2h"`` (units ``ms s m h d``); absent means ``"now"``. Relative times
keep a scenario free of ``clock_skew`` findings whenever it is seeded.

``{"op": "expect", "counts": {"version_gap": 1, ...}}``
    Optional, first: the findings an audit of the freshly seeded stream
    must show, per code (codes left out are expected to be 0).
``{"op": "stream_config", "deny_delete": true, "deny_purge": true}``
    Optional, before any write: creates the stream with the store's own
    configuration plus these flags (the Go store never sets them, so every
    stream it creates gets ``immutability_not_enforced``). An existing
    stream with other flags is an error: the flags cannot be changed later.
``{"op": "event", "actor": "order-1", "type": "OrderPlaced", "version": 1, "data": {...}, "at": ..., "id": ..., "extra": {...}}``
    Appended with ``save_event`` (so the version guard applies). ``id``
    defaults to a UUID derived from actor and version (re-seeding writes the
    same IDs); ``data`` to ``{}``; ``extra`` holds extra payload keys.
``{"op": "snapshot", "actor": "order-1", "version": 3, "state": {...}, "at": ...}``
    Stored with ``save_snapshot``.
``{"op": "raw", "subject_actor": "order-9", "kind": "events", "payload": {...} | "text", "payload_b64": "...", "at": ..., "msg_id": ...}``
    Published as is on the ``events`` (default) or ``snapshots`` subject of
    ``subject_actor``, bypassing every check of the API: how the anomalies
    another writer could leave (a second process, a buggy client, bad
    bytes) are planted. ``payload`` is a JSON object (written compactly) or
    text (written as UTF-8 bytes); ``payload_b64`` is raw bytes instead.
    ``at`` sets the object's ``timestamp``. No ``Nats-Msg-Id`` header unless
    ``msg_id`` is given, so the server never drops a duplicate.
``{"op": "delete", "step": "name" | index}``
    Deletes the message an earlier step stored, through the JetStream API
    (``$JS.API.STREAM.MSG.DELETE``), as anyone with API rights could.
    An index counts the file's steps from 0 (comment lines do not count).

Seeding is a function over a writer (``Writer``: the store's save
operations plus its raw writes ``publish_raw``, ``delete_message`` and
``create_stream``, which plant what ``save_event`` refuses to write).

Example:
    >>> from aether_audit.store.sync import run_sync
    >>> store = aether_audit.connect(stream="demo")                  # doctest: +SKIP
    >>> run_sync(seed_scenario(store.core, "anomalies"))             # doctest: +SKIP
    {'scenario': 'anomalies', 'stream': 'demo', 'steps': 31, 'events': 15, ...}
"""

from __future__ import annotations

import base64
import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import pandas as pd

from ..audit.checks import CHECKS
from ..model.errors import (
    InvalidEventError,
    ScenarioError,
    StreamNotFound,
    VersionConflictError,
)
from ..model.records import ActorSnapshot, Event, StreamState, now, to_timestamp
from ..model.wire import event_subject, format_timestamp, snapshot_subject

__all__ = ["Scenario", "Step", "Writer", "read_scenario", "samples_dir", "scenario_path", "seed_scenario"]


class Writer(Protocol):
    """What seeding needs of a store (``AsyncEventStore`` is one)."""

    stream_name: str

    async def stream_state(self, *, deleted_details: bool = False) -> StreamState: ...
    async def save_event(self, event: Event) -> None: ...
    async def save_snapshot(self, snapshot: ActorSnapshot) -> None: ...
    async def history(self, actor_id: str, *, from_version: int = 0) -> pd.DataFrame: ...
    async def snapshots(self, **filters: Any) -> pd.DataFrame: ...
    async def create_stream(self, **extra: Any) -> None: ...
    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> int: ...
    async def delete_message(self, seq: int) -> None: ...

SAMPLES_ENV = "AETHER_AUDIT_SAMPLES"
# Default event IDs: a UUID5 of actor and version in this namespace.
ID_NAMESPACE = uuid.UUID("6f1c2b0e-4a57-4d0b-9a55-a3e7e0a2c001")

_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d))?")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_OPS = {
    "expect": {"counts"},
    "stream_config": {"deny_delete", "deny_purge"},
    "event": {"actor", "type", "version", "data", "at", "id", "extra"},
    "snapshot": {"actor", "version", "state", "at"},
    "raw": {"subject_actor", "kind", "payload", "payload_b64", "at", "msg_id"},
    "delete": {"step"},
}
_REQUIRED = {
    "expect": {"counts"},
    "event": {"actor", "type", "version"},
    "snapshot": {"actor", "version"},
    "raw": {"subject_actor"},
    "delete": {"step"},
}
_WRITES = {"event", "snapshot", "raw", "delete"}


@dataclass(frozen=True)
class Step:
    """One line of a scenario: its operation and fields, and where it came from."""

    index: int
    line: int
    op: str
    fields: dict[str, Any]

    @property
    def name(self) -> str | None:
        return self.fields.get("name")

    def where(self) -> str:
        return f"line {self.line} ({self.op}{' ' + self.name if self.name else ''})"


@dataclass(frozen=True)
class Scenario:
    """A parsed, validated scenario file."""

    name: str
    path: Path
    steps: tuple[Step, ...]
    expected_counts: dict[str, int] | None

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)


# --- finding and reading files ---------------------------------------------------------


def samples_dir() -> Path:
    """``$AETHER_AUDIT_SAMPLES``, else the repository's ``data_samples/`` (a
    checkout or an editable install), else the copy a wheel installs under
    ``{prefix}/share/aether_audit/data_samples``."""
    if os.environ.get(SAMPLES_ENV):
        return Path(os.environ[SAMPLES_ENV])
    checkout = Path(__file__).resolve().parents[2] / "data_samples"  # aether_audit/store/ -> the checkout
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "aether_audit" / "data_samples"


def scenario_path(path_or_name: str | os.PathLike[str]) -> Path:
    """The file a path or a bare name (``anomalies``, ``clean.jsonl``) means.

    Example:
        >>> scenario_path("anomalies").name
        'anomalies.jsonl'
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.parent == Path("."):
        folder = samples_dir()
        for candidate in (folder / path.name, folder / f"{path.name}.jsonl"):
            if candidate.is_file():
                return candidate
        known = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []
        raise ScenarioError(f"no scenario {str(path_or_name)!r}: not a file, nor one of {known} in {folder}")
    raise ScenarioError(f"no scenario file {str(path)!r}")


def read_scenario(path_or_name: str | os.PathLike[str]) -> Scenario:
    """Parse and validate a scenario file (no I/O beyond reading it)."""
    path = scenario_path(path_or_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    steps: list[Step] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ScenarioError(f"{path.name} line {number}: not JSON: {exc}") from None
        if type(fields) is not dict or fields.get("op") not in _OPS:
            raise ScenarioError(f"{path.name} line {number}: a step is an object with op one of {sorted(_OPS)}")
        op = fields.pop("op")
        steps.append(Step(len(steps), number, op, fields))
    _validate(path, steps)
    expect = next((s for s in steps if s.op == "expect"), None)
    counts = None if expect is None else {code: int(n) for code, n in expect.fields["counts"].items()}
    return Scenario(path.stem, path, tuple(steps), counts)


def _validate(path: Path, steps: list[Step]) -> None:
    names: dict[str, Step] = {}
    wrote = False
    for step in steps:
        where = f"{path.name} {step.where()}"
        unknown = set(step.fields) - _OPS[step.op] - {"name", "note"}
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(_OPS[step.op])}")
        missing = _REQUIRED.get(step.op, set()) - set(step.fields)
        if missing:
            raise ScenarioError(f"{where}: missing {sorted(missing)}")
        if step.op == "expect":
            _validate_expect(where, step)
        if step.op == "stream_config" and wrote:
            raise ScenarioError(f"{where}: stream_config must come before any write")
        if step.op == "raw":
            if ("payload" in step.fields) == ("payload_b64" in step.fields):
                raise ScenarioError(f"{where}: give exactly one of payload and payload_b64")
            if step.fields.get("kind", "events") not in ("events", "snapshots"):
                raise ScenarioError(f"{where}: kind is events or snapshots")
        if step.op == "delete":
            _target(path, step, steps, names)
        if "at" in step.fields:
            resolve_time(step.fields["at"], where)
        if step.name is not None:
            if step.name in names:
                raise ScenarioError(f"{where}: the name {step.name!r} is used twice")
            names[step.name] = step
        wrote = wrote or step.op in _WRITES


def _validate_expect(where: str, step: Step) -> None:
    counts = step.fields["counts"]
    if step.index != 0:
        raise ScenarioError(f"{where}: expect must be the first step")
    if type(counts) is not dict or not all(type(n) is int and n >= 0 for n in counts.values()):
        raise ScenarioError(f"{where}: counts maps finding codes to numbers")
    unknown = set(counts) - set(CHECKS)
    if unknown:
        raise ScenarioError(f"{where}: unknown finding code(s) {sorted(unknown)}")


def _target(path: Path, step: Step, steps: list[Step], names: dict[str, Step]) -> Step:
    """The earlier writing step a ``delete`` refers to."""
    ref = step.fields["step"]
    target = names.get(ref) if isinstance(ref, str) else (steps[ref] if type(ref) is int and 0 <= ref < step.index else None)
    if target is None or target.op not in ("event", "snapshot", "raw"):
        raise ScenarioError(f"{path.name} {step.where()}: step {ref!r} is not an earlier event, snapshot or raw step")
    return target


def resolve_time(value: Any, where: str = "at") -> pd.Timestamp:
    """``at`` to a UTC timestamp: RFC 3339 text or ``now[+-]N(ms|s|m|h|d)``.

    Example:
        >>> resolve_time("2026-11-20T10:00:00Z")
        Timestamp('2026-11-20 10:00:00+0000', tz='UTC')
    """
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: at must be text, not {value!r}")
    match = _RELATIVE.fullmatch(value.strip())
    if match:
        sign, amount, unit = match.groups()
        offset = pd.Timedelta(0) if sign is None else pd.Timedelta(**{_UNITS[unit]: float(amount)})
        return now() + offset if sign != "-" else now() - offset
    try:
        return to_timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ScenarioError(f"{where}: at {value!r} is neither RFC 3339 nor now±N(unit)") from exc


# --- seeding ----------------------------------------------------------------------------


def default_event_id(actor: str, version: int) -> str:
    """The deterministic ID of a scenario event without one."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{actor}\x00{version}"))


async def seed_scenario(store: Writer, path_or_name: str | os.PathLike[str]) -> dict[str, Any]:
    """Write a scenario into ``store``'s stream and say what was written.

    Returns ``scenario``, ``stream``, ``steps``, ``events``, ``snapshots``,
    ``raw``, ``deleted`` and ``expected_counts`` (the file's ``expect``
    counts, every code included, or None).

    Example:
        >>> run_sync(seed_scenario(store.core, "clean"))["events"]   # doctest: +SKIP
        12
    """
    scenario = read_scenario(path_or_name)
    runner = _Seeder(store, scenario)
    for step in scenario:
        try:
            await runner.run(step)
        except (VersionConflictError, InvalidEventError) as exc:
            raise ScenarioError(f"{scenario.path.name} {step.where()}: {exc}") from exc
    expected = None
    if scenario.expected_counts is not None:
        expected = {code: scenario.expected_counts.get(code, 0) for code, check in CHECKS.items() if not check.rule}  # what an audit without rules counts
    return {
        "scenario": scenario.name,
        "stream": store.stream_name,
        "steps": len(scenario.steps),
        **runner.counts,
        "expected_counts": expected,
    }


class _Seeder:
    """Runs the steps of one scenario, remembering where each was stored."""

    def __init__(self, store: Writer, scenario: Scenario) -> None:
        self.store = store
        self.scenario = scenario
        self.counts = {"events": 0, "snapshots": 0, "raw": 0, "deleted": 0}
        self.seqs: dict[int, int] = {}  # step index -> stream sequence
        # Only steps a delete refers to need their sequence looked up.
        self.wanted = {
            _target(scenario.path, step, list(scenario.steps), {s.name: s for s in scenario.steps if s.name}).index
            for step in scenario.steps if step.op == "delete"
        }

    async def run(self, step: Step) -> None:
        await getattr(self, f"_{step.op}")(step)

    async def _expect(self, step: Step) -> None:
        pass

    async def _stream_config(self, step: Step) -> None:

        store = self.store
        deny_delete = bool(step.fields.get("deny_delete", False))
        deny_purge = bool(step.fields.get("deny_purge", False))
        try:
            state = await store.stream_state()
        except StreamNotFound:
            state = None
        if state is not None:
            if (state.deny_delete, state.deny_purge) != (deny_delete, deny_purge):
                raise ScenarioError(
                    f"{self.scenario.path.name} {step.where()}: stream {store.stream_name} already exists "
                    f"with deny_delete={state.deny_delete}, deny_purge={state.deny_purge}; seed a new stream"
                )
            return
        await store.create_stream(deny_delete=deny_delete, deny_purge=deny_purge)

    async def _event(self, step: Step) -> None:
        f = step.fields
        event = Event(
            id=f.get("id") or default_event_id(f["actor"], f["version"]),
            event_type=f["type"],
            actor_id=f["actor"],
            version=f["version"],
            data=f.get("data", {}),
            timestamp=resolve_time(f.get("at", "now")),
            extra=f.get("extra"),
        )
        await self.store.save_event(event)
        self.counts["events"] += 1
        if step.index in self.wanted:
            frame = await self.store.history(event.actor_id)
            self.seqs[step.index] = int(frame.loc[frame["event_id"] == event.id, "stream_seq"].iloc[-1])

    async def _snapshot(self, step: Step) -> None:
        f = step.fields
        snapshot = ActorSnapshot(f["actor"], f["version"], f.get("state", {}), resolve_time(f.get("at", "now")))
        await self.store.save_snapshot(snapshot)
        self.counts["snapshots"] += 1
        if step.index in self.wanted:
            frame = await self.store.snapshots(actor_ids=[snapshot.actor_id], progress=False)
            self.seqs[step.index] = int(frame["stream_seq"].iloc[-1])

    async def _raw(self, step: Step) -> None:
        f = step.fields
        store = self.store
        subject_of = snapshot_subject if f.get("kind", "events") == "snapshots" else event_subject
        subject = subject_of(store.stream_name, f["subject_actor"])
        headers = {"Nats-Msg-Id": str(f["msg_id"])} if f.get("msg_id") else None
        self.seqs[step.index] = await store.publish_raw(subject, self._raw_payload(f), headers)
        self.counts["raw"] += 1

    @staticmethod
    def _raw_payload(f: dict[str, Any]) -> bytes:
        if "payload_b64" in f:
            return base64.b64decode(f["payload_b64"])
        payload = f["payload"]
        if isinstance(payload, dict):
            if "at" in f:
                payload = {**payload, "timestamp": format_timestamp(resolve_time(f["at"]))}
            return orjson.dumps(payload)
        if isinstance(payload, str):
            return payload.encode()
        return orjson.dumps(payload)  # arrays, numbers: stored as their JSON

    async def _delete(self, step: Step) -> None:
        target = _target(self.scenario.path, step, list(self.scenario.steps),
                         {s.name: s for s in self.scenario.steps if s.name})
        await self.store.delete_message(self.seqs[target.index])
        self.counts["deleted"] += 1
