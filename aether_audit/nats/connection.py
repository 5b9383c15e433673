"""The one boundary to NATS: how to log in, and what the server's errors mean.

Two clients speak to the server: nats-py (writes and the broadcaster) and
the raw-protocol ``StreamScanner`` (``nats.scan``, every read). Everything they
share lives here, once:

- ``ConnectOptions``: the URL and credentials, as nats-py keyword arguments
  (``nats_kwargs``) and as the raw ``CONNECT`` fields (``connect_fields``:
  token, user/password, NKey and JWT nonce signing). Its repr and
  ``describe()`` never show a password, token or seed.
- What an error means: ``server_error`` (a ``-ERR`` line), ``api_error`` (a
  JetStream API error object, with the JetStream error codes below) and
  ``translate_errors`` (nats-py's exceptions).
- How long to wait and when to ask again: ``connect_timeout`` bounds every
  single wait, and silence for that long (``NoAnswer``) is final for a
  read; ``ReconnectWindow`` retries, over ``reconnect_seconds``, only what
  the server says is worth it (a connection it broke or refused, no
  responders, ``leaderless``); ``until_available`` is a publish's retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import ssl
import time
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from ..model.errors import (
    AuditError,
    AuthenticationFailed,
    ConnectionFailed,
    JetStreamAPIError,
    PermissionDenied,
    StreamNotFound,
)

__all__ = [
    "ConnectOptions",
    "ErrorNotes",
    "NoAnswer",
    "ReconnectWindow",
    "api_error",
    "open_nats",
    "redact_url",
    "server_error",
    "translate_errors",
    "leaderless",
    "until_available",
]

logger = logging.getLogger("aether_audit")
T = TypeVar("T")


class _QuietTlsEof(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when
    using ssl", printed at the end of every TLS connection: a stream upgraded
    with ``start_tls`` (NATS sends INFO in the clear, then TLS starts) keeps a
    protocol that does not know it is over TLS. Nothing is wrong; the server
    simply closed the connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTlsEof())

# JetStream API error codes (nats-server's errors.json) we give a meaning to.
JS_ERR_TEMPORARILY_UNAVAILABLE = 10008  # no leader yet (a cluster electing one): worth a retry
JS_ERR_NO_MESSAGE = 10037  # a get found no message at that sequence or subject
JS_ERR_STREAM_NOT_FOUND = 10059
JS_ERR_WRONG_LAST_SEQUENCE = 10071  # the append guard: the subject moved

_USER_SEED = r"\b(SU[A-Z2-7]{50,})\b"

# How much longer than ``connect_timeout`` a read may take to fail when the
# server does not answer (docs/limits.md, pinned by test_faults.py's
# PONG-only and frozen-server tests): nats-py's connect gets 0.25 s over
# the timeout, and closing after silence takes at most 1 s (no goodbye is
# waited for). Measured 0.0-0.1 s beyond the timeout for a Python read. The
# command line adds its own start-up (importing pandas and pyarrow, ~1 s).
FAILURE_MARGIN = 1.0
# A scan already under way hears an idle heartbeat every 2 s: it waits two
# more before it calls the server silent (_scan._SILENCE_BEYOND_TIMEOUT).
SCAN_SILENCE_MARGIN = 4.0


def redact_url(url: str) -> str:
    """``nats://user:secret@host:4222`` → ``nats://user:***@host:4222``.

    Example:
        >>> redact_url("nats://alice:s3cret@localhost:4222")
        'nats://alice:***@localhost:4222'
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.password is not None:
        userinfo = f"{parts.username}:***"
    else:
        # A lone userinfo is a token (nats://TOKEN@host): hide it whole.
        userinfo = "***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


@dataclass(frozen=True, repr=False)
class ConnectOptions:
    """Where the server is and how to log in.

    Secrets (``password``, ``token``, the seed inside ``nkey`` and ``creds``
    files) are held here only; ``repr`` and ``describe`` redact them.

    ``connect_timeout`` (the CLI's ``--timeout``, default 5 s) is the
    longest single wait on a server. A read of a server that does not
    answer (frozen, or answering nothing but PINGs) fails within
    ``connect_timeout`` + 1 s (``FAILURE_MARGIN``; per server of the list
    when none answers), or + 4 s more when it stops in the middle of a scan
    (two missed heartbeats); silence is never retried. ``reconnect_seconds``
    is how long a connection the server broke or refused, or a stream
    without a leader, is tried again (docs/limits.md).

    Example:
        >>> ConnectOptions(servers=("nats://bob:pw@127.0.0.1:4222",))
        ConnectOptions(nats://bob:***@127.0.0.1:4222)
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str | None = None
    password: str | None = field(default=None)
    token: str | None = field(default=None)
    nkey: str | None = None  # path to an NKey seed file
    creds: str | None = None  # path to a JWT .creds file
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    name: str = "aether_audit"
    # The longest single wait on a server (the CLI's --timeout): connecting,
    # a JetStream request, silence in a scan. A read of a server that does
    # not answer (frozen, or answering PINGs only) fails within it plus
    # FAILURE_MARGIN (1 s), or plus SCAN_SILENCE_MARGIN (4 s) more when it
    # froze in the middle of a scan; never after the reconnect window:
    # silence is not retried.
    connect_timeout: float = 5.0
    # How long a connection the server broke or refused (a restart, a node
    # gone) is tried again before the call fails.
    reconnect_seconds: float = 30.0
    # The JetStream API a stream is behind (the nats CLI's --js-domain and
    # --js-api-prefix): a domain D is ``$JS.D.API`` (a leaf node or hub);
    # an account import may use any prefix. At most one of the two.
    js_domain: str | None = None
    js_api_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.js_domain and self.js_api_prefix:
            raise ValueError("give js_domain or js_api_prefix, not both (a domain D is the prefix $JS.D.API)")
        for name in ("js_domain", "js_api_prefix"):
            value = getattr(self, name)
            if value is not None and (not value or any(c in value for c in " \t\r\n*>")
                                      or value.startswith(".") or value.endswith(".")):
                raise ValueError(f"{name} {value!r} is not a NATS subject part")

    def api_prefix(self) -> str:
        """The JetStream API's subject prefix every request goes to.

        Example:
            >>> ConnectOptions(js_domain="hub").api_prefix(), ConnectOptions().api_prefix()
            ('$JS.hub.API', '$JS.API')
        """
        if self.js_api_prefix:
            return self.js_api_prefix
        return f"$JS.{self.js_domain}.API" if self.js_domain else "$JS.API"

    def jetstream_kwargs(self) -> dict[str, str]:
        """Keyword arguments of nats-py's ``nc.jetstream()`` for the same API."""
        if self.js_api_prefix:
            return {"prefix": self.js_api_prefix}
        return {"domain": self.js_domain} if self.js_domain else {}

    @classmethod
    def from_arguments(cls, url: str | None = None, **credentials: Any) -> ConnectOptions:
        """Options from a URL (comma-separated for a cluster) and credentials.

        Unknown credential names are refused, so a typo never silently
        connects without the intended credentials.
        """
        known = {f.name for f in fields(cls)} - {"servers"}
        unknown = set(credentials) - known
        if unknown:
            raise TypeError(f"unknown connection option(s): {', '.join(sorted(unknown))}")
        values = {k: v for k, v in credentials.items() if v is not None}
        servers = tuple(s.strip() for s in (url or "").split(",") if s.strip())
        if servers:
            values["servers"] = tuple(s if "://" in s else f"nats://{s}" for s in servers)
        return cls(**values)

    def describe(self) -> str:
        """The servers, safe to print."""
        return ",".join(redact_url(s) for s in self.servers)

    def __repr__(self) -> str:
        return f"ConnectOptions({self.describe()})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context when any TLS option is set or a URL says ``tls://``."""
        wants_tls = any((self.tls_ca, self.tls_cert)) or any(
            s.startswith("tls://") for s in self.servers
        )
        if not wants_tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def nats_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        kwargs: dict[str, Any] = {
            "servers": list(self.servers),
            "name": self.name,
            "connect_timeout": self.connect_timeout,
            "allow_reconnect": True,
            "reconnect_time_wait": 0.5,
            "max_reconnect_attempts": max(1, int(self.reconnect_seconds / 0.5)),
            "disconnected_cb": _log_disconnected,
        }
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.token is not None:
            kwargs["token"] = self.token
        if self.nkey:
            kwargs["nkeys_seed"] = self.nkey
        if self.creds:
            kwargs["user_credentials"] = self.creds
        context = self.ssl_context()
        if context is not None:
            kwargs["tls"] = context
        return kwargs

    def connect_fields(self, url: str, nonce: str | None) -> dict[str, str]:
        """The credential fields of a raw ``CONNECT`` to ``url`` (options win
        over the URL's userinfo); the server's ``nonce`` is signed with the
        NKey or the creds file's seed, which proves we hold it."""
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        unquote = urllib.parse.unquote
        out: dict[str, str] = {}
        url_user = unquote(parts.username) if parts.username else None
        url_pass = unquote(parts.password) if parts.password is not None else None
        user = self.user or (url_user if url_pass is not None else None)
        token = self.token or (url_user if url_pass is None else None)  # nats://TOKEN@host
        if user:
            out["user"], out["pass"] = user, self.password or url_pass or ""
        if token:
            out["auth_token"] = token
        if self.creds:
            out["jwt"] = _read_secret(self.creds, r"-+BEGIN NATS USER JWT-+\s+(\S+)")
        if self.creds or self.nkey:
            import nkeys

            keys = nkeys.from_seed(_read_secret(self.creds or self.nkey or "", _USER_SEED).encode())
            if not self.creds:
                out["nkey"] = keys.public_key.decode()
            if nonce:
                out["sig"] = base64.urlsafe_b64encode(keys.sign(nonce.encode())).rstrip(b"=").decode()
        return out

    def env_credentials(self) -> dict[str, str]:
        """Non-secret description of which credentials are in use, for logs."""
        used = {
            "user": self.user,
            "password": "***" if self.password else None,
            "token": "***" if self.token else None,
            "nkey": self.nkey,
            "creds": self.creds,
            "tls_ca": self.tls_ca,
        }
        return {k: v for k, v in used.items() if v}


def _read_secret(path: str, pattern: str) -> str:
    with open(path, encoding="utf-8") as handle:
        match = re.search(pattern, handle.read())
    if match is None:
        raise AuthenticationFailed(f"no usable key found in {path}")
    return match.group(1)


# --- what the server's errors mean -------------------------------------------------


def server_error(text: str, where: str) -> AuditError | None:
    """Our error for a ``-ERR`` line, or None for the errors after which the
    server hangs up (the connection is simply lost).

    Example:
        >>> server_error("'Authorization Violation'", "nats://h:4222")
        AuthenticationFailed('authorization failed at nats://h:4222')
    """
    text = text.strip().strip("'")
    lowered = text.lower()
    if "authorization violation" in lowered or "authentication" in lowered:
        return AuthenticationFailed(f"authorization failed at {where}")
    if "permissions violation" in lowered:
        return PermissionDenied(f"permission denied by {where}: {text}")
    return None


def api_error(error: dict[str, Any], stream: str | None, where: str) -> AuditError:
    """Our error for a JetStream API error object (``{"code", "err_code", "description"}``).

    Example:
        >>> api_error({"code": 404, "err_code": 10059, "description": "stream not found"}, "orders", "h")
        StreamNotFound("stream 'orders' not found")
    """
    description = str(error.get("description") or "unknown error")
    code, err_code = int(error.get("code") or 0), int(error.get("err_code") or 0)
    if err_code == JS_ERR_STREAM_NOT_FOUND and stream is not None:
        return StreamNotFound(stream)
    if "permission" in description.lower() or "authorization" in description.lower():
        return PermissionDenied(f"permission denied by {where}: {description.lower()}")
    # Everything else (a full stream, a message over max_msg_size, ...)
    # keeps its codes, so a caller can tell them apart.
    return JetStreamAPIError(description, code, err_code)


class NoAnswer(ConnectionFailed):
    """The server said nothing within ``connect_timeout``: it is frozen, hung,
    or not what it claims to be. Final, never retried: waiting longer for a
    server that does not answer only moves the failure later."""


def leaderless(exc: BaseException) -> bool:
    """Whether JetStream said "temporarily unavailable" (10008): the stream
    has no leader while its cluster elects one. Worth asking again.

    Example:
        >>> leaderless(JetStreamAPIError("JetStream system temporarily unavailable", 503, 10008))
        True
        >>> leaderless(NoAnswer("no answer from h to $JS.API.STREAM.INFO.orders within 5 s"))
        False
    """
    return isinstance(exc, JetStreamAPIError) and exc.err_code == JS_ERR_TEMPORARILY_UNAVAILABLE


def unavailable(exc: BaseException) -> bool:
    """Whether a publish is worth sending again: ``leaderless``, a broken or
    refused connection, and silence too, unlike a read. A stream whose
    leader is being elected drops publishes without a word (nats-server
    answers only on the leader), and resending one is safe: its
    ``Nats-Msg-Id`` makes a copy that did arrive a duplicate. Refused
    credentials or permissions never are."""
    return leaderless(exc) or (isinstance(exc, ConnectionFailed) and not isinstance(exc, AuthenticationFailed))


class ReconnectWindow:
    """How long a broken connection is tried again: ``seconds`` from the first
    failure after the last success (``ConnectOptions.reconnect_seconds``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline: float | None = None
        self.first_reason = ""  # why the window opened

    @property
    def open(self) -> bool:
        """A failure has happened since the last success."""
        return self._deadline is not None

    def failed(self, reason: str = "") -> bool:
        """Note a failure; False once the window has closed."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.seconds
            self.first_reason = reason
        return now < self._deadline

    def succeeded(self) -> None:
        self._deadline = None


async def until_available(operation: Callable[[], Awaitable[T]], seconds: float, pause: float = 0.25) -> T:
    """``operation()`` (a publish), tried again while it fails with an
    ``unavailable`` error (a cluster electing a leader, a server
    restarting), for up to ``seconds``; then its error stands. Reads do not
    use it: their scanner retries only what the server says is worth it."""
    window = ReconnectWindow(seconds)
    while True:
        try:
            return await operation()
        except AuditError as exc:
            if not unavailable(exc) or not window.failed():
                raise
        await asyncio.sleep(pause)


class ErrorNotes:
    """Asynchronous errors the server sends, which nats-py hands only to a callback.

    A publish or request the user may not make is answered by the server with
    ``-ERR 'Permissions Violation ...'`` and nats-py lets the call time out;
    remembering the violation lets that timeout be reported as what it is.
    """

    def __init__(self) -> None:
        self.permission: str | None = None
        self.last: Exception | None = None  # the latest error, e.g. why a connect failed
        self.refused = False  # the server refused the credentials at some point
        self._at = 0.0

    async def record(self, exc: Exception) -> None:
        self.last = exc
        text = _message_of(exc)
        if "authorization" in text.lower() or type(exc).__name__ == "AuthorizationError":
            self.refused = True
        if "permissions violation" in text.lower():
            self.permission, self._at = text, time.monotonic()
        logger.debug("nats error: %s", type(exc).__name__)

    def recent_permission(self, within: float = 60.0) -> str | None:
        if self.permission and time.monotonic() - self._at < within:
            return self.permission
        return None


async def _log_disconnected() -> None:
    logger.debug("nats disconnected")


def default_url() -> str | None:
    """``NATS_URL`` if set (and not empty)."""
    return os.environ.get("NATS_URL") or None


async def open_nats(options: ConnectOptions, notes: ErrorNotes | None = None) -> Any:
    """Connect nats-py with ``options``; failures become ``ConnectionFailed``.

    ``notes`` collects the server's asynchronous errors for ``translate_errors``.
    """
    import nats
    from nats import errors as nats_errors

    notes = notes or ErrorNotes()
    kwargs = options.nats_kwargs()
    kwargs["error_cb"] = notes.record
    reconnect_attempts = kwargs["max_reconnect_attempts"]
    # nats-py retries the *first* connect as often as later reconnects; a
    # wrong URL should fail in about a second, a broken link should not.
    kwargs["max_reconnect_attempts"] = 1
    # nats-py can hang for good after a failed TLS handshake (it awaits the
    # broken transport's wait_closed()): bound the whole connect.
    # One connect_timeout per server, so --timeout is what a user waits.
    budget = options.connect_timeout * max(1, len(options.servers)) + 0.25
    with translate_errors(options):
        try:
            connection = await asyncio.wait_for(nats.connect(**kwargs), budget)
        except (asyncio.TimeoutError, nats_errors.NoServersError) as exc:
            # Why it failed reached only the error callback.
            if notes.refused:
                raise AuthenticationFailed(f"authorization failed at {options.describe()}") from exc
            last = notes.last
            silent = last is None or isinstance(last, (asyncio.TimeoutError, TimeoutError)) or not str(last).strip()
            if silent:
                reason = f": no answer within {options.connect_timeout:g} s"
            else:
                reason = f" ({type(last).__name__}: {_message_of(last)})"
            failure = NoAnswer if silent else ConnectionFailed
            raise failure(f"cannot connect to {options.describe()}{reason}") from exc
    connection.options["max_reconnect_attempts"] = reconnect_attempts
    return connection


def _message_of(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.strip().strip("'\"")


@contextlib.contextmanager
def translate_errors(
    options: ConnectOptions | None = None,
    stream: str | None = None,
    notes: ErrorNotes | None = None,
) -> Iterator[None]:
    """Turn nats-py and socket errors into the ``AuditError`` tree.

    The one boundary where nats-py's exceptions are mapped; messages carry
    the redacted server list only.
    """
    from nats import errors as nats_errors
    from nats.js import errors as js_errors

    where = options.describe() if options else "the NATS server"
    try:
        yield
    except AuditError:
        raise
    except js_errors.APIError as exc:
        error = {"description": getattr(exc, "description", None) or _message_of(exc),
                 "code": getattr(exc, "code", 0), "err_code": getattr(exc, "err_code", 0)}
        raise api_error(error, stream, where) from exc
    except js_errors.NoStreamResponseError as exc:
        # A publish answered 503: no stream (or no leader) took it.
        raise ConnectionFailed(f"no stream at {where} answered the publish") from exc
    except (nats_errors.TimeoutError, asyncio.TimeoutError) as exc:
        # Checked before OSError: nats-py's TimeoutError is one.
        denied = notes.recent_permission() if notes else None
        if denied:
            raise PermissionDenied(f"permission denied by {where}: {denied}") from exc
        raise NoAnswer(f"no answer from {where} in time") from exc
    except nats_errors.AuthorizationError as exc:
        raise AuthenticationFailed(f"authorization failed at {where}") from exc
    except nats_errors.NoRespondersError as exc:
        raise ConnectionFailed(
            f"no JetStream responders at {where} (is JetStream enabled, and may this user use it?)"
        ) from exc
    except (nats_errors.NoServersError, ConnectionRefusedError, OSError) as exc:
        raise ConnectionFailed(f"cannot connect to {where}: {_message_of(exc)}") from exc
    except (nats_errors.ConnectionClosedError, nats_errors.StaleConnectionError) as exc:
        raise ConnectionFailed(f"connection to {where} closed") from exc
    except nats_errors.Error as exc:
        text = _message_of(exc)
        if "authorization" in text.lower():
            raise AuthenticationFailed(f"authorization failed at {where}") from exc
        if "permission" in text.lower():
            raise PermissionDenied(f"permission denied by {where}: {text}") from exc
        raise ConnectionFailed(f"NATS error from {where}: {text}") from exc
