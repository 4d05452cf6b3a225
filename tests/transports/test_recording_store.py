"""Recordings go through the `store_recording` hook: an awaitable key (an upload) is
awaited, and a store that fails leaves the local file as the key — the record still lands."""

from __future__ import annotations

import wave
from pathlib import Path

from runtime import CallRecord, hookimpl
from tests.transports.test_call_endings import call_line
from tests.transports.test_call_server import wait_for_records


class ArchiveStore:
    def __init__(self, archive: Path) -> None:
        self.archive = archive

    @hookimpl
    def store_recording(self, record: CallRecord, path: str) -> object:
        async def upload() -> str:
            target = self.archive / f"{record.bot_id}-{record.session_id}.wav"
            Path(path).rename(target)
            return f"archive://{target.name}"

        return upload()


class BrokenStore:
    @hookimpl
    def store_recording(self, record: CallRecord, path: str) -> object:
        async def upload() -> str:
            raise ConnectionError("the archive is down")

        return upload()


async def test_an_awaitable_store_gives_the_recording_key(fake_bot, serve, tmp_path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    server = await serve(
        fake_bot(["bye"]), plugins=(("archive", ArchiveStore(archive)),), record_all=True
    )
    await call_line(server, speech_at=(1.0,))
    await wait_for_records(server)
    record = server.records[-1]
    assert record.recording_key == f"archive://line-{record.session_id}.wav"
    with wave.open(str(archive / f"line-{record.session_id}.wav")) as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() > 0


async def test_a_failing_store_keeps_the_local_file(fake_bot, serve, tmp_path) -> None:
    server = await serve(fake_bot(["bye"]), plugins=(("broken", BrokenStore()),), record_all=True)
    await call_line(server, speech_at=(1.0,))
    await wait_for_records(server)
    record = server.records[-1]
    assert record.recording_key == str(tmp_path / "recordings" / f"{record.session_id}.wav")
    assert Path(record.recording_key).is_file()
    failure = next(e for e in record.events if e.type == "recording_store_failed")
    assert "the archive is down" in failure.data["error"]
    assert record.disconnected_by == "bot"
