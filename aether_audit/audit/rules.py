"""Business rules: an actor type's lifecycle and data contracts, declared once.

A rules file is TOML (read with ``tomllib``); ``load_rules`` turns it into
a ``RuleSet`` (frozen dataclasses), validated in full: a syntax, type or
reference error is one ``RulesError`` naming the file, the line and the
rule. Every engine runs the same ``RuleSet``: the streaming audit
(``audit.engine``, through the checks ``unknown_event_type``,
``lifecycle_violation``, ``data_contract`` and ``overdue`` declared in
``audit.checks``), ``watch``, the report.

The file (``docs/reference.md`` has the whole format)::

    [actor.order]
    types = ["OrderPlaced", "PaymentReceived", "OrderShipped"]
    initial = ["OrderPlaced"]
    terminal = ["OrderShipped"]

    [actor.order.transitions]
    OrderPlaced = ["PaymentReceived"]
    PaymentReceived = ["OrderShipped"]

    [actor.order.contract.OrderPlaced]
    total = { type = "number", min = 0 }
    currency = { type = "string", enum = ["EUR", "USD"] }

    [[actor.order.deadline]]
    name = "payment"
    after = "OrderPlaced"
    expect = "PaymentReceived"
    within = "24h"

Each check of a rule names it in its findings' message: ``[order.types]``,
``[order.initial]``, ``[order.transitions]``, ``[order.terminal]``,
``[order.contract.OrderPlaced.total]``, ``[order.deadline.payment]``.

What the streaming audit keeps per actor (``RuleState``, arrays indexed by
the engine's actor code, saved in the checkpoint): the code of the last
allowed event type (an int64), and per deadline the time and sequence of the
event that started the wait (two int64, NaT/0 when not waiting): 8 + 16 x
deadlines bytes an actor. Time is the events' own ``timestamp`` (business
time: the event says when it happened); an actor still waiting at the end
of the read is overdue when its wait, measured up to the latest event
timestamp read (the stream's own clock, not the auditor's: the same stream
gives the same findings whenever it is audited, so an incremental audit
equals a full one), passed the deadline.

Example:
    >>> rules = parse_rules('[actor.order]\\ntypes = ["OrderPlaced"]\\n', "inline.toml")
    >>> rules.actors["order"].types
    ('OrderPlaced',)
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ..model.errors import CheckpointError, RulesError

__all__ = [
    "ActorRules",
    "Deadline",
    "FieldRule",
    "JSON_TYPES",
    "RuleBatch",
    "RuleSet",
    "RuleState",
    "json_type",
    "load_rules",
    "parse_duration",
    "parse_rules",
    "rules_of",
]

JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
_NAT = np.iinfo(np.int64).min
_NONE = -1  # last type: no event yet
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


# --- the declarations ------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRule:
    """One field of an event type's ``data``: its JSON type(s), whether it
    must be present, and value constraints (``min``/``max`` for numbers,
    ``enum``, ``pattern``: a regular expression a string must match in full)."""

    name: str
    types: tuple[str, ...] = ()
    required: bool = True
    min: float | None = None
    max: float | None = None
    enum: tuple[Any, ...] | None = None
    pattern: str | None = None

    def expected(self) -> str:
        """What the rule allows, as text (a finding's ``expected``)."""
        parts = ["|".join(self.types)] if self.types else []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.enum is not None:
            parts.append("one of " + ", ".join(orjson.dumps(v).decode() for v in self.enum))
        if self.pattern is not None:
            parts.append(f"matching {self.pattern}")
        return " ".join(parts) or "present"


@dataclass(frozen=True)
class Deadline:
    """``expect`` must follow ``after`` within ``within`` (event time)."""

    name: str
    after: str
    expect: str
    within: timedelta


@dataclass(frozen=True)
class ActorRules:
    """The rules of one actor type. ``initial``, ``transitions`` None: not
    checked; ``transitions`` maps a type to the types allowed next."""

    actor_type: str
    types: tuple[str, ...]
    initial: tuple[str, ...] | None = None
    terminal: tuple[str, ...] = ()
    transitions: Mapping[str, tuple[str, ...]] | None = None
    contracts: Mapping[str, tuple[FieldRule, ...]] = field(default_factory=dict)
    deadlines: tuple[Deadline, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """Rule sets by actor type (actor types not named are not checked);
    ``source``: the file they came from, for messages."""

    actors: Mapping[str, ActorRules]
    source: str = "<rules>"

    @property
    def deadlines(self) -> list[tuple[str, Deadline]]:
        """Every deadline, ``(actor_type, deadline)``, in a fixed order."""
        return [(name, d) for name, rules in self.actors.items() for d in rules.deadlines]

    def rule_names(self) -> list[tuple[str, str]]:
        """Every rule the set declares, ``(name, code of its findings)``, in
        file order: the names findings' messages carry (``[order.types]``)."""
        out = []
        for name, r in self.actors.items():
            out.append((f"{name}.types", "unknown_event_type"))
            if r.initial is not None:
                out.append((f"{name}.initial", "lifecycle_violation"))
            if r.terminal:
                out.append((f"{name}.terminal", "lifecycle_violation"))
            if r.transitions is not None:
                out.append((f"{name}.transitions", "lifecycle_violation"))
            out += [(f"{name}.contract.{t}.{f.name}", "data_contract") for t, fields in r.contracts.items() for f in fields]
            out += [(f"{name}.deadline.{d.name}", "overdue") for d in r.deadlines]
        return out

    def fingerprint(self) -> str:
        """A hash of what the rules say (not of the file's comments): a
        checkpoint made with other rules is refused."""
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, r in self.actors.items():
            item: dict[str, Any] = {"types": list(r.types), "terminal": list(r.terminal)}
            if r.initial is not None:
                item["initial"] = list(r.initial)
            if r.transitions is not None:
                item["transitions"] = {k: list(v) for k, v in r.transitions.items()}
            item["contract"] = {t: [[f.name, list(f.types), f.required, f.min, f.max,
                                     None if f.enum is None else list(f.enum), f.pattern] for f in fields]
                                for t, fields in r.contracts.items()}
            item["deadline"] = [[d.name, d.after, d.expect, d.within.total_seconds()] for d in r.deadlines]
            out[name] = item
        return out


def json_type(value: Any) -> str:
    """The JSON type of a decoded value (``integer`` for whole numbers
    without a fraction; a float is ``number``).

    Example:
        >>> json_type(3), json_type(2.5), json_type(True), json_type(None)
        ('integer', 'number', 'boolean', 'null')
    """
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value_type: str, allowed: tuple[str, ...]) -> bool:
    return value_type in allowed or (value_type == "integer" and "number" in allowed)


def parse_duration(text: Any) -> timedelta:
    """``"24h"``, ``"1h30m"``, ``"90s"``, ``"500ms"``, ``"2d"`` or a number of seconds.

    Example:
        >>> parse_duration("1h30m")
        datetime.timedelta(seconds=5400)
    """
    if isinstance(text, bool):
        raise ValueError("a duration such as \"24h\", \"90m\" or \"30s\"")
    if isinstance(text, (int, float)):
        if text <= 0 or not math.isfinite(text):
            raise ValueError("a positive duration")
        return timedelta(seconds=float(text))
    if not isinstance(text, str) or not text or _DURATION.sub("", text) != "":
        raise ValueError("a duration such as \"24h\", \"90m\" or \"30s\"")
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
    if seconds <= 0:
        raise ValueError("a positive duration")
    return timedelta(seconds=seconds)


# --- the loader ---------------------------------------------------------------------


class _Reader:
    """Validation of one file's parsed TOML, each error one ``RulesError``
    with the file, the line of the key (a simple scan of the text: tomllib
    keeps no positions) and the rule."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line_of(self, actor: str, *needles: str) -> int | None:
        """The first line at or after ``actor``'s first table that holds all
        ``needles`` (then the first with the first needle), else the table's."""
        header = re.compile(r"^\s*\[\[?\s*actor\.\"?" + re.escape(actor) + r"\"?[\].]")
        start = next((i for i, line in enumerate(self.lines) if header.match(line)), 0)
        for wanted in (needles, needles[:1]):
            if not wanted:
                continue
            for i in range(start, len(self.lines)):
                line = self.lines[i].split("#", 1)[0]
                if all(n in line for n in wanted):
                    return i + 1
        return start + 1 if self.lines else None

    def fail(self, rule: str, what: str, actor: str = "", *needles: str) -> RulesError:
        line = self.line_of(actor, *needles) if actor else None
        where = f", line {line}" if line else ""
        return RulesError(f"rules file {self.source}{where}: rule {rule}: {what}")


def _names(value: Any, reader: _Reader, rule: str, actor: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise reader.fail(rule, f"{key} must be a list of event type names (strings)", actor, key)
    if len(set(value)) != len(value):
        raise reader.fail(rule, f"{key} names a type twice", actor, key)
    return tuple(value)


def _known(names: Sequence[str], types: tuple[str, ...], reader: _Reader, rule: str, actor: str, key: str) -> None:
    for name in names:
        if name not in types:
            raise reader.fail(rule, f"{key} names {name!r}, not one of {actor}.types", actor, f'"{name}"')


def _field(name: str, spec: Any, reader: _Reader, rule: str, actor: str) -> FieldRule:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise reader.fail(rule, "a field must be a JSON type name or a table {type, required, min, max, enum, pattern}",
                          actor, name)
    unknown = set(spec) - {"type", "required", "min", "max", "enum", "pattern"}
    if unknown:
        raise reader.fail(rule, f"unknown key(s) {', '.join(sorted(unknown))}; known: type, required, min, max, enum, pattern",
                          actor, name, sorted(unknown)[0])
    kinds = spec.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not all(k in JSON_TYPES for k in kinds):
        raise reader.fail(rule, f"type must be one of {', '.join(JSON_TYPES)} (or a list of them)", actor, name)
    required = spec.get("required", True)
    if not isinstance(required, bool):
        raise reader.fail(rule, "required must be true or false", actor, name)
    bounds = []
    for key in ("min", "max"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise reader.fail(rule, f"{key} must be a number", actor, name)
        bounds.append(None if value is None else float(value))
    enum = spec.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        raise reader.fail(rule, "enum must be a non-empty list", actor, name)
    pattern = spec.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise reader.fail(rule, f"pattern is not a regular expression: {exc}", actor, name) from None
    return FieldRule(name, tuple(kinds), required, bounds[0], bounds[1], None if enum is None else tuple(enum), pattern)


def _actor(name: str, spec: Any, reader: _Reader) -> ActorRules:
    if not isinstance(spec, dict):
        raise reader.fail(name, "an actor type's rules must be a table", name)
    unknown = set(spec) - {"types", "initial", "terminal", "transitions", "contract", "deadline"}
    if unknown:
        raise reader.fail(name, f"unknown key(s) {', '.join(sorted(unknown))}; known: types, initial, terminal, "
                          "transitions, contract, deadline", name, sorted(unknown)[0])
    if "types" not in spec:
        raise reader.fail(f"{name}.types", "every actor type lists its event types (types = [...])", name)
    types = _names(spec["types"], reader, f"{name}.types", name, "types")
    initial = None
    if "initial" in spec:
        initial = _names(spec["initial"], reader, f"{name}.initial", name, "initial")
        _known(initial, types, reader, f"{name}.initial", name, "initial")
    terminal = _names(spec.get("terminal", []), reader, f"{name}.terminal", name, "terminal")
    _known(terminal, types, reader, f"{name}.terminal", name, "terminal")
    transitions = None
    if "transitions" in spec:
        rule = f"{name}.transitions"
        table = spec["transitions"]
        if not isinstance(table, dict):
            raise reader.fail(rule, "transitions must be a table: TYPE = [next types]", name, "transitions")
        transitions = {}
        for source, targets in table.items():
            _known([source], types, reader, rule, name, "transitions")
            nexts = _names(targets, reader, rule, name, source)
            _known(nexts, types, reader, rule, name, "transitions")
            if source in terminal and nexts:
                raise reader.fail(rule, f"{source} is terminal: nothing may follow it", name, source)
            transitions[source] = nexts
    contracts: dict[str, tuple[FieldRule, ...]] = {}
    table = spec.get("contract", {})
    if not isinstance(table, dict):
        raise reader.fail(f"{name}.contract", "contract must be a table of event types", name, "contract")
    for event_type, fields in table.items():
        rule = f"{name}.contract.{event_type}"
        if event_type not in types:
            raise reader.fail(rule, f"a contract for {event_type!r}, not one of {name}.types", name, f"contract.{event_type}")
        if not isinstance(fields, dict):
            raise reader.fail(rule, "a contract must be a table of fields", name, f"contract.{event_type}")
        contracts[event_type] = tuple(_field(f, s, reader, f"{rule}.{f}", name) for f, s in fields.items())
    deadlines = []
    listed = spec.get("deadline", [])
    if not isinstance(listed, list):
        raise reader.fail(f"{name}.deadline", "deadlines are an array of tables ([[actor.X.deadline]])", name, "deadline")
    for i, item in enumerate(listed):
        if not isinstance(item, dict):
            raise reader.fail(f"{name}.deadline", "a deadline must be a table", name, "deadline")
        label = item.get("name", f"{i + 1}")
        rule = f"{name}.deadline.{label}"
        if set(item) - {"name", "after", "expect", "within"} or not {"after", "expect", "within"} <= set(item):
            raise reader.fail(rule, "a deadline holds after, expect, within (and a name)", name, "deadline")
        if not isinstance(label, str) or not label:
            raise reader.fail(rule, "a deadline's name must be text", name, "name")
        for key in ("after", "expect"):
            if not isinstance(item[key], str):
                raise reader.fail(rule, f"{key} must be an event type name", name, key)
            _known([item[key]], types, reader, rule, name, key)
        try:
            within = parse_duration(item["within"])
        except ValueError as exc:
            raise reader.fail(rule, f"within must be {exc}", name, "within") from None
        deadlines.append(Deadline(label, item["after"], item["expect"], within))
    if len({d.name for d in deadlines}) != len(deadlines):
        raise reader.fail(f"{name}.deadline", "two deadlines share a name", name, "deadline")
    return ActorRules(name, types, initial, terminal, transitions, contracts, tuple(deadlines))


def _table_at(lines: list[str], line: str | None) -> str:
    """``rule NAME: `` for the table a syntax error is in (the last
    ``[actor.…]`` header at or above its line), else nothing."""
    if not line:
        return ""
    for text in reversed(lines[: int(line)]):
        header = re.match(r"^\s*\[\[?\s*actor\.([^\]]+?)\s*\]\]?", text)
        if header:
            return f"rule {header.group(1).replace(chr(34), '')}: "
    return ""


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """The ``RuleSet`` a rules file's ``text`` declares (see the module doc)."""
    reader = _Reader(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc)) or "not TOML"
        line = found.group(1) if found else (str(len(reader.lines)) if "end of document" in str(exc) else None)
        where = f", line {line}" if line else ""
        raise RulesError(f"rules file {source}{where}: {_table_at(reader.lines, line)}not valid TOML: {what}") from None
    unknown = set(data) - {"actor"}
    if unknown:
        key = sorted(unknown)[0]
        line = next((i + 1 for i, l in enumerate(reader.lines) if key in l.split("#", 1)[0]), None)
        raise RulesError(f"rules file {source}{f', line {line}' if line else ''}: rule {key}: unknown top-level key; "
                         "rules go under [actor.TYPE]")
    actors = data.get("actor", {})
    if not isinstance(actors, dict) or not actors:
        raise RulesError(f"rules file {source}: rule actor: no [actor.TYPE] table: nothing to check")
    return RuleSet({name: _actor(name, spec, reader) for name, spec in actors.items()}, source)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate the rules file at ``path`` (``RulesError``, one line)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RulesError(f"rules file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RulesError(f"rules file {path} is not UTF-8 text") from None
    return parse_rules(text, str(path))


def rules_of(value: Any) -> RuleSet | None:
    """A ``RuleSet`` from one, a path to a rules file, or None."""
    if value is None or isinstance(value, RuleSet):
        return value
    if isinstance(value, (str, Path)):
        return load_rules(value)
    raise TypeError(f"rules must be a RuleSet or the path of a rules file, not {type(value).__name__}")


# --- the streaming state --------------------------------------------------------------


@dataclass(frozen=True)
class RuleBatch:
    """What the rule checks read of one batch, computed by ``RuleState.step``
    (the history rows of actor types with rules, in stream order), as
    integer codes: ``at`` the actor type (into ``state.atypes``), ``tc``
    the event type (into ``state.vocab``, -1 for a name no rule declares),
    ``allowed`` (the type is one of its actor type's), ``prev`` the
    previous allowed type of the actor (-1 for its first), ``late`` (rows
    that ended a wait past its deadline, with ``waited`` and ``deadline``)."""

    rules: RuleSet
    state: RuleState
    rows: pd.DataFrame
    at: np.ndarray
    tc: np.ndarray
    allowed: np.ndarray
    prev: np.ndarray
    late: pd.DataFrame


class RuleState:
    """Per-actor rule state (see the module doc), grown with the engine's
    actor codes; ``step`` advances it over a batch and returns the batch's view.

    The rules become lookup tables over integer codes once (actor types x
    types: allowed, initial, terminal; x types again: transitions), so a
    batch is judged by numpy indexing; Python only touches the faults.
    """

    def __init__(self, rules: RuleSet, size: int = 1024) -> None:
        self.rules = rules
        self.vocab = sorted({t for r in rules.actors.values() for t in r.types})
        self.code = {t: i for i, t in enumerate(self.vocab)}
        self.atypes = list(rules.actors)
        a, v = len(self.atypes), len(self.vocab)
        self.allowed_m = np.zeros((a, v), dtype=bool)
        self.initial_m = np.ones((a, v), dtype=bool)
        self.terminal_m = np.zeros((a, v), dtype=bool)
        self.trans_m = np.ones((a, v, v), dtype=bool)
        for i, name in enumerate(self.atypes):
            r = rules.actors[name]
            self.allowed_m[i, [self.code[t] for t in r.types]] = True
            if r.initial is not None:
                self.initial_m[i] = False
                self.initial_m[i, [self.code[t] for t in r.initial]] = True
            self.terminal_m[i, [self.code[t] for t in r.terminal]] = True
            if r.transitions is not None:
                self.trans_m[i] = False
                for source, targets in r.transitions.items():
                    self.trans_m[i, self.code[source], [self.code[t] for t in targets]] = True
        self.decoders: dict[tuple[str, str], Any] = {}  # (actor type, event type) -> contract decoder
        self.deadlines = rules.deadlines
        self.last_type = np.full(size, _NONE, dtype=np.int64)
        self.start = np.full((len(self.deadlines), size), _NAT, dtype=np.int64)
        self.start_seq = np.zeros((len(self.deadlines), size), dtype=np.int64)
        self.clock = _NAT  # the latest event timestamp read (ns)

    def grow(self, size: int) -> None:
        if size <= len(self.last_type):
            return
        extra = size - len(self.last_type)
        self.last_type = np.concatenate([self.last_type, np.full(extra, _NONE, dtype=np.int64)])
        self.start = np.concatenate([self.start, np.full((len(self.deadlines), extra), _NAT, dtype=np.int64)], axis=1)
        self.start_seq = np.concatenate([self.start_seq, np.zeros((len(self.deadlines), extra), dtype=np.int64)], axis=1)

    @staticmethod
    def _codes_of(values: pd.Series, names: list[str]) -> np.ndarray:
        """Each value's index in ``names`` (-1: not there, or null), in Arrow's C++."""
        import pyarrow.compute as pc

        found = pc.index_in(pa.array(values, from_pandas=True).cast(pa.string()), value_set=pa.array(names, pa.string()))
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def step(self, history: pd.DataFrame, codes: np.ndarray) -> RuleBatch:
        """Advance over a batch's history rows (stream order; ``codes`` their
        actors' codes) and return what the rule checks read."""
        self.grow(int(codes.max()) + 1 if len(codes) else 0)
        stamps = history["timestamp"].to_numpy(dtype="M8[ns]").view("int64") if len(history) else np.zeros(0, np.int64)
        if len(stamps):
            valid = stamps[stamps != _NAT]
            if len(valid):
                self.clock = max(self.clock, int(valid.max()))
        at = self._codes_of(history["actor_type"], self.atypes) if len(history) else np.zeros(0, np.int64)
        # An event without a type is a missing_field already: one finding per fault.
        checked = (at >= 0) & (history["event_type"].fillna("") != "").to_numpy(dtype=bool)
        rows = history[checked] if not checked.all() else history
        codes, stamps, at = codes[checked], stamps[checked], at[checked]
        tc = self._codes_of(rows["event_type"], self.vocab) if len(rows) else np.zeros(0, np.int64)
        allowed = (tc >= 0) & self.allowed_m[at, np.maximum(tc, 0)]
        # The previous allowed type of each allowed row: the row before it
        # of the same actor in the batch, else what the state carried. An
        # unknown type does not move the lifecycle (it is its own finding).
        ok = np.nonzero(allowed)[0]
        ok_codes, ok_types = codes[ok], tc[ok]
        order = np.lexsort((np.arange(len(ok)), ok_codes))
        after = np.zeros(len(ok), dtype=bool)
        after[order[1:]] = ok_codes[order[1:]] == ok_codes[order[:-1]]
        before = np.empty(len(ok), dtype=np.int64)
        before[order[1:]] = ok_types[order[:-1]]
        prev = np.full(len(rows), _NONE, dtype=np.int64)
        prev[ok] = np.where(after, before, self.last_type[ok_codes])
        last = np.ones(len(ok), dtype=bool)
        last[order[:-1]] = ok_codes[order[1:]] != ok_codes[order[:-1]]
        self.last_type[ok_codes[last]] = ok_types[last]
        late = self._deadlines(rows, ok, ok_codes, tc, at, stamps)
        return RuleBatch(self.rules, self, rows, at, tc, allowed, prev, late)

    def _deadlines(self, rows: pd.DataFrame, ok: np.ndarray, codes: np.ndarray, tc: np.ndarray,
                   at: np.ndarray, stamps: np.ndarray) -> pd.DataFrame:
        """Start and end the waits, in stream order; the ends past their deadline."""
        out = []
        seqs = rows["stream_seq"].to_numpy(dtype="int64")
        for d, (atype, deadline) in enumerate(self.deadlines):
            a, begin, end = self.atypes.index(atype), self.code[deadline.after], self.code[deadline.expect]
            wanted = (at[ok] == a) & ((tc[ok] == begin) | (tc[ok] == end))
            limit = int(pd.Timedelta(deadline.within).value)
            start, start_seq = self.start[d], self.start_seq[d]
            for j in np.nonzero(wanted)[0]:
                i, code = ok[j], codes[j]
                ts, kind = stamps[i], tc[i]
                if kind == end and start[code] != _NAT:
                    if ts != _NAT and ts - start[code] > limit:
                        out.append((i, d, ts - start[code]))
                    start[code], start_seq[code] = _NAT, 0
                elif kind == begin and start[code] == _NAT and ts != _NAT:
                    start[code], start_seq[code] = ts, seqs[i]
        if not out:
            return rows.iloc[0:0].assign(waited=pd.Series(dtype="int64"), deadline=pd.Series(dtype="int64"))
        at_rows, ds, waited = zip(*out)
        return rows.iloc[list(at_rows)].assign(waited=list(waited), deadline=list(ds))

    def overdue(self, names: Sequence[str]) -> pd.DataFrame:
        """The actors waiting past a deadline as of the latest event time
        read: ``actor_id, stream_seq`` (the event that started the wait),
        ``deadline`` (its index), ``waited`` (ns)."""
        rows = []
        n = len(names)
        for d, (_, deadline) in enumerate(self.deadlines):
            start = self.start[d][:n]
            limit = int(pd.Timedelta(deadline.within).value)
            late = np.nonzero((start != _NAT) & (self.clock - start > limit))[0] if self.clock != _NAT else []
            rows.extend((names[c], int(self.start_seq[d][c]), d, int(self.clock - start[c])) for c in late)
        frame = pd.DataFrame(rows, columns=["actor_id", "stream_seq", "deadline", "waited"])
        return frame.sort_values(["stream_seq", "deadline"], kind="stable").reset_index(drop=True)

    # --- the checkpoint ---------------------------------------------------------------

    SCHEMA = pa.schema([pa.field("last_type", pa.int64(), nullable=False)])
    WAITING = pa.schema([pa.field(name, pa.int64(), nullable=False) for name in ("actor", "deadline", "start", "seq")])

    def to_state(self, n: int) -> tuple[dict[str, Any], dict[str, pa.Table]]:
        """Scalars and tables of the first ``n`` actors' state."""
        waiting = [(c, d, int(self.start[d][c]), int(self.start_seq[d][c]))
                   for d in range(len(self.deadlines)) for c in np.nonzero(self.start[d][:n] != _NAT)[0]]
        columns = list(zip(*waiting)) if waiting else [[], [], [], []]
        return ({"fingerprint": self.rules.fingerprint(), "clock": None if self.clock == _NAT else int(self.clock)},
                {"rules/last": pa.table([pa.array(self.last_type[:n], pa.int64())], schema=self.SCHEMA),
                 "rules/waiting": pa.table([pa.array(list(c), pa.int64()) for c in columns], schema=self.WAITING)})

    @classmethod
    def from_state(cls, rules: RuleSet, scalars: Any, tables: Mapping[str, pa.Table], n: int, top: int) -> RuleState:
        """The state ``to_state`` wrote for ``rules`` (checked in full; the
        tables' schemas are checked by the engine): ``CheckpointError``."""
        bad = lambda what: CheckpointError(f"engine state: rules: {what}")  # noqa: E731
        if not isinstance(scalars, dict) or set(scalars) != {"fingerprint", "clock"}:
            raise bad("must hold exactly fingerprint and clock")
        if scalars["fingerprint"] != rules.fingerprint():
            raise CheckpointError("the checkpoint was written with other rules: audit with the same rules "
                                  "file, or start a new checkpoint")
        clock = scalars["clock"]
        if clock is not None and type(clock) is not int:
            raise bad("clock must be an integer or null")
        state = cls(rules, max(1024, n))
        last = tables["rules/last"]["last_type"].to_numpy()
        if len(last) != n:
            raise bad(f"last types for {len(last)} actors, not {n}")
        if len(last) and (last.min() < _NONE or last.max() >= len(state.vocab)):
            raise bad("a last type outside the rules' types")
        state.last_type[:n] = last
        waiting = tables["rules/waiting"]
        actor, deadline, start, seq = (waiting[c].to_numpy() for c in ("actor", "deadline", "start", "seq"))
        if len(actor) and (actor.min() < 0 or actor.max() >= n or deadline.min() < 0
                           or deadline.max() >= len(state.deadlines) or seq.min() < 1 or seq.max() > top
                           or (start == _NAT).any()):
            raise bad("a waiting actor, deadline or sequence out of range")
        if len(set(zip(actor.tolist(), deadline.tolist()))) != len(actor):
            raise bad("an actor waits twice on one deadline")
        if len(actor) and clock is None:
            raise bad("actors wait but no event time was read")
        state.start[deadline, actor] = start
        state.start_seq[deadline, actor] = seq
        state.clock = _NAT if clock is None else clock
        return state


# --- the checks' computations (wrapped into findings by ``audit.checks``) --------------------


def unknown_types(batch: RuleBatch) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rows whose type is not one of their actor type's: rows, rule, allowed."""
    at = batch.at[~batch.allowed]
    names = [batch.state.atypes[a] for a in at]
    return batch.rows[~batch.allowed], [f"{a}.types" for a in names], [
        _listed(batch.rules.actors[a].types) for a in names]


def _listed(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def lifecycle_faults(batch: RuleBatch) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Allowed rows that break the lifecycle: not an initial type first, an
    event after a terminal type, a transition not declared. Rows, rule,
    expected, and what came (``found``: ``PREV -> TYPE``). Judged by the
    state's lookup tables; Python only words the faults."""
    state, at, tc, prev = batch.state, batch.at, np.maximum(batch.tc, 0), batch.prev
    p = np.maximum(prev, 0)
    first = batch.allowed & (prev == _NONE)
    bad_initial = first & ~state.initial_m[at, tc]
    terminal = batch.allowed & (prev >= 0) & state.terminal_m[at, p]
    bad_step = batch.allowed & (prev >= 0) & ~terminal & ~state.trans_m[at, p, tc]
    at_rows = np.nonzero(bad_initial | terminal | bad_step)[0]
    rules, expected, found = [], [], []
    for i in at_rows:
        r = batch.rules.actors[state.atypes[at[i]]]
        now = state.vocab[tc[i]]
        if bad_initial[i]:
            rules.append(f"{r.actor_type}.initial")
            expected.append("first event one of " + _listed(r.initial or ())), found.append(f"first event {now}")
            continue
        before = state.vocab[p[i]]
        if terminal[i]:
            rules.append(f"{r.actor_type}.terminal")
            expected.append(f"nothing after terminal {before}"), found.append(f"{before} -> {now}")
        else:
            nexts = (r.transitions or {}).get(before, ())
            rules.append(f"{r.actor_type}.transitions")
            expected.append(f"{before} -> " + (_listed(nexts) if nexts else "nothing")), found.append(f"{before} -> {now}")
    return batch.rows.iloc[at_rows], rules, expected, found


# A typed decoder per contract (msgspec, in C): it accepts a row only when
# every field has the one JSON type and the constraints the contract names,
# and Python (``_value_fault``) would then find no fault either; any row it
# refuses is judged by Python, so the answer is Python's for every row.
_INT64 = (-(2**63), 2**63 - 1)  # orjson decodes larger integers as floats: Python's "number", not "integer"


def _decoder(contract: tuple[FieldRule, ...]) -> Any:
    """A msgspec decoder that accepts exactly what certainly breaks nothing
    of ``contract`` (None: a field it cannot judge, left to Python)."""
    from typing import Annotated, Literal

    import msgspec

    fields, rename = [], {}
    for k, rule in enumerate(contract):
        if len(rule.types) != 1 or rule.types[0] not in ("string", "integer", "number", "boolean"):
            return None
        kind = rule.types[0]
        meta: dict[str, Any] = {}
        if rule.min is not None:
            meta["ge"] = rule.min
        if rule.max is not None:
            meta["le"] = rule.max
        if kind == "integer":
            meta["ge"] = max(meta.get("ge", _INT64[0]), _INT64[0])
            meta["le"] = min(meta.get("le", _INT64[1]), _INT64[1])
            meta = {key: (math.ceil(v) if key == "ge" else math.floor(v)) for key, v in meta.items()}
        if kind in ("string", "boolean") and meta:
            return None  # a range on a string: Python words what msgspec would refuse
        base: Any = {"string": str, "integer": int, "number": float, "boolean": bool}[kind]
        if rule.enum is not None:
            if kind != "string" or not all(isinstance(v, str) for v in rule.enum):
                return None
            base = Literal[tuple(rule.enum)]
        if rule.pattern is not None:
            if kind != "string" or rule.enum is not None:
                return None
            meta["pattern"] = f"^(?:{rule.pattern})\\Z"  # msgspec searches: anchored, as re.fullmatch
        typed = Annotated[base, msgspec.Meta(**meta)] if meta else base
        name = f"f{k}"
        rename[name] = rule.name
        fields.append((name, typed) if rule.required else (name, typed, msgspec.UNSET))
    fields.sort(key=lambda f: len(f) == 3)  # required fields first (no default before a default)
    if len(set(rename.values())) != len(rename):
        return None
    try:
        struct = msgspec.defstruct("Contract", fields, rename=rename)
        return msgspec.json.Decoder(struct)
    except (TypeError, ValueError, re.error):  # a pattern msgspec cannot take as it is: Python judges
        return None


def _fast_clear(data: pa.Array, decoder: Any) -> np.ndarray:
    """Which rows ``decoder`` accepts (each certainly breaks nothing). Row
    by row: a typed decode is ~0.3 us for a 7-field event, less than
    joining the rows for one call would cost (measured: 0.03 s against
    0.14 s for 100,000 rows)."""
    import msgspec

    errors = (msgspec.ValidationError, msgspec.DecodeError, TypeError)
    clear = np.zeros(len(data), dtype=bool)
    decode = decoder.decode
    for i, raw in enumerate(data.to_pylist()):
        if raw is None:
            continue
        try:
            decode(raw)
        except errors:
            continue
        clear[i] = True
    return clear


def contract_faults(batch: RuleBatch) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """One fault per (event, field) of an allowed row whose type has a
    contract: a required field missing, a value of another JSON type or
    outside its constraints. Rows (repeated per fault), rule, expected, found.

    Each (actor type, event type) group is first read by Arrow
    (``_fast_clear``): the rows it clears have no fault; Python decodes and
    judges the rest, so the answer is Python's for every row."""
    state, rows = batch.state, batch.rows
    data = pa.array(rows["data"], from_pandas=True).cast(pa.string()) if len(rows) else pa.array([], pa.string())
    faults: list[tuple[int, int, str, str, str]] = []
    for a, atype in enumerate(state.atypes):
        for etype, contract in batch.rules.actors[atype].contracts.items():
            if not contract:
                continue
            group = np.nonzero(batch.allowed & (batch.at == a) & (batch.tc == state.code[etype]))[0]
            if not len(group):
                continue
            decoder = state.decoders.get((atype, etype), False)
            if decoder is False:
                decoder = state.decoders[(atype, etype)] = _decoder(contract)
            rows_of = data.take(pa.array(group, pa.int64()))
            clear = _fast_clear(rows_of, decoder) if decoder is not None else np.zeros(len(group), dtype=bool)
            left = np.nonzero(~clear)[0]
            for i, raw in zip(group[left], rows_of.take(pa.array(left, pa.int64())).to_pylist()):
                try:
                    value = orjson.loads(raw) if isinstance(raw, str) else None
                except orjson.JSONDecodeError:
                    value = None
                obj = value if isinstance(value, dict) else None
                for k, rule in enumerate(contract):
                    name = f"{atype}.contract.{etype}.{rule.name}"
                    if obj is None or rule.name not in obj:
                        if rule.required:
                            faults.append((i, k, name, f"{rule.name}: {rule.expected()}",
                                           f"{rule.name} missing" if obj is not None else "data is not a JSON object"))
                        continue
                    fault = _value_fault(rule, obj[rule.name])
                    if fault is not None:
                        faults.append((i, k, name, f"{rule.name}: {rule.expected()}", f"{rule.name}: {fault}"))
    faults.sort(key=lambda f: (f[0], f[1]))  # stream order, then the contract's field order
    at_rows = [f[0] for f in faults]
    return rows.iloc[at_rows], [f[2] for f in faults], [f[3] for f in faults], [f[4] for f in faults]


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _value_fault(rule: FieldRule, value: Any) -> str | None:
    """What is wrong with ``value`` under ``rule`` (None: nothing)."""
    kind = json_type(value)
    if rule.types and not _type_ok(kind, rule.types):
        return f"{kind} {_shown(value)}"
    if kind in ("integer", "number"):
        if rule.min is not None and value < rule.min or rule.max is not None and value > rule.max:
            return f"{_shown(value)} out of range"
    if rule.enum is not None and value not in rule.enum:
        return f"{_shown(value)} not allowed"
    if rule.pattern is not None and (not isinstance(value, str) or re.fullmatch(rule.pattern, value) is None):
        return f"{_shown(value)} does not match"
    return None
