"""The disk-spilling key store: the same answers in memory and spilled."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from aether_audit._keys import KeyStore, partition_of


def _fill(store: KeyStore, keys: list[str], start: int = 0) -> None:
    for i in range(0, len(keys), 7):
        chunk = keys[i:i + 7]
        ords = np.arange(start + i, start + i + len(chunk))
        store.add(pa.array(chunk), ords * 10, ords, {"actor_id": pa.array(chunk)})


@pytest.mark.parametrize("spill_rows", [3, 50, 10_000])
def test_repeats_are_exact_whether_spilled_or_not(tmp_path, spill_rows):
    rng = random.Random(spill_rows)
    keys = [f"id-{rng.randrange(120)}" for _ in range(400)]
    store = KeyStore(tmp_path, extra=("actor_id",), spill_rows=spill_rows)
    _fill(store, keys[:250])
    first = store.repeats(0)
    store.flush()
    # A later run: only rows from ord 250 on, against everything before.
    reopened = KeyStore(tmp_path, store.segments, extra=("actor_id",), spill_rows=spill_rows)
    _fill(reopened, keys[250:], start=250)
    second = reopened.repeats(250)
    seen: dict[str, int] = {}
    expected = []
    for ord_, key in enumerate(keys):
        if key in seen:
            expected.append((ord_, seen[key] * 10))
        else:
            seen[key] = ord_
    got = [(int(o), int(f)) for o, f in zip(first["ord"], first["first_seq"])]
    got += [(int(o), int(f)) for o, f in zip(second["ord"], second["first_seq"])]
    assert got == expected
    reopened.prune()
    assert {p.name for p in tmp_path.glob("keys-*.arrow")} == {s["file"] for s in reopened.segments}


def test_a_missing_segment_is_an_error(tmp_path):
    store = KeyStore(tmp_path, spill_rows=2)
    _fill(store, ["a", "b", "c"])
    store.flush()
    for path in tmp_path.glob("keys-*.arrow"):
        path.unlink()
    with pytest.raises(FileNotFoundError):
        KeyStore(tmp_path, store.segments)


def test_partitions_are_stable_across_arrays():
    keys = pa.array([f"event-{i}" for i in range(1000)])
    assert (partition_of(keys.slice(500, 10)) == partition_of(keys)[500:510]).all()
    assert partition_of(pa.array(["event-3"]))[0] == partition_of(keys)[3]
