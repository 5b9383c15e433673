"""Credentials, TLS, read-only auditors, and secrets that never leak.

Every kind of credential (user/password, token, NKey, a JWT ``.creds`` file,
TLS with a CA made here, mutual TLS) is checked on both connections the store
keeps: nats-py (appends and single look-ups) and the raw-protocol scanner
(whole-stream reads). The servers are real nats-server processes; the
operator, account and user JWTs of the ``.creds`` case are signed here with
``nkeys``, as ``nsc`` would sign them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nkeys
import pytest

from aether_audit import (
    ActorSnapshot,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectOptions,
    Event,
    NatsServer,
    PermissionDenied,
    connect,
    connect_async,
)
from aether_audit.nats.scan import StreamScanner
from aether_audit.store.sync import run_sync

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-S3CRET-4a1f"
AUDITOR_PASSWORD = "aud-S3CRET-77c2"
TOKEN = "tok-S3CRET-91be"
WRONG = "wrong-S3CRET-0d0d"
AUDITED = "audited"  # the stream the read-only auditor may read


# --- key material ---------------------------------------------------------------------


def new_keypair(prefix: int) -> nkeys.KeyPair:
    """A fresh NKey pair (user ``U…``, account ``A…``, operator ``O…``)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """A NATS JWT (v2, ``ed25519-nkey``) issued by ``signer``."""
    claims = dict(claims, iat=int(time.time()), iss=signer.public_key.decode())
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    signing_input = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(signer.sign(signing_input.encode()))


UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
             "conn": -1, "leaf": -1}


class Operator:
    """Decentralised auth: an operator, a system account and an app account
    with JetStream, preloaded into a memory resolver."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
        self.system = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        self.account = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
        operator_jwt = sign_jwt({"sub": self.key.public_key.decode(), "name": "test-operator",
                                 "nats": {"type": "operator", "version": 2}}, self.key)
        (directory / "operator.jwt").write_text(operator_jwt)
        self.accounts = {
            self.system.public_key.decode(): self.account_jwt(self.system, "SYS", jetstream=False),
            self.account.public_key.decode(): self.account_jwt(self.account, "APP", jetstream=True),
        }

    def account_jwt(self, account: nkeys.KeyPair, name: str, *, jetstream: bool) -> str:
        limits = dict(UNLIMITED)
        if jetstream:
            limits.update({"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1})
        return sign_jwt({"sub": account.public_key.decode(), "name": name,
                         "nats": {"type": "account", "version": 2, "limits": limits}}, self.key)

    def config(self) -> str:
        preload = "\n".join(f'  {key}: "{jwt}"' for key, jwt in self.accounts.items())
        return (f'operator: "{self.directory / "operator.jwt"}"\n'
                f"system_account: {self.system.public_key.decode()}\n"
                f"resolver: MEMORY\nresolver_preload: {{\n{preload}\n}}\n")

    def creds(self, name: str, account: nkeys.KeyPair | None = None) -> tuple[Path, str]:
        """A ``.creds`` file for a new user of ``account`` (default: the app account), and its seed."""
        user = new_keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = sign_jwt({"sub": user.public_key.decode(), "name": name,
                             "nats": {"type": "user", "version": 2, "pub": {}, "sub": {},
                                      "subs": -1, "data": -1, "payload": -1}}, account or self.account)
        seed = user.seed.decode()
        path = self.directory / f"{name}.creds"
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n" + user_jwt + "\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n"
        )
        return path, seed


def make_tls(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=aether-audit test CA")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (directory / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
            f"extendedKeyUsage={usage}\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {name: directory / name for name in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


# --- the read-only set of docs/permissions.md ----------------------------------------------


def documented_read_only(stream: str) -> tuple[list[str], list[str]]:
    """(publish allow, subscribe allow) of the read-only set in docs/permissions.md, for ``stream``."""
    text = (ROOT / "docs" / "permissions.md").read_text()
    block = text.split("```")[1]
    publish_part, _, subscribe_part = block.partition("subscribe:")
    publish = re.findall(r'"(\$JS\.API\.[^"]+)"', publish_part)
    subscribe = re.findall(r'"([^"]+)"', subscribe_part.split("]")[0])
    assert publish and subscribe, "docs/permissions.md no longer holds the read-only set in its first code block"

    def for_stream(subject: str) -> str:  # STREAM is a placeholder except as $JS.API.STREAM
        tokens = subject.split(".")
        return ".".join(stream if token == "STREAM" and i > 2 else token for i, token in enumerate(tokens))

    return [for_stream(s) for s in publish], subscribe


def users_config(nkey_user: str) -> str:
    publish, subscribe = documented_read_only(AUDITED)
    return f"""
authorization {{
  users = [
    {{user: admin, password: "{PASSWORD}"}}
    {{nkey: {nkey_user}}}
    {{user: auditor, password: "{AUDITOR_PASSWORD}", permissions: {{
      publish: {{allow: {json.dumps(publish)}}}
      subscribe: {{allow: {json.dumps(subscribe)}}}
    }}}}
  ]
}}
"""


# --- servers ------------------------------------------------------------------------------


class Secure:
    """The module's servers, one per way of logging in, and the files to log in with."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[NatsServer] = []
        self.nkey = new_keypair(nkeys.PREFIX_BYTE_USER)
        self.seed = self.nkey.seed.decode()
        self.seed_file = directory / "user.nk"
        self.seed_file.write_text(self.seed + "\n")
        self.users = self.start("users", users_config(self.nkey.public_key.decode()))
        self.token = self.start("token", f'authorization {{ token: "{TOKEN}" }}')
        self.operator = Operator(directory)
        self.jwt = self.start("jwt", self.operator.config())
        self.creds_file, self.creds_seed = self.operator.creds("writer")
        self.tls_files = make_tls(directory)
        tls = self.tls_files
        tls_block = f'cert_file: "{tls["server.pem"]}", key_file: "{tls["server.key"]}", ca_file: "{tls["ca.pem"]}"'
        self.tls = self.start("tls", f"tls {{ {tls_block} }}")
        self.mtls = self.start("mtls", f"tls {{ {tls_block}, verify: true }}")

    def start(self, name: str, config: str) -> NatsServer:
        server = NatsServer(self.directory / name, config_text=config).start()
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.kill()

    @property
    def secrets(self) -> list[str]:
        return [PASSWORD, AUDITOR_PASSWORD, TOKEN, WRONG, self.seed, self.creds_seed]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    servers = Secure(tmp_path_factory.mktemp("secure"))
    try:
        yield servers
    finally:
        servers.stop()


def with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("://", f"://{userinfo}@", 1)


def tls_url(server: NatsServer, host: str = "127.0.0.1") -> str:
    return server.url.replace("nats://127.0.0.1", f"tls://{host}")


# Each kind: how to connect (URL, credentials) to which server.
KINDS: dict[str, Callable[[Secure], tuple[str, dict[str, Any]]]] = {
    "password": lambda s: (s.users.url, {"user": "admin", "password": PASSWORD}),
    "password-in-url": lambda s: (with_userinfo(s.users.url, f"admin:{PASSWORD}"), {}),
    "token": lambda s: (s.token.url, {"token": TOKEN}),
    "token-in-url": lambda s: (with_userinfo(s.token.url, TOKEN), {}),
    "nkey": lambda s: (s.users.url, {"nkey": str(s.seed_file)}),
    "creds": lambda s: (s.jwt.url, {"creds": str(s.creds_file)}),
    "tls": lambda s: (tls_url(s.tls), {"tls_ca": str(s.tls_files["ca.pem"])}),
    "tls-localhost": lambda s: (tls_url(s.tls, "localhost"), {"tls_ca": str(s.tls_files["ca.pem"])}),
    "tls-ca-on-nats-url": lambda s: (s.tls.url, {"tls_ca": str(s.tls_files["ca.pem"])}),
    "mutual-tls": lambda s: (tls_url(s.mtls), {"tls_ca": str(s.tls_files["ca.pem"]),
                                                "tls_cert": str(s.tls_files["client.pem"]),
                                                "tls_key": str(s.tls_files["client.key"])}),
}


_streams = itertools.count()


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_credential_works_on_both_connections(secure, kind):
    url, credentials = KINDS[kind](secure)
    stream = f"sec{next(_streams)}"
    with connect(url, stream=stream, **credentials) as store:
        # nats-py: appends, snapshots and single look-ups.
        for version in (1, 2, 3):
            store.save_event(Event.new("acct-1", "Deposited", version, {"amount": version}))
        store.save_event(Event.new("acct-2", "Opened", 1))
        store.save_snapshot(ActorSnapshot("acct-1", 3, {"balance": 6}))
        assert store.get_latest_version("acct-1") == 3
        assert store.get_latest_snapshot("acct-1").state == {"balance": 6}
        # The scanner: whole-stream and per-actor reads.
        assert [e.version for e in store.get_events("acct-1")] == [1, 2, 3]
        frame = store.load(progress=False)
        assert frame["actor_id"].tolist() == ["acct-1"] * 3 + ["acct-2"]
        assert store.history("acct-1")["version"].tolist() == [1, 2, 3]
        assert len(store.snapshots()) == 1
        assert not store.audit().findings["severity"].eq("error").any()


def test_the_scanner_alone_logs_in_with_every_kind(secure):
    """The raw-protocol path on its own (no nats-py connection before it)."""

    async def info(url: str, credentials: dict[str, Any]) -> dict[str, Any]:
        scanner = StreamScanner(ConnectOptions.from_arguments(url, **credentials))
        try:
            return await scanner.stream_info("nope")
        finally:
            await scanner.close()

    from aether_audit import StreamNotFound

    for kind, make in KINDS.items():
        url, credentials = make(secure)
        with pytest.raises(StreamNotFound):  # logged in, and JetStream answered
            asyncio.run(info(url, credentials))


# --- wrong credentials ---------------------------------------------------------------------------


def chain_text(exc: BaseException) -> str:
    """The message and the whole formatted chain (what a traceback would print)."""
    return str(exc) + "\n" + "".join(traceback.format_exception(exc))


WRONG_KINDS: dict[str, Callable[[Secure], tuple[str, dict[str, Any]]]] = {
    "password": lambda s: (s.users.url, {"user": "admin", "password": WRONG}),
    "password-in-url": lambda s: (with_userinfo(s.users.url, f"admin:{WRONG}"), {}),
    "password-of-another-user": lambda s: (s.users.url, {"user": "auditor", "password": PASSWORD}),
    "token": lambda s: (s.token.url, {"token": WRONG}),
    "token-in-url": lambda s: (with_userinfo(s.token.url, WRONG), {}),
    "nkey-unknown": lambda s: (s.users.url, {"nkey": str(s.directory / "stranger.nk")}),
    "creds-of-a-foreign-account": lambda s: (s.jwt.url, {"creds": str(s.directory / "foreign.creds")}),
    "no-credentials": lambda s: (s.users.url, {}),
}


@pytest.fixture(scope="module")
def strangers(secure: Secure) -> list[str]:
    """Key files the servers do not know; returns their seeds (secrets too)."""
    stranger = new_keypair(nkeys.PREFIX_BYTE_USER)
    (secure.directory / "stranger.nk").write_text(stranger.seed.decode())
    (secure.directory / "foreign-op").mkdir(exist_ok=True)
    foreign = Operator(secure.directory / "foreign-op")  # an operator the server does not trust
    path, seed = foreign.creds("intruder", foreign.account)
    path.rename(secure.directory / "foreign.creds")
    return [stranger.seed.decode(), seed]


@pytest.mark.parametrize("kind", list(WRONG_KINDS))
def test_wrong_credentials_fail_fast_and_clearly_on_both_connections(secure, strangers, kind):
    url, credentials = WRONG_KINDS[kind](secure)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:  # AuthenticationFailed is one
        connect(url, stream="sec", **credentials)
    assert time.monotonic() - started < 5.0
    assert "\n" not in str(caught.value)

    async def scan() -> None:
        scanner = StreamScanner(ConnectOptions.from_arguments(url, **credentials))
        try:
            await scanner.stream_info("sec")
        finally:
            await scanner.close()

    with pytest.raises(AuthenticationFailed, match="authorization failed at") as scanned:
        asyncio.run(scan())
    for text in (chain_text(caught.value), chain_text(scanned.value)):
        for secret in secure.secrets + strangers:
            assert secret not in text


def test_connect_reports_refused_credentials_as_authentication_failed(secure, strangers):
    for kind, make in WRONG_KINDS.items():
        url, credentials = make(secure)
        with pytest.raises(AuthenticationFailed, match="authorization failed at"):
            connect(url, stream="sec", **credentials)


def test_an_untrusted_server_certificate_fails_within_a_bound(secure):
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            connect(tls_url(secure.tls), stream="sec", connect_timeout=2, reconnect_seconds=2).close()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(12)
    assert not worker.is_alive(), "connect() still hangs after 12 s"
    assert isinstance(outcome.get("error"), ConnectionFailed)
    assert "certificate" in str(outcome["error"]).lower()


def test_the_scanner_refuses_an_untrusted_server_certificate(secure):
    async def info() -> None:
        scanner = StreamScanner(ConnectOptions.from_arguments(tls_url(secure.tls), connect_timeout=2))
        try:
            await scanner.stream_info("sec")
        finally:
            await scanner.close()

    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="(?i)certificate"):
        asyncio.run(info())
    assert time.monotonic() - started < 5.0


# --- the read-only auditor -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited(secure: Secure) -> Secure:
    """The ``audited`` stream written by ``admin``: events, a snapshot, a gap."""
    with connect(secure.users.url, stream=AUDITED, user="admin", password=PASSWORD) as admin:
        for version in (1, 2, 3):
            admin.save_event(Event.new("order-1", "Placed", version))
        admin.save_event(Event.new("order-2", "Placed", 1))
        admin.save_event(Event.new("order-2", "Paid", 3))  # a version gap, for the check to find
        admin.save_snapshot(ActorSnapshot("order-1", 3, {"paid": True}))
    return secure


def admin_state(secure: Secure) -> tuple[int, int, int]:
    with connect(secure.users.url, stream=AUDITED, user="admin", password=PASSWORD) as admin:
        state = admin.stream_state()
    return state.messages, state.last_seq, state.num_deleted


def test_documented_read_only_set_loads_checks_and_exports(audited, tmp_path):
    before = admin_state(audited)
    with connect(audited.users.url, stream=AUDITED, user="auditor", password=AUDITOR_PASSWORD) as auditor:
        frame = auditor.load(progress=False)
        assert frame["actor_id"].tolist() == ["order-1"] * 3 + ["order-2"] * 2
        assert auditor.history("order-2")["version"].tolist() == [1, 3]
        assert [e.version for e in auditor.get_events("order-1")] == [1, 2, 3]
        assert auditor.get_latest_version("order-1") == 3
        assert auditor.get_latest_snapshot("order-1").version == 3
        assert len(auditor.snapshots()) == 1
        report = auditor.audit()
        assert report.counts["version_gap"] == 1
        manifest = auditor.export_parquet(tmp_path / "export", progress=False)
        assert (manifest["events"], manifest["snapshots"]) == (5, 1)
    assert admin_state(audited) == before


def test_documented_read_only_set_refuses_every_write_with_permission_denied(audited):
    before = admin_state(audited)
    with connect(audited.users.url, stream=AUDITED, user="auditor", password=AUDITOR_PASSWORD) as auditor:
        writes = {
            "save_event": lambda: auditor.save_event(Event.new("order-1", "Sneaky", 4)),
            "save_snapshot": lambda: auditor.save_snapshot(ActorSnapshot("order-1", 9, {"forged": True})),
        }
        for name, write in writes.items():
            started = time.monotonic()
            with pytest.raises(PermissionDenied) as caught:
                write()
            elapsed = time.monotonic() - started
            message = str(caught.value)
            assert "permission" in message.lower() and AUDITED in message, (name, message)
            assert AUDITOR_PASSWORD not in chain_text(caught.value)
            assert elapsed < 12.0, f"{name}: PermissionDenied after {elapsed:.1f}s"
    assert admin_state(audited) == before


def test_the_cli_checks_and_exports_with_read_only_credentials(audited, tmp_path):
    common = ["--server", audited.users.url, "--stream", AUDITED, "--user", "auditor",
              "--password", AUDITOR_PASSWORD, "--no-progress"]
    check = cli("check", *common, "--json")
    assert check.returncode == 1, check.stderr  # the version gap is an error finding
    assert json.loads(check.stdout)["counts"]["version_gap"] == 1
    export = cli("export", *common, "--out", str(tmp_path / "export"))
    assert export.returncode == 0, export.stderr
    for result in (check, export):
        assert AUDITOR_PASSWORD not in result.stdout + result.stderr


# --- secrets never shown -----------------------------------------------------------------------------


def test_reprs_and_descriptions_hide_every_secret(secure):
    options = ConnectOptions.from_arguments(
        f"nats://admin:{PASSWORD}@127.0.0.1:4222, nats://{TOKEN}@127.0.0.1:4223, tls://u:{WRONG}@localhost:4224",
        user="admin", password=PASSWORD, token=TOKEN, nkey=str(secure.seed_file), creds=str(secure.creds_file))
    shown = [repr(options), str(options), options.describe(), json.dumps(options.env_credentials()),
             f"{options!r:>10}", str([options])]
    for text in shown:
        for secret in secure.secrets:
            assert secret not in text, text
    assert "admin:***@127.0.0.1:4222" in options.describe() and "***@127.0.0.1:4223" in options.describe()

    url = with_userinfo(secure.users.url, f"admin:{PASSWORD}")
    with connect(url, stream="sec-repr") as store:
        texts = [repr(store), str(store), store.server, repr(store.core), str(store.core), repr(store.core._scanner)]
    with connect(with_userinfo(secure.token.url, TOKEN), stream="sec-repr") as store:
        texts += [repr(store), store.server, repr(store.core)]

    async def async_repr() -> list[str]:
        async with connect_async(url, stream="sec-repr") as core:
            return [repr(core), core.server]

    texts += run_sync(async_repr())
    for text in texts:
        for secret in secure.secrets:
            assert secret not in text, text
    assert any("admin:***@" in text for text in texts)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PASSWORD", "NATS_TOKEN", "AETHER_AUDIT_DEBUG")}
    return subprocess.run([sys.executable, "-m", "aether_audit", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_the_cli_never_prints_a_secret(secure, strangers):
    with connect(secure.users.url, stream="sec-cli", user="admin", password=PASSWORD) as store:
        store.save_event(Event.new("acct-1", "Opened", 1))
    host = secure.users.url.removeprefix("nats://")
    runs = {
        "password in the URL": (["check", "--server", f"nats://admin:{PASSWORD}@{host}", "--stream", "sec-cli", "--json"], 0),
        "--password": (["check", "--server", secure.users.url, "--user", "admin", "--password", PASSWORD,
                        "--stream", "sec-cli"], 0),
        "history": (["history", "acct-1", "--server", f"nats://admin:{PASSWORD}@{host}", "--stream", "sec-cli"], 0),
        "wrong password in the URL": (["check", "--server", f"nats://admin:{WRONG}@{host}", "--stream", "sec-cli"], 2),
        "wrong --password": (["check", "--server", secure.users.url, "--user", "admin", "--password", WRONG,
                              "--stream", "sec-cli"], 2),
        "wrong --token": (["check", "--server", secure.token.url, "--token", WRONG, "--stream", "sec-cli"], 2),
        "token in the URL": (["check", "--server", with_userinfo(secure.token.url, TOKEN), "--stream", "nope"], 2),
        "--nkey": (["check", "--server", secure.users.url, "--nkey", str(secure.seed_file), "--stream", "sec-cli"], 0),
        "unknown --nkey": (["check", "--server", secure.users.url, "--nkey", str(secure.directory / "stranger.nk"),
                            "--stream", "sec-cli"], 2),
        "--creds": (["check", "--server", secure.jwt.url, "--creds", str(secure.creds_file), "--stream", "nope"], 2),
    }
    for name, (args, code) in runs.items():
        result = cli(*args, "--no-progress")
        assert result.returncode == code, (name, result.stdout[-300:], result.stderr)
        output = result.stdout + result.stderr
        for secret in secure.secrets + strangers:
            assert secret not in output, (name, output)
        if code == 2:
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, (name, result.stderr)
        if "URL" in name and code == 2 and "token" not in name:
            assert "admin:***@" in result.stderr, (name, result.stderr)


def test_logs_at_debug_never_hold_a_secret(secure, strangers, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # every logger: aether_audit, nats, asyncio
    url = with_userinfo(secure.users.url, f"admin:{PASSWORD}")
    with connect(url, stream="sec-log") as store:
        store.save_event(Event.new("acct-1", "Opened", 1))
        store.load(progress=False)
        store.audit()
    for kind, make in WRONG_KINDS.items():
        bad_url, credentials = make(secure)
        with pytest.raises(ConnectionFailed):
            connect(bad_url, stream="sec-log", **credentials)
    for kind in ("token", "nkey", "creds", "mutual-tls"):
        good_url, credentials = KINDS[kind](secure)
        with connect(good_url, stream=f"sec-log-{kind}", **credentials) as store:
            store.save_event(Event.new("acct-1", "Opened", 1))
            store.load(progress=False)
    # A connection that breaks while in use is logged too.
    doomed = NatsServer(secure.directory / "doomed", config_text=f'authorization {{ token: "{TOKEN}" }}').start()
    try:
        store = connect(with_userinfo(doomed.url, TOKEN), stream="sec-log", reconnect_seconds=1, connect_timeout=1)
        store.save_event(Event.new("acct-1", "Opened", 1))
        doomed.kill()
        with pytest.raises(ConnectionFailed):
            store.get_events("acct-1")
        store.close()
    finally:
        doomed.cleanup()

    captured = capfd.readouterr()
    texts = [captured.out, captured.err]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    assert len(caplog.records) > 0
    for text in texts:
        for secret in secure.secrets + strangers:
            assert secret not in text, text


def test_a_tls_run_prints_nothing_on_stderr(secure, stream_name):
    # asyncio used to print "returning true from eof_received() has no effect
    # when using ssl" at the end of every TLS connection.
    url, credentials = KINDS["mutual-tls"](secure)
    options = [f"--{name.replace('_', '-')}={value}" for name, value in credentials.items()]
    seeded = cli("seed", "clean", "--server", url, "--stream", stream_name, *options)
    checked = cli("check", "--server", url, "--stream", stream_name, *options)
    assert (seeded.returncode, seeded.stderr) == (0, "")
    assert (checked.returncode, checked.stderr) == (0, "")
