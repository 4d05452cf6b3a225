"""Voice-to-voice latency of the offline stack, as a caller on the phone experiences it.

A simulated Twilio caller (piper-synthesized lines, real-time μ-law over a loopback
WebSocket) talks to the shipped receptionist bot: silero VAD, pocketsphinx STT, the rules
LLM and piper TTS. Latency per turn is measured on the caller's side: from the last 20 ms
frame of its line leaving to the first frame of the bot's answer arriving. That includes
the VAD's end-of-speech wait and livekit's endpointing delay, which a caller also waits.

Runs the demo script with pocketsphinx free (no grammar) and with ``--exact`` (a grammar
of the lines, which decodes faster).

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


async def run(calls: int, exact: bool) -> dict[str, Any]:
    from runtime.live_catalog import LiveCatalog
    from runtime.phone_sim import SimulatedCaller, exact_listening
    from runtime.registry import load_registry
    from runtime.transports.server import CallServer, ServerConfig
    from runtime.voice_synth import CallerVoice

    registry = load_registry()
    live = LiveCatalog(REPO / "bots", registry)
    overrides = None
    if exact:
        overrides = exact_listening(LINES)
    server = CallServer(live.current, registry, ServerConfig(port=0, overrides=overrides))
    voice = CallerVoice(registry)
    await server.start()
    latencies: list[float] = []
    server_side: list[float] = []
    try:
        for _ in range(calls):
            caller = SimulatedCaller(
                server.url.replace("http://", "ws://") + "/twilio/stream", bot="receptionist"
            )
            report = await caller.call(LINES, voice.synthesize)
            latencies += [t.reply_latency for t in report.turns if t.reply_latency is not None]
            record = server.records[-1]
            server_side += [e.data["latency_ms"] for e in record.events if e.type == "bot_audio"]
    finally:
        await server.stop()
        await voice.aclose()
    ms = [x * 1000 for x in latencies]
    return {
        "grammar": exact,
        "turns": len(ms),
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
    results = [asyncio.run(run(args.calls, exact)) for exact in (False, True)]
    gc.collect()
    print(
        json.dumps(
            {"benchmark": "voice_latency", "results": results, "machine": machine()}, indent=2
        )
    )


if __name__ == "__main__":
    main()
