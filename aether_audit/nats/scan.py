"""The fast whole-stream reader: the NATS client protocol, spoken directly.

nats-py builds a ``Msg`` object, runs a callback and awaits for every message,
which caps a whole-stream read near 80k msgs/s before any JSON is decoded.
``StreamScanner`` keeps one asyncio TCP connection, reads the socket in large
chunks and takes the ``MSG``/``HMSG`` deliveries out of them in one tight
loop (``_deliveries``, or its C twin): no per-message awaits and no
per-message objects beyond the values appended to the parallel lists of a
``RawBatch``.

Messages come from an ephemeral, memory-stored, ack-less JetStream consumer,
so auditing never writes to the stream. The end of the data is learnt from
the stream's ``last_seq`` taken when the scan starts and from the pending
count that every delivery carries in its ``$JS.ACK`` reply subject, never
from a timeout.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import datetime
import functools
import itertools
import json
import re
import secrets
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .connection import (
    JS_ERR_NO_MESSAGE,
    ConnectOptions,
    NoAnswer,
    ReconnectWindow,
    api_error,
    leaderless,
    server_error,
)
from ..model.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    JetStreamAPIError,
)
from ..model.speedups import cfast, large_read

__all__ = ["JS_API", "Gate", "RawBatch", "StreamScanner"]

# The JetStream API's subject prefix. A JetStream domain ``D`` is
# ``$JS.D.API``; an account import may use any prefix: ``StreamScanner``
# takes another one as ``api_prefix`` and builds every subject from it.
JS_API = "$JS.API"

# Pull, not push: on 200k ~360-byte events (2 cores, nats-server 2.15.1) pull
# with two 5,000-message requests outstanding read ~480k msgs/s and push with
# flow control ~450k; pull also bounds what is in flight (~4 MB).
_PULL_BATCH = 5_000
_PULL_EXPIRES_NS = 30_000_000_000  # reached only when delivery stalls
_INACTIVE_NS = 120_000_000_000  # the server removes an abandoned consumer after this
_READ_SIZE = 1 << 20  # bytes per socket read, ~2,000 typical events
# A pull asks the server for an idle heartbeat every 2 s, so while a scan
# waits on deliveries, silence for the request timeout plus two heartbeats
# means the server stopped answering (frozen, or the link is gone): without
# it, a frozen server held a scan for 150 s before the reconnect window.
_HEARTBEAT_NS = 2_000_000_000
_SILENCE_BEYOND_TIMEOUT = 2 * _HEARTBEAT_NS / 1e9  # = _connection.SCAN_SILENCE_MARGIN
_MAX_FRUITLESS_RESTARTS = 3
# An unanswered read-only request is sent again after this long, until the
# timeout: nats-server drops requests on a stream's non-leaders, so one sent
# during a leader election (silence for ~4-9 s, measured on 2.15.1) is never
# answered, while the same request sent after the election is. Asking again
# never extends the wait: silence for the whole timeout is final.
_ASK_AGAIN = 1.0


@dataclass
class RawBatch:
    """Consecutive deliveries of one scan, as plain parallel lists."""

    seqs: list[int] = field(default_factory=list)  # stream sequence
    stored_ns: list[int] = field(default_factory=list)  # JetStream stored time, ns since epoch
    subjects: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)  # without the header block
    # The header blocks worth keeping (``keeps_header``), by stream
    # sequence: a header-only message's (an empty payload: a TTL delete
    # marker is one, ``Nats-Marker-Reason``) and an atomic batch member's
    # (``Nats-Batch-Id``...). Both are rare enough to keep their headers for
    # the one place a message is judged (``model.frames.decode_messages``).
    headers: dict[int, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seqs)


class Gate(Protocol):
    """When a scan that yields to other work may ask the server for more
    (``StreamScanner.scan``'s ``gate``)."""

    def may_pull(self) -> bool: ...

    async def wait(self) -> None: ...


class _Disconnected(Exception):
    """The socket broke or the server hung up; a scan resumes after it."""


class _Silent(_Disconnected):
    """A scan heard nothing, not even a heartbeat, for ``connect_timeout`` + 4 s.

    Its consumer's node is gone (a cluster node died: its consumer with it)
    or the server froze. The scan resumes on another server of the list,
    never on the one that went silent: with one server it fails at once.
    """


class _Restart(Exception):
    """The consumer vanished or stalled; a scan resumes with a new one."""


def _parse_frame(buf: bytes, pos: int) -> tuple[int, bytes, list[bytes], bytes, bytes] | None:
    """The frame at ``pos`` as (next_pos, op, args, header, payload); None if incomplete.

    The general, slow parser: handshake, API replies, status messages and any
    delivery the fast regex of ``_consume`` does not match.
    """
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return None
    op, _, rest = buf[pos:nl].partition(b" ")
    op = op.upper()
    if op not in (b"MSG", b"HMSG"):
        return nl + 2, op, [rest], b"", b""
    # subject sid [reply] [header size] total size. Split on the space the
    # server writes only: a subject may hold \x0b or \x0c, which split() eats.
    args = [arg for arg in rest.split(b" ") if arg]
    hlen = int(args[-2]) if op == b"HMSG" else 0
    stop = nl + 2 + int(args[-1])
    if stop + 2 > len(buf):
        return None
    return stop + 2, op, args, buf[nl + 2 : nl + 2 + hlen], buf[nl + 2 + hlen : stop]


def _ack_fields(reply: bytes) -> tuple[bytes, int, int, int] | None:
    """(prefix up to the delivery count, stream seq, stored ns, pending) of a ``$JS.ACK`` subject.

    v1: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`` (9 tokens);
    v2 puts ``<domain>.<account hash>`` after ``ACK`` and may end with a random token.
    """
    tokens = reply.split(b".")
    if tokens[:2] != [b"$JS", b"ACK"] or len(tokens) not in (9, 11, 12):
        return None
    base = 2 if len(tokens) == 9 else 4  # index of <stream>
    prefix = b".".join(tokens[: base + 2]) + b"."
    return prefix, int(tokens[base + 3]), int(tokens[base + 5]), int(tokens[base + 6])


# What every atomic batch header's name starts with (``Nats-Batch-Id``,
# ``-Sequence``, ``-Commit``): nats-server 2.12+ stores them as published
# on each message of a committed batch (measured on 2.12.8, 2.14.6 and
# 2.15.1); it matches them case-sensitively, and so does this.
BATCH_HEADER = b"Nats-Batch-"


@functools.lru_cache(maxsize=64)
def _fast_regex(sid: bytes, prefix: bytes) -> re.Pattern[bytes]:
    """Matches the control line of one consumer's deliveries.

    With the sid and the ack prefix as literals one ``match`` both checks and
    splits the line. Groups: subject, stream seq, stored ns, pending, header
    size (HMSG only), total size. Non-ASCII subjects go to the slow parser.
    """
    return re.compile(
        rb"H?MSG ([!-~]+) " + re.escape(sid) + rb" " + re.escape(prefix)
        + rb"\d+\.(\d+)\.\d+\.(\d+)\.(\d+)(?:\.[^ ]*)? (?:(\d+) )?(\d+)\r\n"
    )


def _deliveries(buf: bytes, pos: int, sid: bytes, prefix: bytes, limit: int, end_seq: int,
                seqs: list[int], stamps: list[int], subjects: list[str], payloads: list[bytes]) -> tuple[int, bool]:
    """Take up to ``limit`` deliveries of one consumer from ``buf`` at ``pos``.

    The contract of both implementations (this one and ``_cfast.deliveries``):
    a delivery is an ``MSG``/``HMSG`` frame on ``sid`` whose reply subject
    starts with ``prefix`` (its ``$JS.ACK`` up to the consumer name); each
    one taken appends its stream sequence, stored ns, subject and payload
    (without headers). Returns (the position after the last frame taken,
    done), done being true at the cut: a sequence beyond ``end_seq`` (not
    taken), ``end_seq`` itself or a pending count of 0. It stops, not done,
    at anything else (an incomplete frame, a status, another sid, a line it
    does not parse, a header block holding ``BATCH_HEADER``: an atomic batch
    member, whose header is kept): the caller's general parser takes that
    frame. The two may differ only in where they stop.
    """
    match, size_of_buf = _fast_regex(sid, prefix).match, len(buf)
    add_seq, add_stamp, add_subject, add_payload = seqs.append, stamps.append, subjects.append, payloads.append
    for _ in itertools.repeat(None, limit):
        if (m := match(buf, pos)) is None:
            break
        subject, seq, ns, pending, hlen, size = m.groups()
        start = m.end()
        stop = start + int(size)
        if stop + 2 > size_of_buf:
            break  # the payload is not all here yet
        if hlen and buf.find(BATCH_HEADER, start, min(start + int(hlen), stop)) >= 0:
            break  # an atomic batch member: the general parser keeps its header
        seq = int(seq)
        if seq > end_seq:
            return pos, True
        pos = stop + 2
        add_seq(seq)
        add_stamp(int(ns))
        add_subject(subject.decode())
        add_payload(buf[start + int(hlen) if hlen else start : stop])
        if seq == end_seq or pending == b"0":
            return pos, True
    return pos, False


_DELIVERIES = _deliveries if cfast is None else cfast.deliveries


def _rfc3339_ns(text: str) -> int:
    """The server's RFC 3339 time (nanoseconds, UTC) as ns since the epoch.

    Example:
        >>> _rfc3339_ns("1970-01-01T00:00:01.5Z")
        1500000000
    """
    whole, _, rest = text.rstrip("Z").partition(".")
    return _epoch_seconds(whole) * 1_000_000_000 + int((rest + "000000000")[:9])


@functools.lru_cache(maxsize=4096)
def _epoch_seconds(whole: str) -> int:
    # Messages of one history share few distinct seconds: parse each once.
    return int(datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp())


def keeps_header(header: bytes, payload: bytes) -> bool:
    """Whether a delivery's header block is kept (``RawBatch.headers``):
    a header-only message's, or one naming an atomic batch.

    Example:
        >>> keeps_header(b"NATS/1.0\\r\\nNats-Batch-Id: b1\\r\\n\\r\\n", b"{}"), keeps_header(b"NATS/1.0\\r\\n\\r\\n", b"{}")
        (True, False)
    """
    return bool(header) and (not payload or BATCH_HEADER in header)


def _add_message(batch: RawBatch, message: dict[str, Any]) -> None:
    """Append a ``STREAM.MSG.GET`` answer's message to ``batch``."""
    seq = int(message["seq"])
    batch.seqs.append(seq)
    batch.stored_ns.append(_rfc3339_ns(message["time"]))
    batch.subjects.append(message["subject"])
    # binascii directly: what base64.b64decode calls after checking its
    # argument's type (a third of its time on a 360-byte event).
    payload = binascii.a2b_base64(message.get("data") or "")
    batch.payloads.append(payload)
    if hdrs := message.get("hdrs"):
        header = binascii.a2b_base64(hdrs)
        if keeps_header(header, payload):
            batch.headers[seq] = header


@functools.lru_cache(maxsize=16)
def _reply_regex(inbox: bytes) -> re.Pattern[bytes]:
    """Matches the control line of a reply to one of this connection's
    requests (``MSG <inbox>.r.<token> 1 <size>``); groups: token, size."""
    return re.compile(rb"MSG " + re.escape(inbox) + rb"\.r\.(\d+) 1 (\d+)\r\n")


def _kept_headers(buf: bytes, start: int, stop: int, sid: bytes, headers: dict[int, bytes]) -> None:
    """The header blocks ``keeps_header`` keeps of the deliveries in
    ``buf[start:stop]`` (frames the fast path took and dropped the headers
    of), by sequence.

    Called only when that run held an empty payload: the fast path (and its
    C twin) stays as it is, and this slow parse touches only such runs. (An
    atomic batch member never gets here: the fast path declines it.)
    """
    pos = start
    while pos < stop:
        got = _parse_frame(buf, pos)
        if got is None:
            return
        pos, op, args, header, payload = got
        if op == b"HMSG" and keeps_header(header, payload) and args[1] == sid:
            ack = _ack_fields(args[2])
            if ack is not None:
                headers[ack[1]] = header


@dataclass
class _Cursor:
    """Where a scan stands; it outlives connections and consumers."""

    after: int  # last sequence handed out (start - 1 at first)
    end_seq: int  # the cut: last sequence to read
    batch: RawBatch = field(default_factory=RawBatch)  # received, not yet handed out
    confirmed: bool = False  # JetStream has answered for this stream: a failure now is worth resuming

    def resume_from(self) -> int:
        return (self.batch.seqs[-1] if self.batch.seqs else self.after) + 1


class StreamScanner:
    """One raw NATS connection used for bulk reads; reusable for many scans (one at a time).

    Example:
        >>> async def count(url: str, stream: str) -> int:   # doctest: +SKIP
        ...     scanner = StreamScanner(ConnectOptions(servers=(url,)))
        ...     try:
        ...         return sum([len(batch) async for batch in scanner.scan(stream)])
        ...     finally:
        ...         await scanner.close()
    """

    def __init__(self, options: ConnectOptions, api_prefix: str | None = None) -> None:
        self._options = options
        # Every JetStream API subject starts with it: the options' domain or
        # prefix (``--js-domain``/``--js-api-prefix``), else ``$JS.API``.
        self._api = api_prefix or options.api_prefix()
        self._silence = options.connect_timeout + _SILENCE_BEYOND_TIMEOUT
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf, self._pos = b"", 0  # received; parsed up to _pos
        self._url: str | None = None  # the server connected to
        self._avoid: str | None = None  # a server that went silent: not reconnected to
        self.silent = False  # the last wait on the server ended in silence
        # When the server last said its cluster changed: it closed or refused
        # a connection, or sent an INFO after the handshake with other
        # connect_urls (nats-server does when a node leaves or joins) or in
        # lame-duck mode. Silence within reconnect_seconds of
        # that is a failover under way (leader elections: 4-9 s of silence,
        # measured on 2.15.1), asked again within the reconnect window;
        # silence alone is final.
        self._upheaval = -float("inf")
        self._peers: frozenset[str] = frozenset()  # the cluster's client URLs, as the INFO gives them
        self._lock = asyncio.Lock()
        self._inbox = f"_INBOX.{secrets.token_hex(11)}"
        self._ids = itertools.count(2)  # sids and reply tokens; sid 1 is the reply inbox

    # -- connection -------------------------------------------------------

    async def connect(self) -> None:
        """Connect to the first server that answers (nothing to do when connected)."""
        if self._writer is not None:
            return
        reason, silent = "no server given", bool(self._options.servers)
        # The server a scan heard nothing from is left out of its resume; a
        # later call (or a list of one) tries every server again.
        servers = [url for url in self._options.servers if url != self._avoid] or self._options.servers
        for url in servers:
            try:
                await asyncio.wait_for(self._handshake(url), self._options.connect_timeout)
                self._url, self._avoid, self.silent = url, None, False
                return
            except TimeoutError:
                self._drop()
                reason = f"no answer within {self._options.connect_timeout:g} s"
            except (OSError, _Disconnected, ValueError) as exc:
                self._drop()
                reason, silent = str(exc) or type(exc).__name__, False
                self._upheaval = time.monotonic()
            except BaseException:  # bad credentials, cancellation
                self._drop()
                raise
        # Every server silent (frozen, or not a NATS server): final. A refusal
        # or a hang-up (a restart under way) is worth another try.
        self.silent = silent
        failure = NoAnswer if silent else ConnectionFailed
        raise failure(f"cannot connect to {self._options.describe()}: {reason}")

    async def _handshake(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        host = parts.hostname or "127.0.0.1"
        self._reader, self._writer = await asyncio.open_connection(
            host, parts.port or 4222, limit=4 * _READ_SIZE)
        self._buf, self._pos = b"", 0
        op, args, _, _ = await self._frame()
        if op != b"INFO":
            raise _Disconnected(f"not a NATS server (it sent {op!r})")
        info = json.loads(args[0])
        self._peers = frozenset(info.get("connect_urls") or ())
        context = self._options.ssl_context()
        if info.get("tls_required") or context is not None:
            await self._writer.start_tls(context or ssl.create_default_context(), server_hostname=host)
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "lang": "python", "version": "aether_audit", "protocol": 1,
                   "name": self._options.name, **self._options.connect_fields(url, info.get("nonce"))}
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while (await self._frame())[0] != b"PONG":  # -ERR (bad credentials) raises here
            pass
        self._send(f"SUB {self._inbox}.r.* 1\r\n".encode())

    def _send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise _Disconnected("connection closed")
        self._writer.write(data)

    async def _fill(self, buf: bytes) -> bytes:
        """``buf`` followed by the next chunk from the socket."""
        try:
            if self._reader is None:
                raise ConnectionError("not connected")
            async with asyncio.timeout(self._silence):
                chunk = await self._reader.read(_READ_SIZE)
        except OSError as exc:  # TimeoutError included
            url = self._url
            self._drop()
            if isinstance(exc, TimeoutError):
                self._avoid, self.silent = url, True
                raise _Silent(f"the server stopped answering (nothing for {self._silence:g} s)") from exc
            self._upheaval = time.monotonic()
            raise _Disconnected(str(exc) or type(exc).__name__) from exc
        if not chunk:
            self._drop()
            self._upheaval = time.monotonic()
            raise _Disconnected("connection closed by the server")
        return buf + chunk if buf else chunk

    async def _frame(self) -> tuple[bytes, list[bytes], bytes, bytes]:
        """The next frame as (op, args, header, payload); PING, +OK and -ERR are handled here."""
        while (got := _parse_frame(self._buf, self._pos)) is None or got[1] in self._handled:
            if got is None:
                self._buf, self._pos = await self._fill(self._buf[self._pos:]), 0
            else:
                self._pos = got[0]
                self._control(got[1], got[2])
        self._pos = got[0]
        return got[1:]

    @property
    def _handled(self) -> tuple[bytes, ...]:
        """The frames ``_frame`` handles itself: an INFO too once connected."""
        return (b"PING", b"+OK", b"-ERR", b"INFO") if self._url else (b"PING", b"+OK", b"-ERR")

    def _control(self, op: bytes, args: list[bytes]) -> None:
        """A frame that is no message: PING → PONG, -ERR → raise, INFO (after
        the handshake: the cluster changed) noted; PONG, +OK: nothing."""
        if op == b"PING":
            self._send(b"PONG\r\n")
        elif op == b"INFO" and self._url:
            try:
                info = json.loads(args[0])
            except ValueError:
                return
            peers = frozenset(info.get("connect_urls") or ())
            if peers != self._peers or info.get("ldm"):
                self._peers, self._upheaval = peers, time.monotonic()
        elif op == b"-ERR":
            text = args[0].decode(errors="replace")
            raise server_error(text, self._options.describe()) or _Disconnected(text)

    def _drop(self) -> None:
        """Forget the connection without a goodbye (it is broken, or we are leaving)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = self._url = None
        self._buf, self._pos = b"", 0

    async def close(self) -> None:
        """Close the connection; a later call connects again."""
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- JetStream API ----------------------------------------------------

    async def _request(self, endpoint: str, body: dict[str, Any] | None, stream: str,
                       timeout: float | None = None, *, again: bool = True) -> dict[str, Any]:
        """One JetStream API call (``<api prefix>.<endpoint>``) over this
        connection; its errors become ours.

        Unanswered, it is sent again every ``_ASK_AGAIN`` seconds when
        ``again`` (a read, safe to repeat: not a consumer's creation), and
        after ``timeout`` (default ``connect_timeout``) of silence it fails
        with ``NoAnswer`` (final, unless a failover is under way: ``_recover``).
        """
        subject = f"{self._api}.{endpoint}"
        data = json.dumps(body).encode() if body is not None else b""
        wait = timeout or self._options.connect_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        replies: set[bytes] = set()
        while True:
            reply = f"{self._inbox}.r.{next(self._ids)}".encode()
            replies.add(reply)
            self._send(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply, len(data), data))
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + _ASK_AGAIN) if again else deadline):
                    while True:  # skips frames of other subscriptions, e.g. a finished scan's tail
                        op, args, header, payload = await self._frame()
                        if op in (b"MSG", b"HMSG") and args[0] in replies:
                            break
                break
            except TimeoutError as exc:
                if loop.time() >= deadline:
                    self.silent = True
                    raise NoAnswer(f"no answer from {self._options.describe()} to {subject} "
                                   f"within {wait:g} s") from exc
        self.silent = False
        where = self._options.describe()
        if header.startswith(b"NATS/1.0 503"):
            raise ConnectionFailed(f"JetStream is not enabled or not available at {where}")
        answer: dict[str, Any] = orjson.loads(payload)
        if error := answer.get("error"):
            raise api_error(error, stream, where)
        return answer

    async def _recover(self, exc: Exception, window: ReconnectWindow, resuming: bool) -> None:
        """Between attempts: raise if the failure is final, else pause.

        Tried again, within the window that opens at the first failure: what
        the server says is worth it, i.e. a stream without a leader
        (``leaderless``), and a connection it broke, refused or answered
        with no responders (a restart, a node gone) once a scan was under
        way or the connection had worked, and silence soon after the server
        said its cluster changed (``_upheaval``: a failover's elections are
        silent). Final: refused credentials, and silence alone (``NoAnswer``:
        a request or a handshake unanswered for the timeout; a scan's
        ``_Silent`` with no other server to go to), which would only move
        the failure later.
        """
        if leaderless(exc):
            if not window.failed(str(exc)):
                raise exc
            await asyncio.sleep(0.25)
            return
        self._drop()
        if isinstance(exc, AuthenticationFailed):
            raise exc
        if isinstance(exc, _Silent) and all(url == self._avoid for url in self._options.servers):
            raise NoAnswer(f"lost the connection to {self._options.describe()}: {exc}") from exc
        if isinstance(exc, NoAnswer) and time.monotonic() - self._upheaval < self._options.reconnect_seconds:
            # A failover under way: its elections are silent (see _upheaval).
            if not window.failed(str(exc)):
                raise NoAnswer(f"no answer from {self._options.describe()} within {window.seconds:g}s of "
                               f"a change in its cluster ({window.first_reason}; then: {exc})") from exc
            await asyncio.sleep(0.2)
            return
        if isinstance(exc, NoAnswer):
            if window.open:
                raise NoAnswer(f"lost the connection to {self._options.describe()} and could not resume: "
                               f"{window.first_reason}, then {exc}") from exc
            raise exc
        if isinstance(exc, ConnectionFailed) and not window.open and not resuming:
            raise exc  # never got going (no server, no JetStream): nothing to resume
        if not window.failed(str(exc)):
            raise ConnectionFailed(
                f"lost the connection to {self._options.describe()} and could not resume "
                f"within {window.seconds:g}s ({window.first_reason}; then: {exc})") from exc
        await asyncio.sleep(0.2)

    async def api(self, endpoint: str, body: dict[str, Any] | None, stream: str) -> dict[str, Any]:
        """One read-only JetStream API request (``$JS.API.<endpoint>``),
        retried within the reconnect window on what the server says is worth
        it (``_recover``); silence for ``connect_timeout`` alone is final.

        Example:
            >>> info = await scanner.api("STREAM.INFO.orders", None, "orders")  # doctest: +SKIP
        """
        async with self._lock:
            window = ReconnectWindow(self._options.reconnect_seconds)
            while True:
                try:
                    await self.connect()
                    return await self._request(endpoint, body, stream)
                except (_Disconnected, ConnectionFailed, JetStreamAPIError) as exc:
                    if isinstance(exc, JetStreamAPIError) and not leaderless(exc):
                        raise
                    await self._recover(exc, window, resuming=False)

    async def stream_info(self, stream: str, *, deleted_details: bool = False) -> dict[str, Any]:
        """``$JS.API.STREAM.INFO.<stream>`` (config and state); ``StreamNotFound`` if absent."""
        return await self.api(f"STREAM.INFO.{stream}", {"deleted_details": True} if deleted_details else None, stream)

    async def last_message(self, stream: str, subject: str) -> RawBatch:
        """The last message stored on ``subject`` (one ``STREAM.MSG.GET``
        by subject, an index look-up on the server); empty when none."""
        batch = RawBatch()
        try:
            answer = await self.api(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject}, stream)
        except JetStreamAPIError as exc:
            if exc.err_code == JS_ERR_NO_MESSAGE:
                return batch
            raise
        _add_message(batch, answer["message"])
        return batch

    async def get_messages(self, stream: str, seqs: list[int], *, window: int = 256) -> RawBatch:
        """The messages at ``seqs`` (in that order), by pipelined
        ``STREAM.MSG.GET`` requests; sequences deleted meanwhile are left out.

        A get by sequence is an index look-up on the server, while a consumer
        filtered on one subject walks every message of the stream between
        that subject's messages: for one actor's history in a big stream this
        is many times faster, when the sequences are known (``SubjectIndex``).
        """
        batch = RawBatch()
        async with self._lock:
            try:
                await self._get_messages(stream, seqs, window, batch)
            except BaseException:
                # Replies (or -ERRs) of the other requests may still come:
                # start the next call on a clean connection.
                self._drop()
                raise
        return batch

    async def stream_info_and_messages(self, stream: str, seqs: list[int]) -> tuple[dict[str, Any], RawBatch]:
        """``stream_info`` and ``get_messages`` in one write, so one round
        trip: a read by the subject index needs the stream's info to know
        the index is of this stream and up to date, and knows the
        sequences to get before that (~0.25 ms of a ~4 ms history at 200k).

        Retried as ``api`` is (a broken connection, a stream without a
        leader, within the reconnect window); silence for
        ``connect_timeout`` is final.
        """
        async with self._lock:
            window = ReconnectWindow(self._options.reconnect_seconds)
            while True:
                batch = RawBatch()
                try:
                    info = await self._get_messages(stream, seqs, 256, batch, info=True)
                    assert info is not None
                    return info, batch
                except (_Disconnected, ConnectionFailed, JetStreamAPIError) as exc:
                    self._drop()
                    if isinstance(exc, JetStreamAPIError) and not leaderless(exc):
                        raise
                    await self._recover(exc, window, resuming=False)
                except BaseException:
                    self._drop()
                    raise

    async def _get_messages(self, stream: str, seqs: list[int], window: int, batch: RawBatch,
                            info: bool = False) -> dict[str, Any] | None:
        """The gets of ``seqs`` into ``batch``, ``window`` at a time; with
        ``info``, the stream's info asked first in the same write, returned."""
        await self.connect()
        where = self._options.describe()
        subject = f"{self._api}.STREAM.MSG.GET.{stream}".encode()
        inbox = self._inbox.encode()
        match = _reply_regex(inbox).match
        answer_info: dict[str, Any] | None = None
        for start in range(0, max(len(seqs), 1 if info else 0), window):
            chunk = seqs[start:start + window]
            offset = 1 if info and not start else 0  # the info is answers[0], then the gets
            base = next(self._ids)
            count = len(chunk) + offset
            self._ids = itertools.count(base + count)  # one reply token per request
            requests = [b"PUB %s.STREAM.INFO.%s %s.r.%d 0\r\n\r\n" % (self._api.encode(), stream.encode(), inbox, base)
                        ] if offset else []
            requests += [b"PUB %s %s.r.%d %d\r\n%s\r\n" % (subject, inbox, base + offset + i, len(body), body)
                         for i, body in enumerate(b'{"seq":%d}' % seq for seq in chunk)]
            self._send(b"".join(requests))  # one write: a syscall per request would dominate
            answers: list[bytes | None] = [None] * count
            missing = count
            try:
                async with asyncio.timeout(self._options.connect_timeout):
                    while missing:
                        # The replies already received, straight from the
                        # buffer (a regex match each, no frame objects)...
                        buf, pos = self._buf, self._pos
                        while missing and (m := match(buf, pos)) is not None:
                            stop = m.end() + int(m[2])
                            if stop + 2 > len(buf):
                                break  # not all here yet
                            index = int(m[1]) - base
                            if 0 <= index < count and answers[index] is None:
                                answers[index] = buf[m.end():stop]
                                missing -= 1
                            pos = stop + 2
                        self._pos = pos
                        if not missing:
                            break
                        # ... then one frame the general way: it waits for
                        # more, answers a PING, raises on -ERR, skips a
                        # frame of another request.
                        op, args, header, payload = await self._frame()
                        if op == b"HMSG" and header.startswith(b"NATS/1.0 503"):
                            raise ConnectionFailed(f"JetStream is not enabled or not available at {where}")
                        token = args[0].rpartition(b".r.")[2] if op in (b"MSG", b"HMSG") else b""
                        index = int(token) - base if token.isdigit() and args[0].startswith(inbox) else -1
                        if 0 <= index < count and answers[index] is None:
                            answers[index] = payload
                            missing -= 1
            except TimeoutError as exc:
                self.silent = True
                raise NoAnswer(f"no answer from {where} to {missing} of {count} "
                               f"requests to {stream} within {self._options.connect_timeout:g} s") from exc
            self.silent = False
            if offset:
                answer_info = orjson.loads(answers[0] or b"{}")
                if error := answer_info.get("error"):
                    raise api_error(error, stream, where)
            for answer in answers[offset:]:
                message = orjson.loads(answer or b"{}").get("message")
                if message is not None:  # else deleted since it was indexed (err_code 10037)
                    _add_message(batch, message)
        return answer_info

    # -- scanning ---------------------------------------------------------

    async def scan(self, stream: str, *, start_seq: int = 1, end_seq: int | None = None,
                   filter_subject: str | None = None, batch_size: int = 10_000,
                   headers_only: bool = False, pull: int = _PULL_BATCH,
                   gate: Gate | None = None) -> AsyncIterator[RawBatch]:
        """Messages with ``start_seq <= seq <= end_seq`` in stream order, in batches.

        ``end_seq=None`` is the stream's last sequence when the scan starts (a
        consistent cut: later appends are not read); a caller that already
        knows the cut passes it and saves the stream-info request.
        ``filter_subject`` keeps matching subjects only; one exact subject is
        fast on the server, a wildcard is several times slower than no
        filter. ``headers_only`` delivers sequences and subjects with empty
        payloads (what an index needs: a tenth of the bytes). After a broken
        connection the scan resumes behind the last message received, so
        nothing is missed or doubled.

        ``pull`` is the messages asked for per pull request (two are kept
        outstanding). A ``gate`` makes the scan yield to other work: it asks
        for more only while ``gate.may_pull()``, and once what it asked for
        has all come it awaits ``gate.wait()``, so while it waits the server
        does nothing for it.
        """
        async with self._lock:
            window = ReconnectWindow(self._options.reconnect_seconds)
            cursor: _Cursor | None = None if end_seq is None else _Cursor(max(start_seq, 1) - 1, end_seq)
            restarts, restart_at = 0, -1
            while True:
                try:
                    await self.connect()
                    if cursor is None:
                        info = await self._request(f"STREAM.INFO.{stream}", None, stream)
                        cursor = _Cursor(max(start_seq, 1) - 1, info["state"]["last_seq"], confirmed=True)
                    large_read(cursor.end_seq - cursor.resume_from() + 1)  # once: a warning without the C loops
                    if cursor.resume_from() <= cursor.end_seq:
                        consume = self._consume(stream, filter_subject, max(1, batch_size), cursor, headers_only,
                                                pull, gate)
                        async with contextlib.aclosing(consume):
                            async for batch in consume:
                                window.succeeded()
                                yield batch
                    break
                except (_Disconnected, ConnectionFailed, JetStreamAPIError) as exc:
                    if isinstance(exc, JetStreamAPIError) and not leaderless(exc):
                        raise
                    await self._recover(exc, window, resuming=cursor is not None and cursor.confirmed)
                except _Restart as exc:
                    assert cursor is not None
                    restarts = restarts + 1 if cursor.resume_from() == restart_at else 0
                    restart_at = cursor.resume_from()
                    if restarts >= _MAX_FRUITLESS_RESTARTS:
                        raise JetStreamAPIError(f"the consumer on {stream} keeps failing: {exc}") from exc
            if cursor is not None and cursor.batch.seqs:
                yield cursor.batch

    async def _consume(self, stream: str, filter_subject: str | None, batch_size: int,
                       cursor: _Cursor, headers_only: bool = False, pull_size: int = _PULL_BATCH,
                       gate: Gate | None = None) -> AsyncIterator[RawBatch]:
        """One consumer's deliveries from ``cursor.resume_from()``, collected in ``cursor.batch``.

        Yields each batch once it is full and returns at the cut. Raises
        ``_Disconnected`` or ``_Restart`` leaving what was received in the cursor.
        """
        sid = str(next(self._ids)).encode()  # a new sid: frames of older consumers are dropped
        deliver = f"{self._inbox}.d.{sid.decode()}".encode()
        config: dict[str, Any] = {
            "deliver_policy": "by_start_sequence", "opt_start_seq": cursor.resume_from(),
            "ack_policy": "none", "replay_policy": "instant", "mem_storage": True,
            "num_replicas": 1, "inactive_threshold": _INACTIVE_NS,
        }
        if filter_subject:
            config["filter_subject"] = filter_subject
        if headers_only:
            config["headers_only"] = True
        self._send(b"SUB %s %s\r\n" % (deliver, sid))
        name, buf, pos = None, None, 0  # buf: the connection's buffer while deliveries are parsed here
        try:
            # Not asked again: each request would create another consumer.
            created = await self._request(f"CONSUMER.CREATE.{stream}",
                                          {"stream_name": stream, "config": config}, stream, again=False)
            name = created["name"]
            cursor.confirmed = True
            if not created.get("num_pending"):
                return
            body = json.dumps({"batch": pull_size, "expires": _PULL_EXPIRES_NS,
                               "idle_heartbeat": _HEARTBEAT_NS}).encode()
            pull = b"PUB %s.CONSUMER.MSG.NEXT.%s.%s %s %d\r\n%s\r\n" % (
                self._api.encode(), stream.encode(), name.encode(), deliver, len(body), body)
            requested = received = 0
            end, batch = cursor.end_seq, cursor.batch
            seqs, stamps, subjects, payloads = (batch.seqs.append, batch.stored_ns.append,
                                                batch.subjects.append, batch.payloads.append)
            ack_prefix: bytes | None = None  # learnt from the first delivery
            buf, pos = self._buf, self._pos
            done = False
            while True:
                counted = len(batch.seqs)
                if ack_prefix is not None and not done:
                    # The hot loop, in C where it is built: every delivery
                    # of this consumer it can take, no awaits.
                    taken_from = pos
                    pos, done = _DELIVERIES(buf, pos, sid, ack_prefix, batch_size - counted, end,
                                            batch.seqs, batch.stored_ns, batch.subjects, batch.payloads)
                    if not headers_only and len(batch.seqs) > counted and b"" in batch.payloads[counted:]:
                        _kept_headers(buf, taken_from, pos, sid, batch.headers)
                received += len(batch.seqs) - counted
                while not done and requested - received <= pull_size and (gate is None or gate.may_pull()):
                    self._send(pull)  # keep two requests outstanding: the pipe never idles
                    requested += pull_size
                if len(batch.seqs) >= batch_size:
                    cursor.after = batch.seqs[-1]
                    full, batch = batch, RawBatch()
                    cursor.batch = batch
                    seqs, stamps, subjects, payloads = (batch.seqs.append, batch.stored_ns.append,
                                                        batch.subjects.append, batch.payloads.append)
                    yield full
                    if not done:
                        continue
                if done:
                    return
                # One frame the slow way: the first delivery, a status message,
                # PING, -ERR, a frame of an older consumer, or an incomplete one.
                got = _parse_frame(buf, pos)
                if got is None:
                    if gate is not None and requested <= received:
                        # Nothing asked for is still on its way: wait here
                        # until the gate lets this scan ask again.
                        self._buf, self._pos = buf, pos
                        await gate.wait()
                        buf, pos = self._buf, self._pos
                        continue
                    buf, pos = await self._fill(buf[pos:]), 0
                    continue
                pos, op, args, header, payload = got
                if op not in (b"MSG", b"HMSG"):
                    self._control(op, args)
                    continue
                if args[1] != sid:
                    continue
                has_reply = len(args) == (5 if op == b"HMSG" else 4)
                ack = _ack_fields(args[2]) if has_reply else None
                if ack is None:  # a status: "NATS/1.0 <code> <description>"
                    if header[9:12] in (b"404", b"408", b"409", b"503"):
                        # The pull expired (nothing came for 30 s), the consumer
                        # vanished or moved: a new consumer's num_pending will
                        # tell what is really left.
                        raise _Restart(header.split(b"\r\n", 1)[0][9:].decode(errors="replace"))
                    continue  # 100 idle heartbeat
                prefix, seq, ns, pending = ack
                ack_prefix = ack_prefix or prefix
                if seq > end:
                    return
                seqs(seq)
                stamps(ns)
                subjects(args[0].decode(errors="replace"))
                payloads(payload)
                if not headers_only and keeps_header(header, payload):
                    batch.headers[seq] = header
                received += 1
                done = seq >= end or pending == 0
        finally:
            if self._writer is not None:  # still connected: tidy up, best effort
                if buf is not None:
                    self._buf, self._pos = buf, pos
                with contextlib.suppress(Exception):
                    self._send(b"UNSUB %s\r\n" % sid)
                    if name is not None:
                        await self._request(f"CONSUMER.DELETE.{stream}.{name}", None, stream, 2.0)
