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

COMPARE_CODES = """\
exit codes:
  0  both hold the same history
  1  they differ (each difference listed: missing, extra or different, with both sequences)
  2  usage or connection error (with --json also {"error": ..., "exit_code": 2} on stdout)
"""

EPILOG = """\
examples:
  aether-audit demo                                  # the whole job on an embedded server
  aether-audit check --server nats://host:4222 --stream events --json
  aether-audit check --server nats://host:4222 --checkpoint audit.ckpt   # reads only what is new
  aether-audit check --server nats://host:4222 --checkpoint audit.ckpt --sign audit.nk   # a signed checkpoint
  aether-audit watch --server nats://host:4222 --checkpoint watch.ckpt --json
  aether-audit export --server nats://host:4222 --out ./export --incremental
  aether-audit keygen --out audit.nk                 # a seed for --sign; prints the public key
  aether-audit export --server nats://host:4222 --out ./export --sign audit.nk
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
    group.add_argument("--js-domain", metavar="DOMAIN", help="the JetStream domain the stream is in ($JS.DOMAIN.API)")
    group.add_argument("--js-api-prefix", metavar="PREFIX", help="the JetStream API prefix (an account import's)")
    group.add_argument("--subject-prefix", metavar="PREFIX",
                       help="where the store's subjects are (PREFIX.events.>) when the stream's configuration "
                            "leaves it ambiguous (default: learnt from it; a mirror keeps its origin's)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text}")
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
        "js_domain": args.js_domain,
        "js_api_prefix": args.js_api_prefix,
        "subject_prefix": args.subject_prefix,
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

    from .present.text import finding_line
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
                else:  # worded as check words it (present.text): one formatter for both
                    print(finding_line(finding), flush=True)
        finally:
            for store in stores:
                await store.aclose()

    asyncio.run(follow())
    return EXIT_OK


def _size(text: str) -> int:
    """``128M``, ``1G``, ``500000``: a size in bytes (K, M, G are powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    number = text[:-1] if scale > 1 else text
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"not a size in bytes (like 128M): {text!r}")
    return int(number) * scale


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

    from .export.compact import DEFAULT_TARGET_SIZE, DEFAULT_THRESHOLD, compact_export

    target = args.target_size or DEFAULT_TARGET_SIZE
    if args.compact:  # offline: the export's own files, no server
        if args.incremental or args.no_compact:
            raise ValueError("--compact compacts the export as it is: run it without --incremental or --no-compact")
        manifest = compact_export(args.out, target_size=target, sign=args.sign, vacuum_hours=args.vacuum_hours)
        if args.json:
            _print_json(manifest)
        else:
            print(f"compacted {args.out}: {len(manifest['files'])} files hold {manifest['events']} events, "
                  f"{manifest['snapshots']} snapshots and {manifest['replay_errors']} replay errors")
        return EXIT_OK
    threshold = None if args.no_compact else (args.compact_threshold or DEFAULT_THRESHOLD)
    before = _manifest_before(args.out)
    with _store(args) as store:
        manifest = store.export_parquet(args.out, incremental=args.incremental, progress=_progress(args),
                                        format=args.format, timestamp_unit=args.timestamp_unit, sign=args.sign,
                                        compact_threshold=threshold, target_size=target)
        # Committed: an interrupt from now on would only turn a finished
        # export into a traceback, so the rest (closing, exiting) ignores it.
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.json:
        _print_json(manifest)
    else:
        print(_export_text(manifest, before, args.out))
    return EXIT_OK


def _manifest_before(out: str) -> dict[str, Any] | None:
    """The export's manifest before this run (None when there is none or it
    cannot be read: the export itself then says what is wrong)."""
    from .export.layout import read_manifest

    try:
        return read_manifest(out)
    except (AuditError, OSError, ValueError):
        return None


def _counts(values: dict[str, Any]) -> str:
    return (f"{_plural(values['events'], 'event')}, {_plural(values['snapshots'], 'snapshot')} and "
            f"{_plural(values['replay_errors'], 'replay error')}")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _export_text(manifest: dict[str, Any], before: dict[str, Any] | None, out: str) -> str:
    """What this run added, then what the export now holds: an incremental run
    that found nothing new must not read like one that added 50 events.

    Example: ``added 2 events, 0 snapshots and 0 replay errors (seq 6..7); the export
    now holds 7 events, 1 snapshot and 0 replay errors (seq 1..7) in ./export``
    """
    holds = f"{_counts(manifest)} (seq {manifest['first_seq']}..{manifest['last_seq']}) in {out}"
    unchanged = before is not None and before.get("generation") == manifest.get("generation") and (
        before.get("exported_at") == manifest.get("exported_at"))
    if unchanged:
        return f"nothing new since sequence {manifest['last_seq']}: the export is unchanged; it holds {holds}"
    run = (manifest.get("runs") or [None])[-1]
    if not run or not run.get("incremental"):
        return f"exported {holds}"
    return (f"added {_counts(run)} (seq {run['first_seq']}..{run['last_seq']}); "
            f"the export now holds {holds}")


def cmd_verify(args: argparse.Namespace) -> int:
    from .export.verify import PROBLEM_KINDS, verify_export, verify_exports
    from .model.signing import check_public_key
    from .present.text import findings_text

    if args.new_dir is None:
        if args.signer is not None:
            try:
                check_public_key(args.signer)
            except ValueError as exc:
                raise UsageError(f"--signer {exc}") from None
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
        # As check prints findings: grouped by kind, each with where it is (present.text).
        problems = result.problems.assign(code=result.problems["kind"], severity="error", subject=None)
        for line in findings_text(problems, PROBLEM_KINDS, unplaced=None):
            print(line)
    return EXIT_OK if result.ok else EXIT_FINDINGS


def _compare_side(text: str, args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(name, parts, reader or None) of one side of ``compare``: an export
    directory, a stream on --server, or ``nats://host:port/STREAM`` with the
    side's own ``?js_domain=``, ``js_api_prefix=``, ``subject_prefix=``."""
    import urllib.parse

    from .audit.compare import stream_parts
    from .export.readback import export_parts
    from .nats.connection import ConnectOptions, default_url, redact_url
    from .read.reader import StreamReader

    if Path(text).is_dir():
        return text, export_parts(text), None
    credentials = _credentials(args)
    subject_prefix = credentials.pop("subject_prefix")
    url = args.server
    stream = text
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        stream = parts.path.strip("/")
        if not stream or "/" in stream:
            raise UsageError(f"{redact_url(text)}: give the stream as nats://host:port/STREAM")
        url = urllib.parse.urlunsplit(parts._replace(path="", query=""))
        query = dict(urllib.parse.parse_qsl(parts.query))
        unknown = set(query) - {"js_domain", "js_api_prefix", "subject_prefix"}
        if unknown:
            raise UsageError(f"{redact_url(text)}: unknown option(s) {', '.join(sorted(unknown))}")
        subject_prefix = query.pop("subject_prefix", subject_prefix)
        if query:
            credentials.update(js_domain=query.get("js_domain"), js_api_prefix=query.get("js_api_prefix"))
    elif not url and not default_url():
        raise UsageError(f"{text}: no such export directory, and no --server (or $NATS_URL) to find a stream on")
    options = ConnectOptions.from_arguments(url or default_url(), **credentials)
    reader = StreamReader(options, stream, subject_prefix=subject_prefix)
    name = stream if "://" not in text else f"{redact_url(url)}/{stream}"
    return name, stream_parts(reader, progress=_progress(args)), reader


def cmd_compare(args: argparse.Namespace) -> int:
    from .audit.compare import compare_histories
    from .store.sync import run_sync

    async def run() -> Any:
        sides = [_compare_side(text, args) for text in (args.a, args.b)]
        try:
            return await compare_histories(sides[0][1], sides[1][1], names=(sides[0][0], sides[1][0]),
                                           limit=args.limit)
        finally:
            for _, _, reader in sides:
                if reader is not None:
                    await reader.aclose()

    result = run_sync(run())
    if args.json:
        _print_json(result.to_dict())
        return EXIT_OK if result.same else EXIT_FINDINGS
    a, b = (escape(name) for name in result.names)
    matched = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in result.matched.items())
    if result.same:
        print(f"OK: {a} and {b} hold the same history ({matched})")
        return EXIT_OK
    counts = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in result.counts.items() if count)
    print(f"DIFFERENT: A = {a}, B = {b} ({counts}; {matched} match)")
    shown = result.differences.copy()
    shown["message"] = shown["message"].map(escape)
    print(shown.to_string(index=False, max_colwidth=160))
    total = sum(result.counts.values())
    if total > len(shown):
        print(f"... {total - len(shown)} more (raise --limit to list them)")
    return EXIT_FINDINGS


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
    # Checked before the audit (a whole read of the stream): a mistyped
    # directory is named, not created, as cp, tar and pandas do.
    folder = Path(args.out).parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise UsageError(f"--out {args.out}: directory {folder} {what}; create it first")
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
    shown = frame[columns].head(args.limit).assign(
        # Every nanosecond, but as a person reads a time; --json keeps RFC 3339.
        timestamp=lambda rows: rows["timestamp"].map(lambda stamp: human_time(stamp, precise=True)),
        event_type=lambda rows: rows["event_type"].map(escape), event_id=lambda rows: rows["event_id"].map(escape),
        data=lambda rows: rows["data"].map(escape))
    # Exactly --limit rows, then how many there are in all (pandas' max_rows
    # would show limit - 1 rows around a "..." row, and no total).
    print(shown.to_string(index=False, max_colwidth=60))
    actor, total = escape(args.actor_id), len(frame)
    if total > args.limit:
        print(f"the first {args.limit:,} of {total:,} events of actor {actor} (--limit N shows more; --json prints all)")
    else:
        print(f"{_plural(total, 'event')} of actor {actor}")
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from .model.signing import new_seed_file

    out = Path(args.out)
    if not out.parent.is_dir():  # a secret is not left in directories made on the way
        raise UsageError(f"--out {out}: no such directory {out.parent}")
    public = new_seed_file(out)
    if args.json:
        _print_json({"out": str(out), "public_key": public})
    else:
        print(public)
        print(f"wrote the NKey seed to {out} (readable only by you; keep it secret). Sign with "
              f"export --sign {out}; check with verify DIR --signer {public}", file=sys.stderr)
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
    from .model.speedups import status

    parser = _Parser(
        prog="aether-audit", description=DESCRIPTION, epilog=EXIT_CODES + "\n" + EPILOG + "\n" + status() + "\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aether-audit {__version__}\n{status()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                json_help: str = "print one JSON object on stdout") -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=DONE_CODES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _connection_options(sub)
        sub.add_argument("--json", action="store_true", help=json_help)
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

    watch = command("watch", cmd_watch, "follow the stream and print each finding once, as soon as it is certain",
                    "print each finding as one JSON object per line on stdout (JSON Lines), as it is found")
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
    export.add_argument("--compact", action="store_true",
                        help="rewrite each partition's small files into files of about --target-size (offline: "
                             "no server), one commit")
    export.add_argument("--target-size", type=_size, metavar="SIZE",
                        help="size compacted files aim at, in bytes or with K/M/G (default: 128M)")
    export.add_argument("--compact-threshold", type=int, metavar="N",
                        help="--incremental compacts the newest files of partitions holding more than N files (default: 1)")
    export.add_argument("--no-compact", action="store_true", help="--incremental keeps files as written")
    export.add_argument("--vacuum-hours", type=int, metavar="HOURS",
                        help="Delta: after --compact, delete files no version of the last HOURS needs "
                             "(Delta's default retention is 168)")

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

    keygen = commands.add_parser(
        "keygen", help="write a new NKey seed file for --sign and print its public key",
        description="Write a new NKey seed to FILE, readable only by its owner (mode 0600), for export --sign "
                    "and check/watch --sign; print its public key on stdout, the key verify --signer takes. "
                    "An existing FILE is never replaced.", epilog=DONE_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    keygen.add_argument("--out", required=True, metavar="FILE", help="the seed file to create")
    keygen.add_argument("--json", action="store_true", help='print one JSON object on stdout: {"out", "public_key"}')
    keygen.set_defaults(handler=cmd_keygen)
    compare = command("compare", cmd_compare,
                      "two copies of one history (streams, or a stream and an export): every event missing, "
                      "extra or different; exit 1 when they differ")
    compare.epilog = COMPARE_CODES
    compare.add_argument("a", metavar="A", help="an export directory, a stream on --server, or "
                         "nats://host:port/STREAM[?js_domain=D&js_api_prefix=P&subject_prefix=S]")
    compare.add_argument("b", metavar="B", help="the other copy, as A")
    compare.add_argument("--limit", type=int, default=10_000, help="differences to list at most (default: 10000)")

    seed = command("seed", cmd_seed, "write a scenario (a data_samples/ file or its name) through the append API")
    seed.add_argument("scenario", metavar="SCENARIO", help="path, or a name in data_samples/ (e.g. orders, anomalies)")

    report = command("report", cmd_report, "write one self-contained HTML page: summary, findings, plots")
    report.add_argument("--out", required=True, metavar="FILE.html")
    report.add_argument("--rules", metavar="FILE", help="also check these business rules: a rules section and process map")

    history = command("history", cmd_history, "print one actor's history as a table",
                      "print one JSON array on stdout: an object per event, every event (--limit is the table's)")
    history.add_argument("actor_id", metavar="ACTOR_ID")
    history.add_argument("--limit", type=_positive, default=200, metavar="N",
                         help="print the first N events at most, then how many there are in all (default: 200)")

    demo = command("demo", cmd_demo, "start a local server, seed samples, check, export, report")
    demo.add_argument("--out", default="aether-audit-demo", metavar="DIR", help="output directory (default: ./aether-audit-demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aether-audit``; returns the exit code."""
    global _ARGV
    _ARGV = argv
    _warnings_in_one_line()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("aether-audit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `check --json | head`: the reader left. Python's advice (the signal
        # module's docs): point stdout at /dev/null so the flush at exit
        # raises no second error, and exit as a tool killed by SIGPIPE does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except (AuditError, OSError, ValueError) as exc:
        if os.environ.get("AETHER_AUDIT_DEBUG"):
            traceback.print_exc()  # then the one line and exit 2, as without it
        message = error_line(exc)
        if getattr(args, "json", False):
            print(json.dumps({"error": message, "exit_code": EXIT_ERROR}))
        print(f"aether-audit: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _warnings_in_one_line() -> None:
    """Our own warnings (``SpeedupsMissing``) as one line on stderr, as the
    errors are; any other warning is shown as Python shows it."""
    import warnings

    from .model.speedups import SpeedupsMissing

    shown = warnings.showwarning
    if getattr(shown, "aether_audit", False):
        return

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, SpeedupsMissing):
            print(f"aether-audit: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show.aether_audit = True  # type: ignore[attr-defined]
    warnings.showwarning = show


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
