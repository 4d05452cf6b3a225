"""`dialplan outbox list|retry|replay|deliver`, through a parser built the way runtime/cli.py
builds its own, with main()'s error handling."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime.cli_args import UsageError
from runtime.cli_outbox import add_outbox_commands
from runtime.errors import DialplanError
from runtime.outbox import Outbox
from tests.sample_records import sample_record
from tests.webhook_receiver import SECRET, Receiver

JSONL_SINK_FILE = "results.jsonl"


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


def outbox_command(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """``dialplan outbox ARGS...`` as runtime.cli.main runs a command."""
    parser = argparse.ArgumentParser(prog="dialplan")
    add_outbox_commands(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["outbox", *args])
    try:
        status = parsed.handler(parsed)
    except UsageError as exc:
        print(f"dialplan: {exc}", file=sys.stderr)
        status = 2
    except DialplanError as exc:
        print(f"dialplan: error: {exc}", file=sys.stderr)
        status = 1
    captured = capsys.readouterr()
    return Ran(status, captured.out, captured.err)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()


async def fill(db: Path, sinks: list[str], *session_ids: str) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with Outbox(db, sinks=sinks) as outbox:
        for hours, session_id in enumerate(session_ids):
            ended = now - dt.timedelta(hours=hours, minutes=30)
            await outbox.put(sample_record(session_id, ended_at=ended))


async def test_list_shows_each_delivery(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sinks = ["webhook:https://crm.example/calls", "jsonl:/var/calls.jsonl"]
    await fill(db, sinks, "call-ok", "call-dead")
    with Outbox(db, sinks=sinks) as outbox:
        await outbox.put(sample_record("call-held"), held=True)
        for delivery in await outbox.due(sinks, limit=10):
            if delivery.session_id == "call-ok":
                await outbox.mark_delivered(delivery)
            elif delivery.sink.startswith("webhook"):
                await outbox.mark_failed(delivery, "HTTP 422: missing\nfield", retry_at=None)

    ran = outbox_command(capsys, "list", "--db", str(db))
    assert ran.status == 0, ran.err
    header, *rows = ran.out.splitlines()
    assert header.split() == [
        "SESSION_ID",
        "BOT",
        "ENDED",
        "DISCONNECTED_BY",
        "SINK",
        "STATE",
        "ATTEMPTS",
        "NOTE",
    ]
    cells = [row.split(None, 7) for row in rows]
    assert [c[0] for c in cells if c[0].startswith("call-")] == [
        "call-ok",
        "call-dead",
        "call-held",
    ]
    assert cells[0][1:4] == ["receptionist", cells[0][2], "customer"]
    assert "jsonl:/var/calls.jsonl delivered 1 at " in " ".join(rows[0].split())
    assert "webhook:https://crm.example/calls dead 1 HTTP 422: missing field" in " ".join(
        ran.out.split()
    )
    assert "held - post-call analysis running" in " ".join(rows[-1].split())

    dead = outbox_command(capsys, "list", "--db", str(db), "--state", "dead")
    assert [line.split()[0] for line in dead.out.splitlines()[1:]] == [
        "call-dead",
        "webhook:https://crm.example/calls",
    ]
    limited = outbox_command(capsys, "list", "--db", str(db), "--limit", "1")
    assert len(limited.out.splitlines()) == 3  # header and call-ok's two sinks


def test_the_default_outbox_comes_from_the_environment(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIALPLAN_OUTBOX", str(db))
    ran = outbox_command(capsys, "list")
    assert ran.status == 1
    assert ran.err == (
        f"dialplan: error: {db}: no outbox here (the call server creates it; pass --db PATH "
        "or set DIALPLAN_OUTBOX to the file it writes)\n"
    )
    Outbox(db).close()
    ran = outbox_command(capsys, "list")
    assert (ran.status, ran.out) == (0, f"no records in {db}\n")


async def test_retry_makes_a_dead_delivery_due(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sinks = ["webhook:https://crm.example/calls"]
    await fill(db, sinks, "call-1")
    with Outbox(db, sinks=sinks) as outbox:
        [delivery] = await outbox.due(sinks, limit=1)
        await outbox.mark_failed(delivery, "HTTP 410: gone", retry_at=None)

    ran = outbox_command(capsys, "retry", "call-1", "--db", str(db))
    assert (ran.status, ran.out) == (0, "call-1: 1 delivery due now\n")
    with Outbox(db) as outbox:
        entry = outbox.entry("call-1")
    assert entry is not None
    assert [(s.state, s.attempts, s.last_error) for s in entry.deliveries] == [("pending", 0, None)]

    unknown = outbox_command(capsys, "retry", "call-9", "--db", str(db))
    assert unknown.status == 1
    assert f"{db}: no record with session_id 'call-9'" in unknown.err


async def test_replay_since_a_duration_or_a_time(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sinks = ["jsonl:/var/calls.jsonl"]
    await fill(db, sinks, "call-recent", "call-1h", "call-2h")  # ended 0.5, 1.5, 2.5 h ago
    with Outbox(db, sinks=sinks) as outbox:
        for delivery in await outbox.due(sinks, limit=10):
            await outbox.mark_delivered(delivery)

    ran = outbox_command(capsys, "replay", "--since", "2h", "--db", str(db))
    assert ran.status == 0
    assert ran.out.startswith("re-queued 2 record(s) that ended since ")
    with Outbox(db) as outbox:
        assert {e.session_id for e in outbox.entries("pending")} == {"call-recent", "call-1h"}

    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)).isoformat()
    assert outbox_command(capsys, "replay", "--since", since, "--db", str(db)).out.startswith(
        "re-queued 3 record(s)"
    )
    bad = outbox_command(capsys, "replay", "--since", "last tuesday", "--db", str(db))
    assert bad.status == 2
    assert "--since 'last tuesday': write a duration (30m, 2h, 1h30m) or an ISO time" in bad.err


async def test_deliver_once_to_a_webhook(
    db: Path,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIALPLAN_WEBHOOK_SECRET", SECRET)
    await fill(db, [f"webhook:{receiver.url}"], "call-1", "call-2")
    args = ("deliver", "--once", "--db", str(db), "--webhook", receiver.url)
    ran = await asyncio.to_thread(outbox_command, capsys, *args)
    assert ran.status == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == f"delivering from {db} to webhook:{receiver.url}"
    progress = sorted(line.split()[:5] for line in lines[1:3])
    assert progress == [
        ["delivered", "call-1", f"webhook:{receiver.url}", "attempt", "1"],
        ["delivered", "call-2", f"webhook:{receiver.url}", "attempt", "1"],
    ]
    assert lines[3] == "delivered 2, failed attempts 0 (retried later), dead 0"
    assert receiver.accepted == {"call-1": 1, "call-2": 1}
    assert receiver.unsigned == 0


async def test_deliver_without_sinks_drains_what_is_pending(
    db: Path,
    tmp_path: Path,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DIALPLAN_WEBHOOK_SECRET", raising=False)
    receiver.answer = lambda key, nth: 422
    receiver.secret = None
    jsonl = tmp_path / JSONL_SINK_FILE
    await fill(db, [f"webhook:{receiver.url}", f"jsonl:{jsonl}"], "call-1")
    ran = await asyncio.to_thread(outbox_command, capsys, "deliver", "--once", "--db", str(db))
    assert ran.status == 1
    assert "dead       call-1  webhook:" in ran.out
    assert "attempt 1: HTTP 422: receiver says no" in ran.out
    assert ran.out.endswith("delivered 1, failed attempts 0 (retried later), dead 1\n")
    assert "no secret, so requests are not signed" in caplog.text
    assert [json.loads(line)["session_id"] for line in jsonl.read_text().splitlines()] == ["call-1"]
    again = await asyncio.to_thread(outbox_command, capsys, "deliver", "--once", "--db", str(db))
    assert (again.status, again.out) == (0, f"nothing pending in {db}\n")


def test_deliver_refuses_a_bad_webhook_url(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Outbox(db).close()
    ran = outbox_command(capsys, "deliver", "--db", str(db), "--webhook", "crm.example/calls")
    assert ran.status == 1
    assert "webhook 'crm.example/calls': not an http(s) URL" in ran.err
