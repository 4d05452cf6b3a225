"""A whole call over Twilio Media Streams on a real loopback WebSocket."""

from __future__ import annotations

import wave

from runtime.phone_sim import SimulatedCaller
from tests.voice_fakes import tone


async def speak(text: str) -> bytes:
    return tone(0.6, 8000, 300.0)


async def test_a_call_converses_and_the_bot_hangs_up(fake_bot, serve) -> None:
    server = await serve(fake_bot(["what are your hours", "bye"]), record_all=True)
    caller = SimulatedCaller(server.url.replace("http", "ws") + "/twilio/stream", bot="line")
    report = await caller.call(["(asks the hours)", "(says bye)"], speak)

    assert len(server.records) == 1
    record = server.records[0]
    said = [(e.role, e.text) for e in record.transcript]
    assert said == [
        ("bot", "Hello, this is the test line."),
        ("customer", "what are your hours"),
        ("bot", "We are open nine to five."),
        ("customer", "bye"),
        ("bot", "Goodbye now."),
    ]
    assert record.disconnected_by == "bot"
    assert record.transport == "twilio"
    assert record.caller == "+15550001111"
    assert report.close_code == 1000
    assert report.marks_echoed >= 3  # greeting, answer, goodbye were all played out
    assert report.turns[0].reply_latency is not None
    with wave.open(record.recording_key) as recording:
        assert recording.getnchannels() == 2
        assert recording.getframerate() == 8000
        assert recording.getnframes() / 8000 > 3
