"""The subject index and its cache file: used across sessions, never trusted blindly."""

from __future__ import annotations

import pytest

import aether_audit.read.reader as reader_module
from aether_audit import Event, connect
from aether_audit.read.index import SubjectIndex, cache_path, load_index, save_index
from aether_audit.nats.scan import RawBatch


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AETHER_AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(reader_module, "CACHE_MIN", 1)  # every stream pays here
    return tmp_path / "cache"


def fill(store, actors: int = 5, versions: int = 4) -> None:
    for version in range(1, versions + 1):
        for actor in range(actors):
            store.save_event(Event.new(f"acct-{actor}", "Happened", version))


def the_cache(store) -> tuple:
    state = store.stream_state()
    return cache_path(store.server, store.stream_name, state.created), state


def test_save_and_load_round_trip(tmp_path):
    index = SubjectIndex(created=None)
    index.add(RawBatch(seqs=[1, 2, 3, 4], stored_ns=[0] * 4, subjects=["s.a", "s.b", "s.a", "s.é"], payloads=[b""] * 4))
    save_index(index, tmp_path / "i.idx")
    loaded = load_index(tmp_path / "i.idx", None)
    assert loaded is not None and loaded.last_seq == 4
    assert {k: list(v) for k, v in loaded.seqs.items()} == {"s.a": [1, 3], "s.b": [2], "s.é": [4]}


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_cache_file_is_not_used(tmp_path, damage):
    index = SubjectIndex(created=None)
    index.add(RawBatch(seqs=[1, 2], stored_ns=[0, 0], subjects=["s.a", "s.b"], payloads=[b"", b""]))
    path = tmp_path / "i.idx"
    save_index(index, path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[20] ^= 0xFF
    else:
        data = bytearray(b"not an index at all")
    path.write_bytes(bytes(data))
    assert load_index(path, None) is None


def test_a_new_session_uses_the_cached_index(nats_url, stream_name, cache_dir):
    with connect(nats_url, stream=stream_name) as store:
        fill(store)
        store.index_subjects()
        path, state = the_cache(store)
        assert path.is_file()
    with connect(nats_url, stream=stream_name) as store:
        # The cache is read and checked instead of a pass over the stream.
        passes = []
        real = store.core._extend_index

        async def counting(index, last_seq, **options):
            passes.append(last_seq - index.last_seq)
            await real(index, last_seq, **options)

        store.core._extend_index = counting
        store.index_subjects()
        assert passes == [0]
        assert store.history("acct-3")["version"].tolist() == [1, 2, 3, 4]


def test_a_cache_that_disagrees_with_the_server_is_dropped(nats_url, stream_name, cache_dir):
    with connect(nats_url, stream=stream_name) as store:
        fill(store)
        index = store.index_subjects()
        path, _ = the_cache(store)
        # Swap two actors' sequences: checksum fine, entries wrong.
        a, b = sorted(s for s in index.seqs if s.endswith(("acct-0", "acct-1")))
        index.seqs[a], index.seqs[b] = index.seqs[b], index.seqs[a]
        save_index(index, path)
    with connect(nats_url, stream=stream_name) as store:
        assert store.history("acct-0")["actor_id"].tolist() == ["acct-0"] * 4  # first read: no index yet
        store.index_subjects()
        assert store.history("acct-0")["actor_id"].tolist() == ["acct-0"] * 4
        assert store.history("acct-1")["actor_id"].tolist() == ["acct-1"] * 4


def test_a_recreated_stream_never_reads_the_old_generations_cache(nats_url, stream_name, cache_dir):
    from aether_audit.store.sync import run_sync

    with connect(nats_url, stream=stream_name) as store:
        fill(store)
        store.index_subjects()
        old_path, _ = the_cache(store)
        run_sync(store.core._js.delete_stream(store.stream_name))
        store.core._stream_exists = False
        fill(store, actors=2, versions=2)
    with connect(nats_url, stream=stream_name) as store:
        store.index_subjects()
        assert the_cache(store)[0] != old_path
        assert store.history("acct-1")["version"].tolist() == [1, 2]
        assert store.history("acct-4").empty
