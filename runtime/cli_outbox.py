"""`dialplan outbox ...`: look into the result outbox, retry or replay deliveries, and run
the deliverer in the foreground. ``--postgres DSN`` does the same on a fleet's shared
PostgreSQL store."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli_args import UsageError
from runtime.delivery import (
    OUTBOX_ENV,
    WEBHOOK_SECRET_ENV,
    Deliverer,
    DeliveryConfig,
    DeliveryOutcome,
    build_sinks,
    default_outbox_path,
)
from runtime.durations import parse_duration
from runtime.outbox import Outbox, OutboxEntry, SinkStatus
from runtime.record_store import RecordStore
from runtime.sinks import HookSink, JsonlSink, Sink, WebhookSink

if TYPE_CHECKING:
    from runtime.registry import Registry

STATES = ("pending", "delivered", "dead", "held")
RESULTS_DSN_ENV = "DIALPLAN_RESULTS_DSN"
ERROR_COLUMN_CHARS = 60


def add_outbox_commands(commands: Any) -> None:
    outbox = commands.add_parser(
        "outbox", help="the durable result outbox: list, retry, replay, deliver"
    )
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="records and the state of each delivery")
    _db_argument(listing)
    listing.add_argument("--state", choices=STATES, help="only records with a delivery so")
    listing.add_argument("--limit", type=int, default=50, help="at most N records (default 50)")
    listing.set_defaults(handler=cmd_list)

    retry = actions.add_parser("retry", help="make a record's dead or pending deliveries due now")
    retry.add_argument("session_id", metavar="SESSION_ID")
    _db_argument(retry)
    retry.set_defaults(handler=cmd_retry)

    replay = actions.add_parser(
        "replay", help="send every record that ended since WHEN again, to every sink"
    )
    replay.add_argument(
        "--since",
        required=True,
        metavar="WHEN",
        help="a duration back from now (30m, 2h, 1h30m) or an ISO time (UTC unless it "
        "has an offset)",
    )
    _db_argument(replay)
    replay.set_defaults(handler=cmd_replay)

    deliver = actions.add_parser(
        "deliver",
        help="run the deliverer in the foreground",
        description="Deliver due records. Without --webhook, --jsonl or --hooks: to every "
        "sink the outbox has pending deliveries for.",
    )
    _db_argument(deliver)
    deliver.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help=f"deliver to this webhook (repeatable; signed with ${WEBHOOK_SECRET_ENV})",
    )
    deliver.add_argument("--jsonl", type=Path, metavar="PATH", help="deliver to this JSONL file")
    deliver.add_argument(
        "--hooks", action="store_true", help="deliver to plugins' deliver_result hooks"
    )
    deliver.add_argument(
        "--once",
        action="store_true",
        help="stop when nothing is due (retries stay pending); exit 1 if any attempt failed",
    )
    deliver.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    deliver.set_defaults(handler=cmd_deliver)


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        default=default_outbox_path(),
        help=f"the outbox file (default: ${OUTBOX_ENV} or ./dialplan-outbox.db)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(RESULTS_DSN_ENV) or None,
        metavar="DSN",
        help=f"a fleet's shared PostgreSQL store instead of the file (default: "
        f"${RESULTS_DSN_ENV}); --db is not used then",
    )


def open_outbox(args: argparse.Namespace) -> RecordStore:
    """The store the command names, which must exist already."""
    if args.postgres:
        from runtime.pg_outbox import PostgresOutbox  # psycopg is an optional extra

        return PostgresOutbox(args.postgres, create=False)
    return Outbox(args.db, create=False)


# -- commands --------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    with closing(open_outbox(args)) as outbox:
        entries = outbox.entries(args.state, args.limit)
    if not entries:
        print(f"no records{f' with state {args.state}' if args.state else ''} in {outbox.path}")
        return 0
    for line in table(entries):
        print(line)
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with closing(open_outbox(args)) as outbox:
        count = outbox.retry(args.session_id)
        entry = outbox.entry(args.session_id)
    assert entry is not None  # retry raised otherwise
    if count:
        print(f"{args.session_id}: {count} deliver{'y' if count == 1 else 'ies'} due now")
    elif entry.held:
        print(f"{args.session_id}: held (post-call analysis has not finished); nothing to retry")
    elif entry.deliveries:
        print(f"{args.session_id}: every delivery is delivered (`outbox replay` sends again)")
    else:
        print(f"{args.session_id}: no deliveries (no sink was configured when it was stored)")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    since = parse_since(args.since)
    with closing(open_outbox(args)) as outbox:
        count = outbox.replay(since)
    print(f"re-queued {count} record(s) that ended since {_utc(since)}")
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    secret = os.environ.get(WEBHOOK_SECRET_ENV) or None
    config = DeliveryConfig(
        outbox_path=args.db,
        postgres_dsn=args.postgres,
        webhooks=args.webhook,
        webhook_secret=secret,
        jsonl_path=args.jsonl,
        hooks=args.hooks,
        timeout=args.timeout,
    )
    with closing(open_outbox(args)) as outbox:
        if args.webhook or args.jsonl or args.hooks:
            sinks = build_sinks(config, _registry() if args.hooks else None)
            if args.hooks and not any(isinstance(sink, HookSink) for sink in sinks):
                raise UsageError("--hooks: no installed plugin implements deliver_result")
        else:
            sinks = sinks_named(pending_sinks(outbox), secret, timeout=args.timeout)
            if not sinks:
                print(f"nothing pending in {outbox.path}")
                return 0
        deliverer = Deliverer(
            outbox,
            sinks,
            policy=config.retry_policy,
            timeout=config.timeout,
            concurrency=config.concurrency,
            on_outcome=show_outcome,
        )
        names = ", ".join(sink.name for sink in sinks)
        print(f"delivering from {outbox.path} to {names}", flush=True)
        waiting = pending_sinks(outbox)
        if waiting and not set(waiting) & {sink.name for sink in sinks}:
            print(
                f"note: nothing is pending for these sinks; pending deliveries are for "
                f"{', '.join(waiting)} (leave out --webhook/--jsonl/--hooks to deliver those)",
                file=sys.stderr,
            )
        asyncio.run(_deliver(deliverer, once=args.once))
    progress = deliverer.progress
    print(
        f"delivered {progress.delivered}, failed attempts {progress.retrying} "
        f"(retried later), dead {progress.dead}"
    )
    return 0 if not (progress.retrying or progress.dead) else 1


async def _deliver(deliverer: Deliverer, *, once: bool) -> None:
    if once:
        try:
            await deliverer.run_until_idle()
        finally:
            await deliverer.aclose()
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deliverer.start()
    try:
        await stop.wait()
    finally:
        await deliverer.aclose()


# -- helpers ---------------------------------------------------------------------------


def parse_since(text: str) -> dt.datetime:
    """``2h`` (back from now) or an ISO time; a time without an offset is UTC."""
    try:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: write a duration (30m, 2h, 1h30m) or an ISO time "
            "(2025-03-14T09:30:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def pending_sinks(outbox: RecordStore) -> list[str]:
    names = {
        status.sink
        for entry in outbox.entries("pending")
        for status in entry.deliveries
        if status.state == "pending"
    }
    return sorted(names)


def sinks_named(names: Sequence[str], secret: str | None, *, timeout: float) -> list[Sink]:
    """Rebuild sinks from the names their deliveries are stored under."""
    sinks: list[Sink] = []
    for name in names:
        kind, _, where = name.partition(":")
        if kind == "webhook":
            sinks.append(WebhookSink(where, secret, timeout=timeout))
        elif kind == "jsonl":
            sinks.append(JsonlSink(where))
        elif name == HookSink.name:
            sinks.append(HookSink(_registry()))
        else:
            print(f"warning: skipping deliveries to unknown sink {name!r}", file=sys.stderr)
    return sinks


def show_outcome(outcome: DeliveryOutcome) -> None:
    took = f"{outcome.seconds * 1000:.0f} ms"
    where = f"{outcome.session_id}  {outcome.sink}  attempt {outcome.attempt}"
    if outcome.result == "delivered":
        line = f"delivered  {where}  ({took})"
    elif outcome.result == "retry":
        line = f"retry      {where}: {outcome.error}; next in {outcome.retry_in or 0:.1f}s"
    else:
        line = f"dead       {where}: {outcome.error}"
    print(line, flush=True)


def table(entries: Sequence[OutboxEntry]) -> list[str]:
    """One line per delivery; a record's own columns only on its first line."""
    header = ("SESSION_ID", "BOT", "ENDED", "DISCONNECTED_BY", "SINK", "STATE", "ATTEMPTS")
    rows: list[tuple[str, ...]] = []
    for entry in entries:
        record = (
            entry.session_id,
            entry.bot_id,
            _utc(entry.ended_at) if entry.ended_at else "-",
            entry.disconnected_by or "-",
        )
        if entry.held:
            rows.append((*record, "-", "held", "-", "post-call analysis running"))
        elif not entry.deliveries:
            rows.append((*record, "-", "-", "-", "no sink configured"))
        for index, status in enumerate(() if entry.held else entry.deliveries):
            first = record if index == 0 else ("",) * len(record)
            rows.append((*first, status.sink, status.state, str(status.attempts), _note(status)))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  NOTE"]
    for row in rows:
        cells = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
        lines.append((cells + "  " + row[-1]).rstrip())
    return lines


def _note(status: SinkStatus) -> str:
    if status.state == "delivered" and status.delivered_at is not None:
        return f"at {_utc(dt.datetime.fromtimestamp(status.delivered_at, dt.timezone.utc))}"
    note = ""
    if status.state == "pending" and status.attempts:
        wait = status.next_attempt_at - time.time()
        note = f"next in {wait:.0f}s; " if wait > 0 else "due; "
    if status.last_error:
        error = " ".join(status.last_error.split())
        if len(error) > ERROR_COLUMN_CHARS:
            error = error[: ERROR_COLUMN_CHARS - 1] + "…"
        note += error
    return note.rstrip("; ")


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _registry() -> Registry:
    from runtime.registry import load_registry

    registry = load_registry()
    for failure in registry.failures:
        print(f"warning: {failure}", file=sys.stderr)
    return registry
