"""Voice-to-voice latency of the offline stack, as a caller on the phone experiences it.

A simulated Twilio caller (the caller voice "ann", not the bot's, with line hiss; real-time
μ-law over a loopback WebSocket) talks to the shipped receptionist bot: silero VAD, the
offline STT, the rules LLM and piper TTS. Latency per turn is measured on the caller's
side: from the last 20 ms frame of its line leaving to the first frame of the bot's
answer arriving. That includes the VAD's end-of-speech wait and livekit's endpointing
delay, which a caller also waits.

Runs the demo script with each offline recognizer: Whisper tiny.en (the default), and
pocketsphinx free and with a grammar of the lines (``--exact``), the defaults before it.
"replies_right" counts the bot's answers that are the ones the script's lines ask for.

    uv run python bench/voice_latency.py [--calls 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_stats import machine, percentile  # noqa: E402

SCRIPT = (REPO / "bots" / "receptionist.demo.txt").read_text().splitlines()
LINES = [line for line in SCRIPT if line.strip() and not line.startswith("#")]


# what the receptionist answers to each line of its demo script, when it heard it right
EXPECTED_REPLIES = ("We're open", "We're at", "Which day", "Tuesday works", "Thanks for calling")


async def run(calls: int, stt: str) -> dict[str, Any]:
    from runtime.call import CallOverrides
    from runtime.live_catalog import LiveCatalog
    from runtime.phone_sim import SimulatedCaller, exact_listening
    from runtime.registry import load_registry
    from runtime.transports.server import CallServer, ServerConfig
    from runtime.voice_synth import CallerVoice
    from runtime.warmup import VoiceWarmer

    registry = load_registry()
    live = LiveCatalog(REPO / "bots", registry)
    overrides = CallOverrides(ignore_schedule=True)  # the clinic's hours are not under test
    if stt == "pocketsphinx":
        overrides = overrides.model_copy(update={"stt": {"provider": "pocketsphinx"}})
    elif stt == "pocketsphinx+grammar":
        overrides = overrides.model_copy(update={"stt": exact_listening(LINES).stt})
    server = CallServer(live.current, registry, ServerConfig(port=0, overrides=overrides))
    voice = CallerVoice.named(registry, "ann")
    await VoiceWarmer(registry).warm(live.current().bots.values())  # as `serve` does
    await server.start()
    latencies: list[float] = []
    server_side: list[float] = []
    right = 0
    heard: list[str] = []
    calls_done = 0
    said: list[str] = []
    try:
        for _ in range(calls):
            caller = SimulatedCaller(
                server.url.replace("http://", "ws://") + "/twilio/stream", bot="receptionist"
            )
            report = await caller.call(LINES, voice.synthesize)
            latencies += [t.reply_latency for t in report.turns if t.reply_latency is not None]
            for _ in range(200):  # the record lands once the post-call work is done
                if len(server.records) > calls_done:
                    break
                await asyncio.sleep(0.05)
            calls_done = len(server.records)
            record = server.records[-1]
            server_side += [e.data["latency_ms"] for e in record.events if e.type == "bot_audio"]
            bot_lines = [e.text for e in record.transcript if e.role == "bot"][1:]
            right += sum(
                1
                for expected, said in zip(EXPECTED_REPLIES, bot_lines, strict=False)
                if expected in said
            )
            heard += [e.text for e in record.transcript if e.role == "customer"]
            said += bot_lines
    finally:
        await server.stop()
        await voice.aclose()
    ms = [x * 1000 for x in latencies]
    return {
        "stt": stt,
        "turns": len(ms),
        "replies_right": f"{right}/{len(LINES) * calls}",
        "heard": heard,
        "said": said,
        "caller_side_ms": {
            "median": round(percentile(ms, 50), 1),
            "p90": round(percentile(ms, 90), 1),
            "min": round(min(ms), 1),
            "max": round(max(ms), 1),
        },
        "server_side_after_vad_end_of_speech_ms": {
            "median": round(percentile(server_side, 50), 1) if server_side else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1)
    args = parser.parse_args()
    stts = ("faster_whisper", "pocketsphinx", "pocketsphinx+grammar")
    results = [asyncio.run(run(args.calls, stt)) for stt in stts]
    gc.collect()
    print(
        json.dumps(
            {"benchmark": "voice_latency", "results": results, "machine": machine()}, indent=2
        )
    )


if __name__ == "__main__":
    main()
