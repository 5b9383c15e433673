"""``aether-audit``: the command line, a thin layer over the public API.

Every failure the user can fix (wrong URL, missing stream, bad credentials,
unreadable files) is one line on stderr and exit code 2; no traceback unless
``AETHER_AUDIT_DEBUG`` is set. Secrets given as options are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from .audit.checks import CHECKS, SEVERITIES
from .model.errors import AuditError, StreamNotFound
from .present.text import escape

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
# The credential options that name a file: checked before connecting.
FILE_OPTIONS = ("creds", "nkey", "tls_ca", "tls_cert", "tls_key")


class UsageError(AuditError):
    """A command line that cannot work as given (e.g. a missing file)."""

DESCRIPTION = """\
Audit, load and export the aether event store kept in NATS JetStream.

Every command connects with --server (default: $NATS_URL, else an embedded
nats-server started for this command). Reading commands (check, export,
history, report) never write to the stream.
"""

EXIT_CODES = """\
exit codes:
  0  nothing at or above --fail-on was found
  1  findings at or above --fail-on (default: error)
  2  usage or connection error (with --json also {"error": ..., "exit_code": 2} on stdout)
"""

DONE_CODES = """\
exit codes: 0 done, 2 usage or connection error (with --json also {"error": ..., "exit_code": 2} on stdout)
"""

EPILOG = """\
examples:
  aether-audit demo                                  # the whole job on an embedded server
  aether-audit check --server nats://host:4222 --stream events --json
  aether-audit check --server nats://host:4222 --checkpoint audit.ckpt   # reads only what is new
  aether-audit check --server nats://host:4222 --checkpoint audit.ckpt --sign audit.nk   # a signed checkpoint
  aether-audit watch --server nats://host:4222 --checkpoint watch.ckpt --json
  aether-audit export --server nats://host:4222 --out ./export --incremental
  aether-audit verify ./export --signer UA5W...      # one export: files, hash chains, signature
  aether-audit verify ./export-2026-11-01 ./export-2026-11-27
  aether-audit history order-1042 --server nats://host:4222
"""


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--server", metavar="URL", help="NATS URL(s), comma separated (default: $NATS_URL, else an embedded server)")
    group.add_argument("--stream", default="events", help="stream name as given to the Go store (default: events)")
    group.add_argument("--namespace", metavar="NS", help="the store's namespace (stream becomes NS_STREAM)")
    group.add_argument("--timeout", type=_seconds, default=5.0, metavar="SECONDS",
                       help="connecting and any single wait on the server (default: 5); a server that "
                            "does not answer fails the command within SECONDS + 1 (+ 4 in the middle of a read)")
    group.add_argument("--creds", metavar="FILE", help="NATS .creds file (JWT + NKey seed)")
    group.add_argument("--user", help="user name")
    group.add_argument("--password", help="password (or $NATS_PASSWORD; never printed)")
    group.add_argument("--token", help="auth token (or $NATS_TOKEN; never printed)")
    group.add_argument("--nkey", metavar="FILE", help="NKey seed file")
    group.add_argument("--tls-ca", metavar="FILE", help="CA certificate to trust")
    group.add_argument("--tls-cert", metavar="FILE", help="client certificate")
    group.add_argument("--tls-key", metavar="FILE", help="client key")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _embedded(args: argparse.Namespace) -> bool:
    return not args.server and not os.environ.get("NATS_URL")


def _check_files(args: argparse.Namespace) -> None:
    """Name a missing credentials file before any connection is tried: the
    server would answer only "authorization failed", or ignore it."""
    for name in FILE_OPTIONS:
        path = getattr(args, name, None)
        if path and not Path(path).is_file():
            flag = "--" + name.replace("_", "-")
            what = "is a directory, not a file" if Path(path).is_dir() else "no such file"
            raise UsageError(f"{flag} {path}: {what}")


def _credentials(args: argparse.Namespace) -> dict[str, Any]:
    """The connection options the command line gives, after naming any
    missing credentials file."""
    _check_files(args)
    return {
        "user": args.user,
        "password": args.password or os.environ.get("NATS_PASSWORD"),
        "token": args.token or os.environ.get("NATS_TOKEN"),
        "nkey": args.nkey,
        "creds": args.creds,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "connect_timeout": args.timeout,
    }


def _store(args: argparse.Namespace) -> Any:
    from .store.sync import connect

    return _Explained(connect(args.server, stream=args.stream, namespace=args.namespace, **_credentials(args)), args)


class _Explained:
    """The store as a context manager that turns a missing stream into advice:
    the streams that do exist, or, on an embedded server (empty by nature),
    how to point at data."""

    def __init__(self, store: Any, args: argparse.Namespace) -> None:
        self.store, self.args = store, args

    def __enter__(self) -> Any:
        return self.store

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        try:
            if isinstance(error, StreamNotFound):
                raise _explain(self.store, error, self.args) from error
        finally:
            self.store.close()


def _explain(store: Any, error: StreamNotFound, args: argparse.Namespace) -> StreamNotFound:
    data_dir = os.environ.get("AETHER_AUDIT_DATA_DIR") if _embedded(args) else None
    if _embedded(args) and not data_dir:
        message = (f"stream {error.stream!r} not found: the embedded nats-server started for this command is empty "
                   "(each command starts its own); point at your data with --server URL (or $NATS_URL), or run "
                   "every command with AETHER_AUDIT_DATA_DIR=DIR to keep an embedded server's data between them")
    else:
        # With AETHER_AUDIT_DATA_DIR the embedded server holds that directory's
        # streams: name them, as for a server given with --server.
        where = f"the embedded nats-server on AETHER_AUDIT_DATA_DIR={data_dir}" if data_dir else store.server
        names = _stream_names(store)
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        message = (f"stream {error.stream!r} not found on {where}; "
                   + (f"streams there: {listed}" if names else "the server holds no stream")
                   + (" (a namespace makes it NS_STREAM: --namespace)" if names and not args.namespace else ""))
    explained = StreamNotFound(error.stream)
    explained.args = (message,)
    return explained


def _stream_names(store: Any) -> list[str]:
    """The server's stream names (read-only; none if refused)."""
    try:
        return store.stream_names()
    except AuditError:
        return []


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _print_findings(report: Any) -> None:
    """The headline, then the findings grouped by code with where each is (``present.text``)."""
    from .present.text import findings_text

    print(escape(str(report).splitlines()[0]))
    for line in findings_text(report.findings, {code: check.description for code, check in CHECKS.items()}):
        print(line)


# --- commands -------------------------------------------------------------------


def _check_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.clock_skew is not None:
        options["clock_skew"] = timedelta(seconds=args.clock_skew)
    return options


def _rules_option(args: argparse.Namespace) -> dict[str, Any]:
    """``--rules FILE`` read and validated in full before anything connects
    (a bad file is one line and exit 2, with or without a server)."""
    if not getattr(args, "rules", None):
        return {}
    from .audit.rules import load_rules

    return {"rules": load_rules(args.rules)}


def cmd_check(args: argparse.Namespace) -> int:
    checks = args.checks.split(",") if args.checks else None
    options = {**_rules_option(args), **_check_options(args)}
    with _store(args) as store:
        report = store.audit(checks, checkpoint=args.checkpoint, keep_frames=False, progress=_progress(args),
                             sign=_checkpoint_seed(args), **options)
    if args.json:
        _print_json(report.to_dict())
    else:
        _print_findings(report)
        if report.checkpoint is not None:
            read = report.read
            span = "nothing new" if read["from_seq"] is None else f"sequences {read['from_seq']}..{read['to_seq']}"
            print(f"checkpoint {escape(report.checkpoint)}: read {span}")
    return EXIT_FINDINGS if report.at_least(args.fail_on) else EXIT_OK


def _checkpoint_seed(args: argparse.Namespace) -> str | None:
    """--sign's seed file, which signs the checkpoint: only with --checkpoint
    (a watch without one keeps a temporary checkpoint, nothing to sign)."""
    if args.sign and not args.checkpoint:
        raise UsageError("--sign signs the checkpoint: give --checkpoint FILE too")
    return args.sign


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from .store.store import connect_async

    checks = args.checks.split(",") if args.checks else None
    sign = _checkpoint_seed(args)
    rules = _rules_option(args)

    async def follow() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def opener() -> Any:
            return connect_async(args.server, stream=args.stream, namespace=args.namespace, **_credentials(args))

        stores = [await opener()]

        async def reopen() -> Any:
            # The server stayed away past the reconnect window: a new connection.
            fresh = await opener()
            await stores.pop().aclose()
            stores.append(fresh)
            return fresh

        try:
            async for finding in stores[0].watch(checks, checkpoint=args.checkpoint, interval=args.interval,
                                                 settle=args.settle, stop=stop, reopen=reopen, sign=sign,
                                                 **rules, **_check_options(args)):
                if args.json:
                    print(json.dumps(finding), flush=True)
                else:
                    print(escape(f"{finding['severity']:<7} {finding['code']:<26} seq {finding['stream_seq']} "
                                       f"{finding['message']}"), flush=True)
        finally:
            for store in stores:
                await store.aclose()

    asyncio.run(follow())
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    """``rules infer --out FILE``: a rules file the stream's history satisfies."""
    from .audit.lifecycle import infer_stream
    from .store.sync import run_sync

    with _store(args) as store:
        text = run_sync(infer_stream(store.core, out=args.out, progress=_progress(args)))
    actors = len(re.findall(r"^\[actor\.[^.\]]+\]$", text, flags=re.M))
    if args.json:
        _print_json({"out": args.out, "actor_types": actors})
    else:
        print(escape(f"wrote {args.out}: rules for {actors} actor type{'s' if actors != 1 else ''}"))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    import signal

    with _store(args) as store:
        manifest = store.export_parquet(args.out, incremental=args.incremental, progress=_progress(args),
                                        format=args.format, timestamp_unit=args.timestamp_unit, sign=args.sign)
        # Committed: an interrupt from now on would only turn a finished
        # export into a traceback, so the rest (closing, exiting) ignores it.
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.json:
        _print_json(manifest)
    else:
        print(
            f"exported {manifest['events']} events, {manifest['snapshots']} snapshots and "
            f"{manifest['replay_errors']} replay errors (seq {manifest['first_seq']}..{manifest['last_seq']}) "
            f"to {args.out}"
        )
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .export.verify import verify_export, verify_exports

    if args.new_dir is None:
        result = verify_export(args.old_dir, signer=args.signer)
    else:
        if args.signer:
            raise ValueError("--signer checks one export: aether-audit verify DIR --signer KEY")
        result = verify_exports(args.old_dir, args.new_dir)
        if not args.json and result.old["stream"] != result.new["stream"]:
            print(f"NOT OK: {args.old_dir} is an export of stream {result.old['stream']}, {args.new_dir} of stream "
                  f"{result.new['stream']}: different streams, nothing to compare")
            return EXIT_FINDINGS
    if args.json:
        _print_json(result.to_dict())
    else:
        print(escape(result.summary))
        if not result.ok:
            print(result.problems.map(escape).to_string(index=False, max_rows=200))
    return EXIT_OK if result.ok else EXIT_FINDINGS


def cmd_seed(args: argparse.Namespace) -> int:
    with _store(args) as store:
        summary = store.seed(args.scenario)
    if args.json:
        _print_json(summary)
    else:
        print(f"seeded {args.scenario} into stream {store.stream_name}: "
              + ", ".join(f"{key} {value}" for key, value in summary.items() if not isinstance(value, dict)))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    rules = _rules_option(args)
    with _store(args) as store:
        report = store.audit(progress=_progress(args), **rules)
    page = report.write_html(Path(args.out))
    kind, sentence = report.verdict
    if args.json:
        _print_json({"out": str(page), "verdict": kind, "counts": report.counts})
    else:
        print(f"wrote {page}: {kind.upper()}: {sentence} ({report.summary['events_scanned']:,} events "
              f"of stream {report.summary['stream']})")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with _store(args) as store:
        frame = store.history(args.actor_id)
    if args.json:
        from .audit.checks import _iso

        # Times as the findings and Go write them (RFC 3339, every nanosecond):
        # pandas' to_json cuts them to microseconds, even with date_unit="ns".
        stamps = {name: _iso(frame[name]) for name in ("stored_at", "timestamp")}
        _print_json(json.loads(frame.assign(**stamps).to_json(orient="records")))
        return EXIT_OK
    from .present.text import human_time

    if frame.empty:
        print(f"no events for actor {escape(args.actor_id)} in stream {store.stream_name}")
        return EXIT_OK
    columns = ["stream_seq", "version", "event_type", "timestamp", "event_id", "data"]
    shown = frame[columns].assign(
        # Every nanosecond, but as a person reads a time; --json keeps RFC 3339.
        timestamp=frame["timestamp"].map(lambda stamp: human_time(stamp, precise=True)),
        event_type=frame["event_type"].map(escape), event_id=frame["event_id"].map(escape),
        data=frame["data"].map(escape))
    print(shown.to_string(index=False, max_colwidth=60, max_rows=args.limit))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(Path(args.out), url=args.server, progress=_progress(args))
    if args.json:
        _print_json(summary)
    else:
        for line in summary.get("lines", []):
            print(line)
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors also as JSON on stdout when --json was given."""

    def error(self, message: str) -> Any:
        if "--json" in (sys.argv[1:] if _ARGV is None else _ARGV):
            print(json.dumps({"error": message, "exit_code": EXIT_ERROR}))
        super().error(message)


_ARGV: Sequence[str] | None = None


SIGN_HELP = ("sign the checkpoint with this NKey seed (as export --sign), and refuse one that is unsigned, "
             "signed by another key or changed since")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="aether-audit", description=DESCRIPTION, epilog=EXIT_CODES + "\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aether-audit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=DONE_CODES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _connection_options(sub)
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sub.set_defaults(handler=handler)
        return sub

    check = command("check", cmd_check, "run every integrity check; exit 1 on findings at or above --fail-on")
    check.epilog = EXIT_CODES
    check.add_argument("--fail-on", choices=SEVERITIES, default="error", help="lowest severity that fails (default: error)")
    check.add_argument("--checks", metavar="CODES", help="comma-separated subset of checks to run")
    check.add_argument("--clock-skew", type=float, metavar="SECONDS", help="clock_skew threshold (default: 300)")
    check.add_argument("--checkpoint", metavar="FILE",
                       help="read only what is newer than FILE, report the cumulative findings, update FILE")
    check.add_argument("--sign", metavar="SEED_FILE", help=SIGN_HELP)
    check.add_argument("--rules", metavar="FILE", help="also check the business rules of this TOML file (docs/reference.md)")

    watch = command("watch", cmd_watch, "follow the stream and print each finding once, as soon as it is certain")
    watch.add_argument("--checkpoint", metavar="FILE", help="resume from FILE and keep it current")
    watch.add_argument("--sign", metavar="SEED_FILE", help=SIGN_HELP)
    watch.add_argument("--rules", metavar="FILE", help="also check the business rules of this TOML file (docs/reference.md)")
    watch.add_argument("--checks", metavar="CODES", help="comma-separated subset of checks to run")
    watch.add_argument("--clock-skew", type=float, metavar="SECONDS", help="clock_skew threshold (default: 300)")
    watch.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="poll interval (default: 0.5)")
    watch.add_argument("--settle", type=float, default=30.0, metavar="SECONDS",
                       help="hold snapshot findings until the snapshot is this old (default: 30)")

    rules = command("rules", cmd_rules, "business rules: infer a rules file from the stream's history")
    rules.add_argument("action", choices=["infer"], help="infer: write a rules file the history satisfies")
    rules.add_argument("--out", required=True, metavar="FILE.toml", help="the rules file to write (atomically)")

    export = command("export", cmd_export, "export events, snapshots and replay errors to Parquet or Delta Lake")
    export.add_argument("--out", required=True, metavar="DIR", help="export directory")
    export.add_argument("--incremental", action="store_true",
                        help="check the export, then add only what is newer than the manifest's last_seq")
    export.add_argument("--format", choices=["parquet", "delta"], default="parquet",
                        help="hive-partitioned Parquet files (default) or Delta Lake tables (needs aether_audit[delta])")
    export.add_argument("--timestamp-unit", choices=["us", "ns"], default=None,
                        help="us (default): TIMESTAMP(MICROS) plus exact int64 *_ns columns, for every BI engine; "
                             "ns: nanosecond timestamps only")
    export.add_argument("--sign", metavar="SEED_FILE", help="sign the manifest with this NKey seed")

    verify = commands.add_parser(
        "verify", help="check one export against itself, or that an older export is the start of a newer one",
        description="With DIR: recompute every file's sha256 and every actor's hash chain from the values, "
                    "and the signature with --signer. With OLD_DIR NEW_DIR: whether OLD_DIR's history is, "
                    "event for event, the start of NEW_DIR's. Exit 0 when so, 1 when not; 2 when an export "
                    "cannot be read.")
    verify.add_argument("old_dir", metavar="DIR")
    verify.add_argument("new_dir", metavar="NEW_DIR", nargs="?")
    verify.add_argument("--signer", metavar="PUBLIC_KEY", help="NKey public key the manifest must be signed with")
    verify.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    verify.set_defaults(handler=cmd_verify)

    seed = command("seed", cmd_seed, "write a scenario (a data_samples/ file or its name) through the append API")
    seed.add_argument("scenario", metavar="SCENARIO", help="path, or a name in data_samples/ (e.g. orders, anomalies)")

    report = command("report", cmd_report, "write one self-contained HTML page: summary, findings, plots")
    report.add_argument("--out", required=True, metavar="FILE.html")
    report.add_argument("--rules", metavar="FILE", help="also check these business rules: a rules section and process map")

    history = command("history", cmd_history, "print one actor's history as a table")
    history.add_argument("actor_id", metavar="ACTOR_ID")
    history.add_argument("--limit", type=int, default=200, help="rows to print at most (default: 200)")

    demo = command("demo", cmd_demo, "start a local server, seed samples, check, export, report")
    demo.add_argument("--out", default="aether-audit-demo", metavar="DIR", help="output directory (default: ./aether-audit-demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aether-audit``; returns the exit code."""
    global _ARGV
    _ARGV = argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("aether-audit: interrupted", file=sys.stderr)
        return 130
    except (AuditError, OSError, ValueError) as exc:
        if os.environ.get("AETHER_AUDIT_DEBUG"):
            traceback.print_exc()  # then the one line and exit 2, as without it
        message = error_line(exc)
        if getattr(args, "json", False):
            print(json.dumps({"error": message, "exit_code": EXIT_ERROR}))
        print(f"aether-audit: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def error_line(exc: BaseException) -> str:
    """One line saying what went wrong: the first line of the message, or for
    an OS error without a file name its kind (``[Errno 2] ...`` says nothing)."""

    text = str(exc).strip()
    if isinstance(exc, OSError) and not isinstance(exc, AuditError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    return escape(text.splitlines()[0] if text else type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
