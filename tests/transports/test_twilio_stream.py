"""A whole call over Twilio Media Streams on a real loopback WebSocket."""

from __future__ import annotations

import wave

import numpy as np

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


async def test_a_caller_barging_in_clears_the_bots_audio(bot_dir, serve) -> None:
    from tests.transports.conftest import FAKE_BOT

    long_greeting = "Hello, this is the test line, " + "and I am going to keep talking " * 4
    bots = bot_dir(
        "line",
        FAKE_BOT.replace("{lines}", '["what are your hours", "bye"]').replace(
            "Hello, this is the test line.", long_greeting
        ),
    )
    server = await serve(bots, record_all=True)
    caller = SimulatedCaller(
        server.url.replace("http", "ws") + "/twilio/stream", bot="line", barge_in=0.6
    )
    report = await caller.call(["(interrupts)", "(says bye)"], speak)

    assert report.clears >= 1  # the server told Twilio to drop the greeting's audio
    record = server.records[0]
    greeting = record.transcript[0]
    assert greeting.role == "bot" and greeting.interrupted
    assert next(e.text for e in record.transcript if e.role == "customer") == "what are your hours"
    with wave.open(record.recording_key) as recording:
        stereo = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
    bot_channel = stereo[1::2].astype(np.float64)
    blocks = bot_channel[: len(bot_channel) // 160 * 160].reshape(-1, 160)
    loud = np.sqrt((blocks**2).mean(axis=1)) > 1000  # 20 ms blocks with the bot's tone
    first = int(np.argmax(loud))
    greeting_blocks = int(np.argmin(loud[first:]))  # until the first quiet block
    # the greeting is 3 s long; the caller heard well under that before it was cut
    assert 0.5 < greeting_blocks * 0.02 < 2.0
