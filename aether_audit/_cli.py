"""``aether-audit``: the command line, a thin layer over the public API.

Every failure the user can fix (wrong URL, missing stream, bad credentials,
unreadable files) is one line on stderr and exit code 2; no traceback unless
``AETHER_AUDIT_DEBUG`` is set. Secrets given as options are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from ._checks import SEVERITIES
from ._errors import AuditError

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

DESCRIPTION = """\
Audit, load and export the aether event store kept in NATS JetStream.

Every command connects with --server (default: $NATS_URL, else an embedded
nats-server started for this command). Reading commands (check, export,
history, report) never write to the stream.
"""

EPILOG = """\
examples:
  aether-audit demo                                  # the whole job on an embedded server
  aether-audit check --server nats://host:4222 --stream events --json
  aether-audit check --server nats://host:4222 --checkpoint audit.ckpt   # reads only what is new
  aether-audit watch --server nats://host:4222 --checkpoint watch.ckpt --json
  aether-audit export --server nats://host:4222 --out ./export --incremental
  aether-audit verify ./export-2026-11-01 ./export-2026-11-27
  aether-audit history order-1042 --server nats://host:4222
"""


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--server", metavar="URL", help="NATS URL(s), comma separated (default: $NATS_URL, else an embedded server)")
    group.add_argument("--stream", default="events", help="stream name as given to the Go store (default: events)")
    group.add_argument("--namespace", metavar="NS", help="the store's namespace (stream becomes NS_STREAM)")
    group.add_argument("--creds", metavar="FILE", help="NATS .creds file (JWT + NKey seed)")
    group.add_argument("--user", help="user name")
    group.add_argument("--password", help="password (or $NATS_PASSWORD; never printed)")
    group.add_argument("--token", help="auth token (or $NATS_TOKEN; never printed)")
    group.add_argument("--nkey", metavar="FILE", help="NKey seed file")
    group.add_argument("--tls-ca", metavar="FILE", help="CA certificate to trust")
    group.add_argument("--tls-cert", metavar="FILE", help="client certificate")
    group.add_argument("--tls-key", metavar="FILE", help="client key")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _credentials(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "user": args.user,
        "password": args.password or os.environ.get("NATS_PASSWORD"),
        "token": args.token or os.environ.get("NATS_TOKEN"),
        "nkey": args.nkey,
        "creds": args.creds,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }


def _store(args: argparse.Namespace) -> Any:
    from ._sync import connect

    return connect(args.server, stream=args.stream, namespace=args.namespace, **_credentials(args))


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# --- commands -------------------------------------------------------------------


def _check_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.clock_skew is not None:
        options["clock_skew"] = timedelta(seconds=args.clock_skew)
    return options


def cmd_check(args: argparse.Namespace) -> int:
    checks = args.checks.split(",") if args.checks else None
    with _store(args) as store:
        report = store.audit(checks, checkpoint=args.checkpoint, keep_frames=False, progress=_progress(args),
                             **_check_options(args))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report)
        if report.checkpoint is not None:
            read = report.read
            span = "nothing new" if read["from_seq"] is None else f"sequences {read['from_seq']}..{read['to_seq']}"
            print(f"checkpoint {report.checkpoint}: read {span}")
    threshold = SEVERITIES.index(args.fail_on)
    failing = report.findings["severity"].isin(SEVERITIES[: threshold + 1]).any()
    return EXIT_FINDINGS if failing else EXIT_OK


def _printable(text: str) -> str:
    """Text with control characters from the data escaped (``\\x1b``...)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from ._store import connect_async

    checks = args.checks.split(",") if args.checks else None

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
            old = stores.pop()
            try:
                await old.aclose()
            except AuditError:
                pass
            stores.append(fresh)
            return fresh

        try:
            async for finding in stores[0].watch(checks, checkpoint=args.checkpoint, interval=args.interval,
                                                 settle=args.settle, stop=stop, reopen=reopen, **_check_options(args)):
                if args.json:
                    print(json.dumps(finding), flush=True)
                else:
                    print(_printable(f"{finding['severity']:<7} {finding['code']:<26} seq {finding['stream_seq']} "
                                       f"{finding['message']}"), flush=True)
        finally:
            for store in stores:
                try:
                    await store.aclose()
                except AuditError:
                    pass

    asyncio.run(follow())
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with _store(args) as store:
        manifest = store.export_parquet(args.out, incremental=args.incremental, progress=_progress(args))
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
    from ._export import verify_exports

    result = verify_exports(args.old_dir, args.new_dir)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.summary)
        if not result.ok:
            print(result.problems.to_string(index=False, max_rows=200))
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
    with _store(args) as store:
        report = store.audit(progress=_progress(args))
    report.write_html(Path(args.out))
    print(f"wrote {args.out}: {report}")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with _store(args) as store:
        frame = store.history(args.actor_id)
    if args.json:
        rows = json.loads(frame.to_json(orient="records", date_format="iso", date_unit="ns"))
        _print_json(rows)
        return EXIT_OK
    if frame.empty:
        print(f"no events for actor {args.actor_id} in stream {store.stream_name}")
        return EXIT_OK
    columns = ["stream_seq", "version", "event_type", "timestamp", "event_id", "data"]
    print(frame[columns].to_string(index=False, max_colwidth=60, max_rows=args.limit))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    summary = run_demo(Path(args.out), url=args.server, progress=_progress(args))
    if args.json:
        _print_json(summary)
    else:
        for line in summary.get("lines", []):
            print(line)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aether-audit", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _connection_options(sub)
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sub.set_defaults(handler=handler)
        return sub

    check = command("check", cmd_check, "run every integrity check; exit 1 on findings at or above --fail-on")
    check.add_argument("--fail-on", choices=SEVERITIES, default="error", help="lowest severity that fails (default: error)")
    check.add_argument("--checks", metavar="CODES", help="comma-separated subset of checks to run")
    check.add_argument("--clock-skew", type=float, metavar="SECONDS", help="clock_skew threshold (default: 300)")
    check.add_argument("--checkpoint", metavar="FILE",
                       help="read only what is newer than FILE, report the cumulative findings, update FILE")

    watch = command("watch", cmd_watch, "follow the stream and print each finding once, as soon as it is certain")
    watch.add_argument("--checkpoint", metavar="FILE", help="resume from FILE and keep it current")
    watch.add_argument("--checks", metavar="CODES", help="comma-separated subset of checks to run")
    watch.add_argument("--clock-skew", type=float, metavar="SECONDS", help="clock_skew threshold (default: 300)")
    watch.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="poll interval (default: 0.5)")
    watch.add_argument("--settle", type=float, default=30.0, metavar="SECONDS",
                       help="hold snapshot findings until the snapshot is this old (default: 30)")

    export = command("export", cmd_export, "export events, snapshots and replay errors to Parquet")
    export.add_argument("--out", required=True, metavar="DIR", help="export directory")
    export.add_argument("--incremental", action="store_true", help="add only what is newer than the manifest's last_seq")

    verify = commands.add_parser("verify", help="check that an older export is still the start of a newer one",
                                 description="Exit 0 when OLD_DIR's history is, event for event, the start of NEW_DIR's; 1 when not.")
    verify.add_argument("old_dir", metavar="OLD_DIR")
    verify.add_argument("new_dir", metavar="NEW_DIR")
    verify.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    verify.set_defaults(handler=cmd_verify)

    seed = command("seed", cmd_seed, "write a scenario (a data_samples/ file or its name) through the append API")
    seed.add_argument("scenario", metavar="SCENARIO", help="path, or a name in data_samples/ (e.g. orders, anomalies)")

    report = command("report", cmd_report, "write one self-contained HTML page: summary, findings, plots")
    report.add_argument("--out", required=True, metavar="FILE.html")

    history = command("history", cmd_history, "print one actor's history as a table")
    history.add_argument("actor_id", metavar="ACTOR_ID")
    history.add_argument("--limit", type=int, default=200, help="rows to print at most (default: 200)")

    demo = command("demo", cmd_demo, "start a local server, seed samples, check, export, report")
    demo.add_argument("--out", default="aether-audit-demo", metavar="DIR", help="output directory (default: ./aether-audit-demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aether-audit``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("aether-audit: interrupted", file=sys.stderr)
        return 130
    except (AuditError, OSError, ValueError) as exc:
        if os.environ.get("AETHER_AUDIT_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"aether-audit: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
