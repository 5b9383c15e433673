"""Lifecycles as an event log: rules inferred from a history, the process
map's data, the variants, and a frame process-mining tools read.

Each actor is a case and each event type an activity. Only an actor's
*history* counts (what ``get_events`` replays: its events on its own
subject, version >= 1), in stream order: the same rows the rule checks
judge (``audit.rules``), so rules inferred from a stream give no rule
finding when checked against it.

``Inference`` reads batches one after another (per actor it keeps the last
type: memory grows with actors, not events); ``infer_rules`` runs it over
frames, ``infer_stream`` over a reader, and either writes a rules file
(atomically) commented with the counts behind each line.

Example:
    >>> from aether_audit.audit.checks import events_frame
    >>> ev = events_frame([{"stream_seq": 1, "subject": "s.events.order.order-1", "actor_type": "order",
    ...                     "actor_id": "order-1", "version": 1, "event_type": "OrderPlaced", "data": "{}"}])
    >>> print(infer_rules(ev).splitlines()[3])
    [actor.order]
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ..model.files import write_atomic
from ..model.frames import StreamFrames, to_pandas
from ..read.protocol import Reader
from .checks import has_actor, in_stream_order, subjects_of
from .rules import RuleSet, parse_rules

__all__ = ["Inference", "event_log", "history_rows", "infer_rules", "infer_stream", "process_map", "rule_counts",
           "variants"]

# Python's type of a decoded JSON value -> its JSON type (``rules.json_type``'s table).
_JSON_OF = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}
_BARE = re.compile(r"[A-Za-z0-9_-]+")
MAX_SHAPES = 1024  # distinct data shapes kept per event type before they are folded (memory: not per event)
_COLUMNS = ["stream_seq", "subject", "actor_type", "actor_id", "version", "event_type", "timestamp", "data"]


def _events(source: StreamFrames | pd.DataFrame) -> pd.DataFrame:
    return source.events if isinstance(source, StreamFrames) else source


def history_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``events`` that are actors' histories, in stream order."""
    events = in_stream_order(events)
    if events.empty:
        return events
    own = has_actor(events) & (events["version"] >= 1).to_numpy() & subjects_of(events, "events").own
    return events[own]


def _key(name: str) -> str:
    return name if _BARE.fullmatch(name) else orjson.dumps(name).decode()


def _string(name: str) -> str:
    return orjson.dumps(name).decode()


class Inference:
    """What the observed history says, batch by batch (see the module doc)."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}  # actor -> its last type
        self.type_of: dict[str, str] = {}  # actor -> its actor type
        self.types: dict[str, Counter[str]] = defaultdict(Counter)  # actor type -> event type -> events
        self.initial: dict[str, Counter[str]] = defaultdict(Counter)  # -> actors
        self.follows: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        # (actor type, event type) -> the data's shapes (field names and
        # Python types, in order) -> events: a stream has few shapes, so a
        # row costs one decode and one tuple (what each field's JSON type
        # is, and whether it is in every event, is worked out per shape).
        self.shapes: dict[tuple[str, str], Counter[tuple[tuple[str, type], ...]]] = defaultdict(Counter)
        # Shapes folded once a key has more than MAX_SHAPES (field names that
        # are IDs, say): (fields in every event so far, JSON types, counts).
        self.folded: dict[tuple[str, str], tuple[set[str], dict[str, set[str]], Counter[str]]] = {}
        self.events = 0

    def add(self, events: pd.DataFrame) -> None:
        """One batch (an events frame, after every batch before it)."""
        rows = history_rows(events)
        if len(rows):  # an event without a type is a missing_field, not a type (the rule checks skip it too)
            rows = rows[(rows["event_type"].fillna("") != "").to_numpy(dtype=bool)]
        self.events += len(rows)
        for atype, actor, etype, data in zip(rows["actor_type"].astype(object), rows["actor_id"].astype(object),
                                             rows["event_type"].astype(object), rows["data"].astype(object)):
            atype = atype or ""
            self.types[atype][etype] += 1
            prev = self.last.get(actor)
            if prev is None:
                self.initial[atype][etype] += 1
                self.type_of[actor] = atype
            else:
                self.follows[atype][(prev, etype)] += 1
            self.last[actor] = etype
            try:
                value = orjson.loads(data) if isinstance(data, str) else None
            except orjson.JSONDecodeError:
                value = None
            shape = tuple((k, type(v)) for k, v in value.items()) if isinstance(value, dict) else ()
            shapes = self.shapes[(atype, etype)]
            shapes[shape] += 1
            if len(shapes) > MAX_SHAPES:
                self._fold((atype, etype))

    def _fold(self, key: tuple[str, str]) -> None:
        every, kinds, present = self._aggregate(key)
        self.folded[key] = (every, kinds, present)
        self.shapes[key] = Counter()

    def _fields(self, key: tuple[str, str]) -> tuple[dict[str, set[str]], Counter[str]]:
        """The fields in every event of ``key`` with their JSON types, and
        how many events hold each field."""
        every, kinds, present = self._aggregate(key)
        return {k: kinds[k] for k in every}, present

    def _aggregate(self, key: tuple[str, str]) -> tuple[set[str], dict[str, set[str]], Counter[str]]:
        folded = self.folded.get(key)
        every: set[str] | None = None if folded is None else set(folded[0])
        kinds: dict[str, set[str]] = defaultdict(set, {} if folded is None else {k: set(v) for k, v in folded[1].items()})
        present: Counter[str] = Counter() if folded is None else Counter(folded[2])
        shapes = self.shapes.get(key, {})
        for shape, n in shapes.items():
            names = {k for k, _ in shape}
            every = names if every is None else every & names
            for k, kind in shape:
                kinds[k].add(_JSON_OF[kind])
            present.update(dict.fromkeys(names, n))
        return every or set(), kinds, present

    def to_toml(self, stream: str | None = None) -> str:
        """The rules file: every line holds for what was read, commented with counts."""
        actors = Counter(self.type_of.values())
        out = [f"# Rules inferred by aether-audit rules infer{f' from stream {stream}' if stream else ''}: "
               f"{self.events:,} events of {len(self.last):,} actors.",
               "# The history read satisfies every line; tighten them (and add [[actor.TYPE.deadline]]) to make them rules.",
               ""]
        for atype in sorted(self.types):
            if not atype:
                continue
            counts, follows = self.types[atype], self.follows[atype]
            ended = Counter(etype for actor, etype in self.last.items() if self.type_of.get(actor) == atype)
            followed = {a for a, _ in follows}
            out += [f"[actor.{_key(atype)}]", f"# {actors[atype]:,} actors, {sum(counts.values()):,} events", "types = ["]
            out += [f"  {_string(t)},  # {counts[t]:,} events" for t in sorted(counts)]
            out += ["]", "initial = ["]
            out += [f"  {_string(t)},  # first of {n:,} actors" for t, n in sorted(self.initial[atype].items())]
            out += ["]", "terminal = ["]
            out += [f"  {_string(t)},  # never followed; last of {ended[t]:,} actors" for t in sorted(counts) if t not in followed]
            out += ["]", "", f"[actor.{_key(atype)}.transitions]", "# TYPE = [types seen directly after it]  # times each"]
            for source in sorted(followed):
                nexts = sorted((b, n) for (a, b), n in follows.items() if a == source)
                out.append(f"{_key(source)} = [{', '.join(_string(b) for b, _ in nexts)}]  "
                           f"# {', '.join(f'{n:,}' for _, n in nexts)}")
            for etype in sorted(counts):
                fields, present = self._fields((atype, etype))
                if not fields:
                    continue
                total = counts[etype]
                out += ["", f"[actor.{_key(atype)}.contract.{_key(etype)}]",
                        f"# fields present in all {total:,} events, with the JSON types seen"]
                for name in sorted(fields):
                    # JSON has one number type: whole numbers seen so far
                    # propose "number" (tighten to "integer" by hand), so a
                    # first 100.5 after 100.0 written as 100 breaks nothing.
                    kinds = sorted({"number" if kind == "integer" else kind for kind in fields[name]})
                    kind = _string(kinds[0]) if len(kinds) == 1 else "[" + ", ".join(map(_string, kinds)) + "]"
                    out.append(f"{_key(name)} = {{ type = {kind} }}")
                sometimes = sorted((n, c) for n, c in present.items() if n not in fields)
                if sometimes:
                    out.append("# also seen, not in every event: " + ", ".join(f"{n} ({c:,} of {total:,})" for n, c in sometimes))
            out.append("")
        text = "\n".join(out)
        if not self.types:
            text += "# no actor history was read: nothing to infer\n"
        return text


def _written(text: str, out: str | Path | None) -> str:
    if out is not None:
        if "[actor." in text:
            parse_rules(text, str(out))  # what is written must load: a fault here is ours, before any write
        write_atomic(out, text.encode("utf-8"))
    return text


def infer_rules(source: StreamFrames | pd.DataFrame, *, out: str | Path | None = None, stream: str | None = None) -> str:
    """A rules file the history in ``source`` (frames, or an events frame)
    satisfies; written atomically to ``out`` when given. Returns its text."""
    inference = Inference()
    inference.add(_events(source))
    if stream is None and isinstance(source, StreamFrames) and source.state is not None:
        stream = source.state.name
    return _written(inference.to_toml(stream), out)


async def infer_stream(reader: Reader, *, out: str | Path | None = None, progress: bool | None = None,
                       batch_size: int = 50_000) -> str:
    """``infer_rules`` over the stream behind ``reader``, read batch by batch."""
    inference = Inference()
    state = await reader.stream_state()
    if state.last_seq >= max(state.first_seq, 1):
        async for batch in reader.scan(start_seq=max(state.first_seq, 1), end_seq=state.last_seq, progress=progress,
                                       batch_size=batch_size):
            inference.add(to_pandas(batch.events.select(_COLUMNS)))
    return _written(inference.to_toml(reader.stream_name), out)


# --- the drawn lifecycle's data -----------------------------------------------------------------


def process_map(source: StreamFrames | pd.DataFrame) -> pd.DataFrame:
    """The directly-follows graph per actor type: ``actor_type, source,
    target, count, median_seconds`` (event time between the two steps);
    ``(start)`` and ``(end)`` mark where histories begin and end."""
    rows = history_rows(_events(source))
    if rows.empty:
        return pd.DataFrame({"actor_type": [], "source": [], "target": [], "count": [], "median_seconds": []})
    frame = pd.DataFrame({"actor_type": rows["actor_type"].astype(object).to_numpy(),
                          "actor_id": rows["actor_id"].astype(object).to_numpy(),
                          "event_type": rows["event_type"].astype(object).to_numpy(),
                          "ts": rows["timestamp"].reset_index(drop=True)})
    group = frame.groupby("actor_id", sort=False)
    frame["source"] = group["event_type"].shift(1).fillna("(start)")
    frame["seconds"] = (frame["ts"] - group["ts"].shift(1)).dt.total_seconds()
    ends = group.tail(1).assign(source=lambda f: f["event_type"], event_type="(end)", seconds=np.nan)
    edges = pd.concat([frame, ends], ignore_index=True).rename(columns={"event_type": "target"})
    out = edges.groupby(["actor_type", "source", "target"], sort=True).agg(
        count=("actor_id", "size"), median_seconds=("seconds", "median")).reset_index()
    return out.sort_values(["actor_type", "count"], ascending=[True, False], kind="stable").reset_index(drop=True)


def variants(source: StreamFrames | pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The most common complete paths per actor type: ``actor_type,
    variant`` (types joined by `` > ``), ``actors``, ``share`` of the type's actors."""
    rows = history_rows(_events(source))
    paths: dict[str, list[str]] = {}
    atype: dict[str, str] = {}
    for t, actor, etype in zip(rows["actor_type"].astype(object), rows["actor_id"].astype(object),
                               rows["event_type"].astype(object)):
        paths.setdefault(actor, []).append(etype)
        atype[actor] = t
    counts = Counter((atype[a], " > ".join(p)) for a, p in paths.items())
    frame = pd.DataFrame([(t, v, n) for (t, v), n in counts.items()], columns=["actor_type", "variant", "actors"])
    if frame.empty:
        return frame.assign(share=pd.Series(dtype=float))
    frame["share"] = frame["actors"] / frame.groupby("actor_type")["actors"].transform("sum")
    frame = frame.sort_values(["actor_type", "actors", "variant"], ascending=[True, False, True], kind="stable")
    return frame.groupby("actor_type", sort=True).head(top).reset_index(drop=True)


def event_log(source: StreamFrames | pd.DataFrame) -> pd.DataFrame:
    """The history as an event log in the column convention process-mining
    tools read (pm4py's ``case:concept:name``, ``concept:name``,
    ``time:timestamp``), plus ``case:actor_type`` and ``stream_seq``;
    ``pm4py.discover_dfg(event_log(frames))`` works on it as it is."""
    rows = history_rows(_events(source))
    return pd.DataFrame({
        "case:concept:name": rows["actor_id"].astype(object).to_numpy(),
        "concept:name": rows["event_type"].astype(object).to_numpy(),
        "time:timestamp": rows["timestamp"].reset_index(drop=True),
        "case:actor_type": rows["actor_type"].astype(object).to_numpy(),
        "stream_seq": rows["stream_seq"].to_numpy(),
    })


def rule_counts(findings: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """Each rule of ``rules`` with its findings: ``rule, code, findings,
    actors`` (rules broken first, then in file order). The rule is the
    ``[name]`` that opens a rule finding's message.

    Example:
        >>> rule_counts(report.findings, report.options.rules)  # doctest: +SKIP
    """
    names = rules.rule_names()
    code_of = dict(names)
    ruled = findings[findings["code"].isin(set(code_of.values()))] if len(findings) else findings
    named = ruled["message"].astype(str).str.extract(r"^\[([^\]]+)\]", expand=False) if len(ruled) else pd.Series(dtype=object)
    counts = named.value_counts()
    actors = ruled.assign(rule=named).groupby("rule")["actor_id"].nunique() if len(ruled) else pd.Series(dtype="int64")
    frame = pd.DataFrame({"rule": [n for n, _ in names], "code": [c for _, c in names]})
    frame["findings"] = frame["rule"].map(counts).fillna(0).astype("int64")
    frame["actors"] = frame["rule"].map(actors).fillna(0).astype("int64")
    order = np.argsort(-(frame["findings"].to_numpy() > 0).astype(int), kind="stable")
    return frame.iloc[order].reset_index(drop=True)
