"""`dialplan provision`, `doctor`, `call` and `campaign` as an operator runs them: real
subprocesses, a fleet config file, and the local LiveKit server API.

Stays on the stand-in: the CLI's argument and error paths in seconds; the same commands
against the real stack: tests/phone.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.cli_run import Run, run_dialplan
from tests.fleet.livekit_server import LiveKitTestServer, SipFailure

FLEET_TOML = """
[worker]
agent_name = "dialplan"
bots = "bots"

[results]
outbox = "outbox.db"

[[trunks.inbound]]
name = "main"
numbers = ["+15550100"]
allowed_addresses = ["203.0.113.0/24"]

[[trunks.outbound]]
name = "carrier"
address = "sip.carrier.example"
numbers = ["+15550100"]

[[routes]]
number = "+15550100"
bot = "line"
"""


# built-in providers only: the CLI runs in a subprocess without the tests' fake voices
OFFLINE_BOT = """
[prompt]
system = "You call people back."
greeting = "Hello {{ name }}."
[variables]
name = "there"
[llm]
provider = "rules"
default = "Thanks, goodbye."
"""


@pytest.fixture
def fleet_dir(
    tmp_path: Path, livekit_server: LiveKitTestServer, monkeypatch: pytest.MonkeyPatch
) -> Path:
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "line.toml").write_text(OFFLINE_BOT)
    (tmp_path / "dialplan.toml").write_text(FLEET_TOML)
    for name, value in livekit_server.env().items():
        monkeypatch.setenv(name, value)
    return tmp_path


async def dialplan(cwd: Path, *args: str) -> Run:
    # in a thread: the local LiveKit server runs on this test's event loop
    return await asyncio.to_thread(run_dialplan, *args, cwd=cwd)


def stored(path: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as db:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM records")]


async def test_provision_is_idempotent_and_doctor_follows_it(
    fleet_dir: Path, livekit_server: LiveKitTestServer
) -> None:
    before = await dialplan(fleet_dir, "doctor")
    assert before.returncode == 1
    assert "+15550100" in before.stdout and "dialplan provision" in before.stdout

    dry = await dialplan(fleet_dir, "provision", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "create" in dry.stdout and livekit_server.writes() == []

    first = await dialplan(fleet_dir, "provision")
    assert first.returncode == 0, first.stderr
    written = len(livekit_server.writes())
    assert written == 3  # an inbound trunk, an outbound trunk, a dispatch rule
    (rule,) = livekit_server.sip.rules.values()
    assert rule.rule.dispatch_rule_individual.room_prefix == "call_"
    assert rule.room_config.agents[0].agent_name == "dialplan"
    assert json.loads(rule.room_config.agents[0].metadata)["bot"] == "line"

    again = await dialplan(fleet_dir, "provision")
    assert again.returncode == 0 and len(livekit_server.writes()) == written
    assert "create" not in again.stdout and "update" not in again.stdout

    after = await dialplan(fleet_dir, "doctor")
    assert after.returncode == 0, after.stdout


async def test_call_busy_exits_non_zero_and_leaves_a_record(
    fleet_dir: Path, livekit_server: LiveKitTestServer
) -> None:
    assert (await dialplan(fleet_dir, "provision")).returncode == 0
    livekit_server.script_dial("+15550123", SipFailure(486, "Busy Here"))
    result = await dialplan(fleet_dir, "call", "line", "--to", "+15550123", "--var", "name=Ada")
    assert result.returncode == 3, result.stderr
    assert "not answered: no_answer (SIP 486 Busy Here)" in result.stdout
    (record,) = stored(fleet_dir / "outbox.db")
    assert record["disconnected_by"] == "no_answer" and record["sip_status"] == 486
    assert record["variables"] == {"name": "Ada"}


async def test_call_refuses_an_unknown_bot_before_dialling(
    fleet_dir: Path, livekit_server: LiveKitTestServer
) -> None:
    result = await dialplan(fleet_dir, "call", "nobody", "--to", "+15550123")
    assert result.returncode == 1 and "nobody" in result.stderr
    assert livekit_server.calls("CreateSIPParticipant") == []


async def test_campaign_run_retries_busy_rows_and_resumes_as_done(
    fleet_dir: Path, livekit_server: LiveKitTestServer
) -> None:
    assert (await dialplan(fleet_dir, "provision")).returncode == 0
    (fleet_dir / "list.csv").write_text(
        "phone,name\n+15550001,Ada\n+15550002,Grace\nnot-a-number,Linus\n"
    )
    livekit_server.script_dial("+15550002", SipFailure(486, "Busy Here"))

    async def hang_up_answered() -> None:
        # the callees who answer talk for a moment, then hang up
        while True:
            for room in list(livekit_server.rooms.by_name):
                for participant in livekit_server.participants(room):
                    if participant.attributes.get("sip.callStatus") == "active":
                        await asyncio.sleep(0.1)
                        livekit_server.hang_up(room, participant.identity)
            await asyncio.sleep(0.05)

    hanger = asyncio.create_task(hang_up_answered())
    try:
        args = ("list.csv", "--bot", "line", "--concurrency", "2")
        result = await dialplan(
            fleet_dir, "campaign", "run", *args, "--max-attempts", "2", "--retry-delay", "0.1s"
        )
    finally:
        hanger.cancel()
    assert result.returncode == 0, result.stderr
    assert "3/3" in result.stderr  # the progress line
    dials = [d.number for d in livekit_server.dials]
    assert sorted(dials) == ["+15550001", "+15550002", "+15550002"]
    (answered,) = [
        c
        for c in livekit_server.calls("CreateDispatch")
        if json.loads(c.metadata)["dial"]["to"] == "+15550001"
    ]
    assert json.loads(answered.metadata)["variables"] == {"name": "Ada"}
    busy = [r for r in stored(fleet_dir / "outbox.db") if r["callee"] == "+15550002"]
    assert [r["sip_status"] for r in busy] == [486, 486]

    status = await dialplan(fleet_dir, "campaign", "status", *args[:3])
    assert status.returncode == 0
    assert "3/3 done" in status.stdout and "answered 1, no answer 1" in status.stdout
    assert "not-a-number" in status.stdout

    again = await dialplan(fleet_dir, "campaign", "run", *args)
    assert again.returncode == 0 and len(livekit_server.dials) == 3  # nothing left to call


async def test_call_refuses_a_number_that_is_not_one_before_anything(
    fleet_dir: Path, livekit_server: LiveKitTestServer
) -> None:
    result = await dialplan(fleet_dir, "call", "line", "--to", "hello")
    assert result.returncode == 2
    assert "--to: 'hello' is not a phone number; write it in E.164, e.g. +15550100" in (
        result.stderr
    )
    assert livekit_server.calls("CreateRoom") == [] and livekit_server.dials == []


@pytest.mark.parametrize("problem", ["wrong secret", "unreachable"])
async def test_a_call_the_server_refuses_or_cannot_take_fails_cleanly_with_a_record(
    problem: str,
    fleet_dir: Path,
    livekit_server: LiveKitTestServer,
    monkeypatch: pytest.MonkeyPatch,
    unused_tcp_port: int,
) -> None:
    assert (await dialplan(fleet_dir, "provision")).returncode == 0
    if problem == "wrong secret":
        monkeypatch.setenv("LIVEKIT_API_SECRET", "not-the-secret-of-this-server-at-all")
        expected = "LiveKit refused the API key and secret (HTTP 401)"
    else:
        monkeypatch.setenv("LIVEKIT_URL", f"http://127.0.0.1:{unused_tcp_port}")
        expected = "cannot reach LiveKit ("
    result = await dialplan(fleet_dir, "call", "line", "--to", "+15550123")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "call failed: error (dial failed: " in result.stderr and expected in result.stderr
    (record,) = stored(fleet_dir / "outbox.db")
    assert record["disconnected_by"] == "error" and expected in record["cause"]
    assert record["callee"] == "+15550123"


async def test_a_campaign_row_without_a_required_variable_is_refused_not_dialled(
    fleet_dir: Path, livekit_server: LiveKitTestServer
) -> None:
    assert (await dialplan(fleet_dir, "provision")).returncode == 0
    (fleet_dir / "bots" / "line.toml").write_text(
        OFFLINE_BOT.replace('name = "there"', "name = { required = true }")
    )
    (fleet_dir / "list.csv").write_text("phone,name\n+15550001,\n+1 555 0002,Ada\n")
    livekit_server.script_dial("+15550002", SipFailure(486, "Busy Here"))
    args = ("list.csv", "--bot", "line", "--max-attempts", "1")
    result = await dialplan(fleet_dir, "campaign", "run", *args)
    assert result.returncode == 0, result.stderr
    assert [d.number for d in livekit_server.dials] == ["+15550002"]
    status = await dialplan(fleet_dir, "campaign", "status", *args[:3])
    assert "no value for the bot's required variable(s) name" in status.stdout


async def test_a_one_off_call_delivers_its_record_before_exiting_or_says_it_did_not(
    fleet_dir: Path, livekit_server: LiveKitTestServer, unused_tcp_port: int
) -> None:
    assert (await dialplan(fleet_dir, "provision")).returncode == 0
    config = fleet_dir / "dialplan.toml"
    config.write_text(
        config.read_text().replace(
            'outbox = "outbox.db"', 'outbox = "outbox.db"\njsonl = "records.jsonl"'
        )
    )
    livekit_server.script_dial("+15550123", SipFailure(486, "Busy Here"))
    delivered = await dialplan(fleet_dir, "call", "line", "--to", "+15550123")
    assert delivered.returncode == 3
    (line,) = (fleet_dir / "records.jsonl").read_text().splitlines()
    assert json.loads(line)["sip_status"] == 486  # written before the command returned
    assert "not delivered yet" not in delivered.stderr

    # a webhook that is down: the record stays in the outbox, and the command says so
    config.write_text(
        config.read_text().replace(
            'jsonl = "records.jsonl"', f'webhooks = ["http://127.0.0.1:{unused_tcp_port}/hook"]'
        )
    )
    pending = await dialplan(fleet_dir, "call", "line", "--to", "+15550123")
    assert pending.returncode == 3
    assert "note: 1 record(s) not delivered yet (webhook" in pending.stderr
    assert "dialplan outbox list" in pending.stderr
