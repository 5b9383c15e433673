"""StreamScanner against a real nats-server: completeness, bounds, filters, auth, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import nats
import nkeys
import pytest

from aether_audit.nats.connection import ConnectOptions
from aether_audit.model.errors import AuthenticationFailed, ConnectionFailed, PermissionDenied, StreamNotFound
from aether_audit.nats.scan import RawBatch, StreamScanner, _ack_fields
from aether_audit.nats.server import NatsServer

AUTH_CONFIG = """
authorization {
  users = [
    {user: alice, password: "s3cret-pw"}
    {user: reader, password: "r34d", permissions: {publish: {deny: ["$JS.API.>"]}}}
  ]
}
"""


def event(stream: str, actor: str, version: int) -> tuple[str, bytes, dict[str, str]]:
    """One event in the aether layout: subject, JSON payload, Nats-Msg-Id header."""
    payload = {"id": f"{actor}-v{version}", "eventType": "Touched", "actorId": actor,
               "version": version, "data": {"n": version}, "timestamp": "2024-01-01T00:00:00Z"}
    subject = f"{stream}.events.{actor.split('-')[0]}.{actor}"
    return subject, json.dumps(payload).encode(), {"Nats-Msg-Id": payload["id"]}


def snapshot(stream: str, actor: str, version: int) -> tuple[str, bytes, None]:
    payload = {"actorId": actor, "version": version, "state": {}, "timestamp": "2024-01-01T00:00:00Z"}
    return f"{stream}.snapshots.{actor.split('-')[0]}.{actor}", json.dumps(payload).encode(), None


def layout(stream: str, events: int, actors: int = 5) -> list[tuple[str, bytes, dict[str, str] | None]]:
    """Events round-robin over actors, with a snapshot after every 7th event."""
    out: list[tuple[str, bytes, dict[str, str] | None]] = []
    for n in range(events):
        actor = f"order-{n % actors}"
        out.append(event(stream, actor, n // actors + 1))
        if n % 7 == 6:
            out.append(snapshot(stream, actor, n // actors + 1))
    return out


async def create_and_publish(url: str, stream: str, messages: Iterable[tuple[str, bytes, dict[str, str] | None]],
                             **connect: object) -> list[int]:
    """Create the stream as the aether store does and publish; returns the stream sequences."""
    nc = await nats.connect(url, **connect)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
        seqs: list[int] = []
        messages = list(messages)
        for at in range(0, len(messages), 1000):  # pipelined: 1000 publishes in flight
            acks = await asyncio.gather(*(js.publish(s, p, headers=h) for s, p, h in messages[at:at + 1000]))
            seqs.extend(ack.seq for ack in acks)
        return seqs
    finally:
        await nc.close()


async def collect(scanner: StreamScanner, stream: str, **kwargs: object) -> tuple[RawBatch, list[int]]:
    """Every batch of one scan, concatenated; also the batch sizes."""
    whole, sizes = RawBatch(), []
    async for batch in scanner.scan(stream, **kwargs):  # type: ignore[arg-type]
        sizes.append(len(batch))
        whole.seqs += batch.seqs
        whole.stored_ns += batch.stored_ns
        whole.subjects += batch.subjects
        whole.payloads += batch.payloads
    return whole, sizes


def scan_all(url: str, stream: str, options: ConnectOptions | None = None, **kwargs: object) -> RawBatch:
    async def go() -> RawBatch:
        scanner = StreamScanner(options or ConnectOptions(servers=(url,)))
        try:
            return (await collect(scanner, stream, **kwargs))[0]
        finally:
            await scanner.close()
    return asyncio.run(go())


def test_whole_stream_equals_what_was_published(nats_url: str, stream_name: str) -> None:
    messages = layout(stream_name, 2_500)
    seqs = asyncio.run(create_and_publish(nats_url, stream_name, messages))

    async def go() -> tuple[RawBatch, list[int]]:
        scanner = StreamScanner(ConnectOptions(servers=(nats_url,)))
        try:
            return await collect(scanner, stream_name, batch_size=1_000)
        finally:
            await scanner.close()

    got, sizes = asyncio.run(go())
    assert got.seqs == seqs == list(range(1, len(messages) + 1))
    assert got.subjects == [s for s, _, _ in messages]
    assert got.payloads == [p for _, p, _ in messages]  # header blocks stripped
    assert all(size <= 1_000 for size in sizes) and sizes[0] == 1_000
    now = time.time_ns()
    assert all(abs(now - ns) < 120e9 for ns in got.stored_ns)
    assert got.stored_ns == sorted(got.stored_ns)


def test_sequence_bounds_and_exact_subject_filter(nats_url: str, stream_name: str) -> None:
    messages = layout(stream_name, 300)
    asyncio.run(create_and_publish(nats_url, stream_name, messages))
    assert scan_all(nats_url, stream_name, start_seq=10, end_seq=20).seqs == list(range(10, 21))
    assert scan_all(nats_url, stream_name, start_seq=300).seqs == list(range(300, len(messages) + 1))
    assert scan_all(nats_url, stream_name, end_seq=1).seqs == [1]
    assert scan_all(nats_url, stream_name, start_seq=len(messages) + 1).seqs == []
    assert scan_all(nats_url, stream_name, end_seq=10**9).seqs == list(range(1, len(messages) + 1))

    subject = f"{stream_name}.events.order.order-3"
    wanted = [seq for seq, (s, _, _) in enumerate(messages, 1) if s == subject]
    got = scan_all(nats_url, stream_name, filter_subject=subject)
    assert got.seqs == wanted and set(got.subjects) == {subject}
    # A bound that is not on a matching message still ends the scan.
    got = scan_all(nats_url, stream_name, filter_subject=subject, start_seq=wanted[2] + 1, end_seq=wanted[5] - 1)
    assert got.seqs == wanted[3:5]


def test_empty_stream_returns(nats_url: str, stream_name: str) -> None:
    asyncio.run(create_and_publish(nats_url, stream_name, []))
    assert scan_all(nats_url, stream_name).seqs == []


def test_deleted_message_is_skipped_and_headers_and_empty_payloads(nats_url: str, stream_name: str) -> None:
    messages = [
        (f"{stream_name}.events.a.a-1", b'{"n":1}', {"Nats-Msg-Id": "e1", "X-Trace": "abc def"}),
        (f"{stream_name}.events.a.a-1", b"", {"Nats-Msg-Id": "e2"}),  # header, no payload
        (f"{stream_name}.snapshots.a.a-1", b"", None),  # no header, no payload
        (f"{stream_name}.events.a.a-1", b"x" * 70_000, {"Nats-Msg-Id": "e4"}),  # spans socket reads
        (f"{stream_name}.events.a.a-1", b'{"n":5}', None),
    ]
    asyncio.run(create_and_publish(nats_url, stream_name, messages))

    async def delete(seq: int) -> None:
        nc = await nats.connect(nats_url)
        await nc.jetstream().delete_msg(stream_name, seq)
        await nc.close()

    asyncio.run(delete(3))
    got = scan_all(nats_url, stream_name, batch_size=2)
    assert got.seqs == [1, 2, 4, 5]
    assert got.payloads == [b'{"n":1}', b"", b"x" * 70_000, b'{"n":5}']
    asyncio.run(delete(5))  # the last one: the scan must still end
    assert scan_all(nats_url, stream_name).seqs == [1, 2, 4]


def test_stream_not_found(nats_url: str) -> None:
    async def go() -> None:
        scanner = StreamScanner(ConnectOptions(servers=(nats_url,)))
        try:
            with pytest.raises(StreamNotFound):
                await scanner.stream_info("no_such_stream")
            with pytest.raises(StreamNotFound):
                async for _ in scanner.scan("no_such_stream"):
                    pass
        finally:
            await scanner.close()
    asyncio.run(go())


def test_one_scanner_many_scans_even_after_an_abandoned_one(nats_url: str, stream_name: str) -> None:
    messages = layout(stream_name, 12_000, actors=50)
    asyncio.run(create_and_publish(nats_url, stream_name, messages))

    async def go() -> None:
        scanner = StreamScanner(ConnectOptions(servers=(nats_url,)))
        try:
            async with contextlib.aclosing(scanner.scan(stream_name, batch_size=500)) as scan:
                async for _ in scan:
                    break  # leave deliveries in flight on the connection
            got, _ = await collect(scanner, stream_name, batch_size=4_000)
            assert got.seqs == list(range(1, len(messages) + 1))
            info = await scanner.stream_info(stream_name)
            assert info["state"]["consumer_count"] == 0  # ephemeral consumers are deleted
        finally:
            await scanner.close()
    asyncio.run(go())


def test_end_is_the_last_sequence_when_the_scan_starts(nats_url: str, stream_name: str) -> None:
    messages = layout(stream_name, 3_000)
    asyncio.run(create_and_publish(nats_url, stream_name, messages))

    async def go() -> list[int]:
        scanner = StreamScanner(ConnectOptions(servers=(nats_url,)))
        seqs: list[int] = []
        try:
            async for batch in scanner.scan(stream_name, batch_size=200):
                if not seqs:  # appended while the scan runs: not part of the cut
                    await create_and_publish(nats_url, stream_name, layout(stream_name, 50))
                seqs += batch.seqs
        finally:
            await scanner.close()
        return seqs

    assert asyncio.run(go()) == list(range(1, len(messages) + 1))


def test_ack_subject_formats() -> None:
    assert _ack_fields(b"$JS.ACK.ev.C1.1.42.40.1700000000000000001.7") == (b"$JS.ACK.ev.C1.", 42, 1700000000000000001, 7)
    v2 = b"$JS.ACK.hub.ACCHASH.ev.C1.1.42.40.1700000000000000001.0"
    assert _ack_fields(v2) == (b"$JS.ACK.hub.ACCHASH.ev.C1.", 42, 1700000000000000001, 0)
    assert _ack_fields(v2 + b".rAnd0m")[1:] == (42, 1700000000000000001, 0)
    assert _ack_fields(b"$JS.FC.ev.x.y") is None


def test_user_password_auth(tmp_path: Path, stream_name: str) -> None:
    with NatsServer(tmp_path, config_text=AUTH_CONFIG) as server:
        url = server.url
        messages = layout(stream_name, 20)
        asyncio.run(create_and_publish(url, stream_name, messages, user="alice", password="s3cret-pw"))
        good = ConnectOptions(servers=(url,), user="alice", password="s3cret-pw")
        assert len(scan_all(url, stream_name, good).seqs) == len(messages)
        in_url = url.replace("nats://", "nats://alice:s3cret-pw@")
        assert len(scan_all(in_url, stream_name).seqs) == len(messages)

        for bad in (ConnectOptions(servers=(url,), user="alice", password="wrong-pw"),
                    ConnectOptions(servers=(url.replace("nats://", "nats://alice:wrong-pw@"),))):
            with pytest.raises(AuthenticationFailed) as caught:
                scan_all(url, stream_name, bad)
            assert "wrong-pw" not in str(caught.value)

        reader = ConnectOptions(servers=(url,), user="reader", password="r34d")
        with pytest.raises(PermissionDenied, match=r"\$JS\.API\.STREAM\.INFO"):
            scan_all(url, stream_name, reader)


def test_nkey_and_token_auth(tmp_path: Path, stream_name: str) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    (tmp_path / "user.nk").write_bytes(seed + b"\n")
    with NatsServer(tmp_path / "nk", config_text=f"authorization {{ users = [{{nkey: {public}}}] }}") as server:
        asyncio.run(create_and_publish(server.url, stream_name, layout(stream_name, 3),
                                       nkeys_seed=str(tmp_path / "user.nk")))
        options = ConnectOptions(servers=(server.url,), nkey=str(tmp_path / "user.nk"))
        assert len(scan_all(server.url, stream_name, options).seqs) == 3
        with pytest.raises(AuthenticationFailed):
            scan_all(server.url, stream_name)
    with NatsServer(tmp_path / "tok", config_text="authorization { token: t0ken }") as server:
        asyncio.run(create_and_publish(server.url, stream_name, layout(stream_name, 3), token="t0ken"))
        assert len(scan_all(server.url.replace("nats://", "nats://t0ken@"), stream_name).seqs) == 3


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls(tmp_path: Path, stream_name: str) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tls = f'tls {{ cert_file: "{cert}", key_file: "{key}" }}'
    with NatsServer(tmp_path / "srv", config_text=tls) as server:
        options = ConnectOptions(servers=(server.url,), tls_ca=str(cert))
        asyncio.run(create_and_publish(server.url, stream_name, layout(stream_name, 3), tls=options.ssl_context()))
        assert len(scan_all(server.url, stream_name, options).seqs) == 3


def test_server_restart_mid_scan_resumes_without_gaps_or_doubles(tmp_path: Path, stream_name: str) -> None:
    server = NatsServer(tmp_path / "store").start()
    try:
        messages = layout(stream_name, 30_000, actors=100)
        asyncio.run(create_and_publish(server.url, stream_name, messages))
        options = ConnectOptions(servers=(server.url,), reconnect_seconds=20)

        async def go() -> list[int]:
            nonlocal server
            scanner = StreamScanner(options)
            handshakes = []
            real_handshake = scanner._handshake

            async def counting_handshake(url: str) -> None:
                handshakes.append(url)
                await real_handshake(url)

            scanner._handshake = counting_handshake  # type: ignore[method-assign]
            seqs: list[int] = []
            try:
                async for batch in scanner.scan(stream_name, batch_size=1_000):
                    if not seqs:  # far more than the ~10k deliveries in flight remain
                        port = server.port
                        server.stop()
                        server = NatsServer(tmp_path / "store", port=port).start()
                    seqs += batch.seqs
            finally:
                await scanner.close()
            assert len(handshakes) >= 2  # it did reconnect
            return seqs

        got = asyncio.run(go())
        assert got == list(range(1, len(messages) + 1))
    finally:
        server.cleanup()


def test_gives_up_after_reconnect_window_without_leaking_the_password(tmp_path: Path, stream_name: str) -> None:
    server = NatsServer(tmp_path, config_text=AUTH_CONFIG).start()
    try:
        url = server.url.replace("nats://", "nats://alice:s3cret-pw@")
        asyncio.run(create_and_publish(url, stream_name, layout(stream_name, 15_000)))
        options = ConnectOptions(servers=(url,), reconnect_seconds=1.0, connect_timeout=1.0)

        async def go() -> None:
            scanner = StreamScanner(options)
            try:
                async for _ in scanner.scan(stream_name, batch_size=500):
                    server.stop()
            finally:
                await scanner.close()

        with pytest.raises(ConnectionFailed) as caught:
            asyncio.run(go())
        message = str(caught.value)
        assert "s3cret-pw" not in message and "alice:***@127.0.0.1" in message
        assert message.startswith("lost the connection to")
        assert "\n" not in message
    finally:
        server.cleanup()


def test_connect_failure_names_the_redacted_server() -> None:
    options = ConnectOptions(servers=("nats://bob:hunter2@127.0.0.1:1",), connect_timeout=1.0)
    with pytest.raises(ConnectionFailed) as caught:
        scan_all("", "x", options)
    assert "hunter2" not in str(caught.value) and "bob:***@127.0.0.1:1" in str(caught.value)


def test_every_request_takes_the_one_api_prefix(tmp_path: Path, stream_name: str) -> None:
    """A JetStream domain's API (``$JS.<domain>.API``) given once reaches every
    request of a scan, a look-up and the gets by sequence; a wrong prefix is
    heard by nobody: the server says "no responders", at once."""
    server = NatsServer(tmp_path / "domain", config_text="jetstream { domain: hub }").start()
    try:
        messages = layout(stream_name, 30)
        asyncio.run(create_and_publish(server.url, stream_name, messages))

        async def go(prefix: str) -> tuple[RawBatch, dict, RawBatch]:
            scanner = StreamScanner(ConnectOptions(servers=(server.url,), connect_timeout=1), api_prefix=prefix)
            try:
                whole, _ = await collect(scanner, stream_name)
                info = await scanner.stream_info(stream_name)
                got = await scanner.get_messages(stream_name, [1, 2, 3])
                return whole, info, got
            finally:
                await scanner.close()

        whole, info, got = asyncio.run(go("$JS.hub.API"))
        assert whole.seqs == list(range(1, len(messages) + 1))
        assert info["state"]["last_seq"] == len(messages) and got.seqs == [1, 2, 3]
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="JetStream is not enabled or not available"):
            asyncio.run(go("$JS.elsewhere.API"))
        assert time.monotonic() - started < 1
    finally:
        server.kill()
