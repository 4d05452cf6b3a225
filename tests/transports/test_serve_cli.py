"""`dialplan serve` as an operator runs it: a real process, its banner, hot reload with
`--watch`, a clear error for a port in use."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from tests.cli_run import run_dialplan
from tests.runtime.test_dev_cli import BOT, DevServer


class Serve(DevServer):
    def __init__(self, *args: str, cwd: Path) -> None:
        super().__init__(*args, cwd=cwd, command="serve")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return super().stop()


def bots_version(base: str) -> str:
    with urllib.request.urlopen(base + "/api/bots", timeout=10) as answer:
        return str(json.load(answer)["bots"][0]["version"])


def test_serve_watch_reloads_bots_without_a_restart(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    (bots / "desk.toml").write_text(BOT.format(reply="One."))
    server = Serve("bots", "--port", "0", "--watch", "--max-calls", "3", cwd=tmp_path)
    try:
        # the bot's offline voices are loaded before the server listens
        warmed = server.wait_for("voices warmed")
        assert "stt faster_whisper" in warmed and "tts piper" in warmed
        assert "1 bot(s)" in server.wait_for("dialplan serve —")
        base = server.wait_for("browser widget").split()[-1].rstrip("/")
        server.wait_for("capacity            3 concurrent calls")
        assert "dialplan-outbox.db" in server.wait_for("call records        outbox")
        server.wait_for("watching")
        before = bots_version(base)
        (bots / "desk.toml").write_text(BOT.format(reply="Two."))
        line = server.wait_for("[reload] ~ desk")
        assert f"{before} -> " in line
        deadline = time.monotonic() + 5
        while bots_version(base) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bots_version(base) == line.split(" -> ")[1].split()[0]
        with urllib.request.urlopen(base + "/healthz", timeout=10) as answer:
            assert json.load(answer) == {
                "active_calls": 0,
                "max_concurrent_calls": 3,
                "lag_ms": 0.0,
                "lagging": None,
            }
    finally:
        server.process.terminate()
        server.wait_for("shutting down (0 call(s) in progress)")
        assert server.stop() == 0
    # SIGTERM ends it quietly: nothing from livekit's native handles on the way out
    assert not [line for line in server.rest() if "Exception ignored" in line], server.seen


def test_serve_names_a_busy_port(tmp_path: Path) -> None:
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "desk.toml").write_text(BOT.format(reply="One."))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = run_dialplan("serve", "bots", "--port", str(port), cwd=tmp_path)
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr


def test_a_call_cut_off_by_sigkill_is_closed_and_delivered_by_the_next_start(
    tmp_path: Path,
) -> None:
    """The server dies mid-call (SIGKILL: no cleanup at all). Its last checkpoint of the
    call is in the outbox; the next server on that outbox closes the call as `error`,
    says why and how far it got, and delivers it."""
    import asyncio
    import signal

    import aiohttp

    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "desk.toml").write_text(BOT.format(reply="One."))
    first = Serve("bots", "--port", "0", cwd=tmp_path)
    try:
        base = first.wait_for("browser widget").split()[-1].rstrip("/")
        first.wait_for("call records        outbox")

        async def call_then_kill() -> str:
            url = base.replace("http://", "ws://") + "/ws"
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                await ws.send_str(json.dumps({"type": "start", "bot": "desk"}))
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        notice = json.loads(message.data)
                        if notice["type"] == "started":
                            await ws.send_bytes(b"\x00" * 3200)  # the caller's line is open
                            await asyncio.sleep(1.0)  # the call is under way
                            first.process.send_signal(signal.SIGKILL)
                            return str(notice["session_id"])
            raise AssertionError("the call never started")

        session_id = asyncio.run(call_then_kill())
    finally:
        if first.process.poll() is None:
            first.process.kill()
        assert first.stop() == -signal.SIGKILL

    second = Serve("bots", "--port", "0", "--results-jsonl", "records.jsonl", cwd=tmp_path)
    try:
        second.wait_for("call records        outbox")
        deadline = time.monotonic() + 20
        records: list[dict[str, object]] = []
        while not records and time.monotonic() < deadline:
            jsonl = tmp_path / "records.jsonl"
            if jsonl.exists():
                records = [json.loads(line) for line in jsonl.read_text().splitlines()]
            time.sleep(0.1)
        (record,) = records
        assert record["session_id"] == session_id
        assert record["disconnected_by"] == "error"
        assert "stopped while it was in progress (killed or crashed)" in str(record["cause"])
        assert record["ended_at"] is not None and record["bot_id"] == "desk"
    finally:
        second.process.terminate()
        assert second.stop() == 0
