"""What dialplan adds to each Twilio audio frame, and so to each conversational turn.

Inbound, per 20 ms message: ``TwilioWire.decode`` (JSON, base64, μ-law → PCM) and
``CallerAudioInput.push`` (40 ms frames for the session), then the 8 → 16 kHz resampling
the offline STT needs. Outbound, per 20 ms frame: livekit's resampling of 22.05 kHz TTS
audio (piper's rate) to the line's 8 kHz, then ``TwilioWire.audio`` (PCM → μ-law, base64,
the media message). The socket write itself and livekit's pipeline are not dialplan's.

A turn is counted as 3 s of caller speech plus 3 s of bot speech (150 frames each way).

    uv run python bench/audio_path.py [--frames 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stats import machine, summary

FRAMES_PER_TURN_EACH_WAY = 150


def voice_like(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    signal = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((180, 420, 950, 2300)))
    signal = signal * 6000 + rng.normal(0, 400, t.size)
    return signal.astype("<i2").tobytes()


async def measure(frames: int) -> dict[str, object]:
    from livekit import rtc

    from runtime.audio.mulaw import pcm16_to_ulaw
    from runtime.transports.media import CallerAudioInput
    from runtime.transports.twilio import TwilioWire

    wire = TwilioWire()
    wire.decode(
        json.dumps(
            {
                "event": "start",
                "start": {"streamSid": "MZ" + "0" * 32, "callSid": "CA1", "customParameters": {}},
            }
        )
    )
    caller = voice_like(frames * 0.02 + 1, 8000)
    messages = [
        json.dumps(
            {
                "event": "media",
                "streamSid": "MZ" + "0" * 32,
                "media": {
                    "track": "inbound",
                    "payload": base64.b64encode(
                        pcm16_to_ulaw(caller[i * 320 : (i + 1) * 320])
                    ).decode(),
                },
            }
        )
        for i in range(frames)
    ]
    audio_in = CallerAudioInput(8000)
    up = rtc.AudioResampler(8000, 16000, num_channels=1)
    tts = voice_like(frames * 0.02 + 1, 22050)
    down = rtc.AudioResampler(22050, 8000, num_channels=1)
    tts_chunk = 441 * 2  # 20 ms at 22.05 kHz

    timings: dict[str, list[float]] = {
        "inbound_transport": [],  # decode the message, frame it for the session
        "inbound_resample": [],  # 8 -> 16 kHz for the STT
        "outbound_resample": [],  # 22.05 -> 8 kHz TTS audio (livekit's, at our line rate)
        "outbound_transport": [],  # encode one 20 ms frame into a media message
    }
    pending: list[bytes] = []
    gc.collect()
    gc.freeze()
    for i, message in enumerate(messages):
        started = time.perf_counter()
        media = wire.decode(message)
        audio_in.push(media.pcm16)  # type: ignore[union-attr]
        mid = time.perf_counter()
        up.push(bytearray(media.pcm16))  # type: ignore[union-attr]
        done = time.perf_counter()
        timings["inbound_transport"].append((mid - started) * 1e6)
        timings["inbound_resample"].append((done - mid) * 1e6)

        started = time.perf_counter()
        for frame in down.push(bytearray(tts[i * tts_chunk : (i + 1) * tts_chunk])):
            data = bytes(frame.data)
            pending += [data[o : o + 320] for o in range(0, len(data), 320)]
        mid = time.perf_counter()
        if pending:
            wire.audio(pending.pop(0))
        done = time.perf_counter()
        timings["outbound_resample"].append((mid - started) * 1e6)
        timings["outbound_transport"].append((done - mid) * 1e6)
        while not audio_in._frames.empty():
            audio_in._frames.get_nowait()  # the session would read them
    gc.unfreeze()
    mean_us = {name: statistics.mean(values[200:]) for name, values in timings.items()}
    transport_us = mean_us["inbound_transport"] + mean_us["outbound_transport"]
    resample_us = mean_us["inbound_resample"] + mean_us["outbound_resample"]
    per_turn = FRAMES_PER_TURN_EACH_WAY / 1000
    return {
        "benchmark": "audio_path",
        "frames": frames,
        "us_per_frame": {name: summary(values[200:]) for name, values in timings.items()},
        "cpu_per_turn_ms": {
            "transport_and_codec": round(transport_us * per_turn, 3),
            "resampling": round(resample_us * per_turn, 3),
            "total": round((transport_us + resample_us) * per_turn, 3),
            "assumes": "3 s caller + 3 s bot speech (150 frames each way)",
        },
        "latency_added_per_turn_ms": {
            "last_caller_frame_in": round(
                statistics.median(timings["inbound_transport"]) / 1000, 4
            ),
            "first_bot_frame_out": round(
                statistics.median(timings["outbound_transport"]) / 1000, 4
            ),
            "input_framing_wait_max": 20.0,  # 40 ms session frames from 20 ms messages
        },
        "share_of_one_core_per_call": f"{(transport_us + resample_us) / 20000 * 100:.2f} %",
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.frames)), indent=2))


if __name__ == "__main__":
    main()
