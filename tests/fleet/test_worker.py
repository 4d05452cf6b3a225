"""The worker end to end: a real livekit-agents AgentServer registered with a local server
speaking LiveKit's agent protocol, offered jobs, running calls on its threads, reporting
itself full at capacity, hot-reloading bots, and every record in a real SQLite outbox.

Stays on the stand-in: capacity at exactly full and reload timing on demand; two real
workers on the real server: tests/phone/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from livekit.protocol import agent

from runtime.call_results import CallResults
from runtime.delivery import DeliveryConfig, open_delivery
from runtime.fleet.config import FleetConfig, WorkerSettings
from runtime.fleet.worker import CredentialsMissing, Worker
from runtime.registry import load_registry
from tests.cli_run import run_dialplan
from tests.fleet.agent_dispatcher import AgentDispatcher
from tests.fleet.local_line import LocalLine
from tests.fleet.test_room_call import SIP_CALL, write_bot
from tests.voice_fakes import FakeVoicePlugin


class Lines:
    """The line factory: one LocalLine per job, the party speaking at ``speech_at``."""

    def __init__(self, speech_at: tuple[float, ...] = (1.5,)) -> None:
        self.speech_at = speech_at
        self.made: list[LocalLine] = []
        self._lock = threading.Lock()

    def __call__(self, ctx: Any) -> LocalLine:
        line = LocalLine(ctx.job.room.name, SIP_CALL, speech_at=self.speech_at)
        with self._lock:
            self.made.append(line)
        return line


@pytest.fixture
def fast_status(monkeypatch: pytest.MonkeyPatch) -> None:
    # livekit reports worker status every 2.5 s; tests want to see "full" at once
    monkeypatch.setattr("livekit.agents.worker.UPDATE_STATUS_INTERVAL", 0.1)


@pytest.fixture
async def start_worker(
    tmp_path: Path,
    agent_dispatcher: AgentDispatcher,
    fast_status: None,
) -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(lines: Lines, **options: Any) -> Worker:
        registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin())])
        outbox, deliverer = open_delivery(
            DeliveryConfig(outbox_path=tmp_path / "outbox.db"), registry
        )
        settings = WorkerSettings(host="127.0.0.1", port=0)
        worker = Worker(
            bots=tmp_path / "bots",
            config=FleetConfig(worker=settings),
            registry=registry,
            results=CallResults(registry, outbox, deliverer),
            line_factory=lines,
            env=agent_dispatcher.worker_env,
            **options,
        )
        ready = asyncio.Event()
        task = asyncio.create_task(worker.run(ready=ready.set))
        await asyncio.wait_for(ready.wait(), 10)
        await agent_dispatcher.wait_worker("dialplan", timeout=10)
        running.append((worker, task))
        return worker

    yield start
    for worker, task in running:
        worker.stop()
        await asyncio.wait_for(task, 30)


def outbox_records(path: Path) -> list[dict[str, Any]]:
    """The records as the outbox holds them on disk (finished ones, not held)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT body FROM records WHERE held = 0").fetchall()
    return [json.loads(body) for (body,) in rows]


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_dispatched_job_becomes_a_call_with_a_durable_record(
    tmp_path: Path,
    agent_dispatcher: AgentDispatcher,
    start_worker: Callable[..., Any],
) -> None:
    write_bot(tmp_path / "bots")
    lines = Lines()
    await start_worker(lines)
    offer = await agent_dispatcher.dispatch("call_w1", json.dumps({"bot": "line"}), "dialplan")
    assert offer.accepted and offer.participant_attributes["dialplan.worker"]
    await agent_dispatcher.wait_job_status(offer.job_id, agent.JobStatus.JS_SUCCESS, timeout=20)
    line = lines.made[0]
    assert line.hung_up.is_set() and line.session_started_at is not None
    assert offer.answered_at is not None and line.session_started_at > offer.answered_at
    await wait_for(lambda: len(outbox_records(tmp_path / "outbox.db")) == 1)
    (record,) = outbox_records(tmp_path / "outbox.db")
    assert record["bot_id"] == "line" and record["disconnected_by"] == "bot"
    assert record["transport"] == "sip" and record["variables"]["customer_id"] == "C-42"


async def test_a_full_worker_reports_itself_full_and_refuses_more_jobs(
    tmp_path: Path,
    agent_dispatcher: AgentDispatcher,
    start_worker: Callable[..., Any],
) -> None:
    write_bot(tmp_path / "bots")
    lines = Lines(speech_at=())  # the party stays on the line until it leaves
    worker = await start_worker(lines, max_concurrent_calls=1)
    first = await agent_dispatcher.dispatch("call_f1", json.dumps({"bot": "line"}), "dialplan")
    assert first.accepted
    await wait_for(lambda: worker.active_calls == 1)
    await agent_dispatcher.wait_status(lambda s: s.status == agent.WorkerStatus.WS_FULL)
    second = await agent_dispatcher.dispatch("call_f2", json.dumps({"bot": "line"}), "dialplan")
    assert not second.accepted  # never accepted, so never half-started
    assert len(lines.made) == 1
    lines.made[0].leave()
    await agent_dispatcher.wait_job_status(first.job_id, agent.JobStatus.JS_SUCCESS, timeout=20)
    await agent_dispatcher.wait_status(lambda s: s.status == agent.WorkerStatus.WS_AVAILABLE)
    third = await agent_dispatcher.dispatch("call_f3", json.dumps({"bot": "line"}), "dialplan")
    assert third.accepted
    await wait_for(lambda: len(lines.made) == 2 and lines.made[1].bound.is_set())
    lines.made[1].leave()
    await agent_dispatcher.wait_job_status(third.job_id, agent.JobStatus.JS_SUCCESS, timeout=20)
    records = outbox_records(tmp_path / "outbox.db")
    assert sorted(r["disconnected_by"] for r in records) == ["customer", "customer"]


async def test_start_watch_reloads_bots_for_the_next_call(
    tmp_path: Path,
    agent_dispatcher: AgentDispatcher,
    start_worker: Callable[..., Any],
) -> None:
    write_bot(tmp_path / "bots")
    lines = Lines()
    worker = await start_worker(lines, watch=True)
    before = worker.catalog().get("line").version
    first = await agent_dispatcher.dispatch("call_v1", json.dumps({"bot": "line"}), "dialplan")
    await agent_dispatcher.wait_job_status(first.job_id, agent.JobStatus.JS_SUCCESS, timeout=20)
    bot_file = tmp_path / "bots" / "line.toml"
    bot_file.write_text(bot_file.read_text().replace("this is the test line", "new greeting"))
    await wait_for(lambda: worker.catalog().get("line").version != before)
    second = await agent_dispatcher.dispatch("call_v2", json.dumps({"bot": "line"}), "dialplan")
    await agent_dispatcher.wait_job_status(second.job_id, agent.JobStatus.JS_SUCCESS, timeout=20)
    await wait_for(lambda: len(outbox_records(tmp_path / "outbox.db")) == 2)
    versions = {r["bot_version"] for r in outbox_records(tmp_path / "outbox.db")}
    assert versions == {before, worker.catalog().get("line").version}


def test_missing_credentials_stop_the_worker_before_it_starts(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots")
    worker = Worker(bots=tmp_path / "bots", config=FleetConfig(), env={"LIVEKIT_URL": "ws://x"})
    with pytest.raises(CredentialsMissing, match="LIVEKIT_API_KEY, LIVEKIT_API_SECRET not set"):
        worker.start()


def test_dialplan_start_exits_non_zero_naming_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIVEKIT_URL", raising=False)
    monkeypatch.delenv("LIVEKIT_API_SECRET", raising=False)
    monkeypatch.setenv("LIVEKIT_API_KEY", "key")
    result = run_dialplan("start", "--bots", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "LIVEKIT_URL, LIVEKIT_API_SECRET not set" in result.stderr
