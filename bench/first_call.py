"""First call after a start vs the tenth: time from a Twilio stream's `start` to the first
audio of the greeting, with the real offline voices (pocketsphinx, piper, silero).

Each variant runs in a fresh process (so nothing is loaded yet), starts the call server
on a loopback port exactly as `dialplan serve` does, then places 10 calls one after the
other, each hanging up once the greeting's first audio arrives:

    cold:  the server listens at once; the first call loads the models
    warm:  the server warms every voice its bots use before it listens (what `serve`,
           `dev` and `simulate` do now; `runtime.warmup`)

Target: the first call is as fast as the tenth.

    uv run python bench/first_call.py [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_stats import machine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BOT = "receptionist"


async def greeting_delay(url: str) -> float:
    """Seconds from the stream's `start` to the first audio the bot sends."""
    import aiohttp

    start = {
        "event": "start",
        "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "customParameters": {"bot": BOT},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    silence = json.dumps({"event": "media", "media": {"payload": "/" * 212 + "w=="}})
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"event": "connected"}))
        began = time.perf_counter()
        await ws.send_str(json.dumps(start))
        feeding = asyncio.create_task(_feed(ws, silence))
        try:
            async for message in ws:
                text = message.data if message.type == aiohttp.WSMsgType.TEXT else "{}"
                if json.loads(text).get("event") == "media":
                    return time.perf_counter() - began
        finally:
            feeding.cancel()
            await ws.send_str(json.dumps({"event": "stop", "streamSid": "MZ1"}))
    raise RuntimeError("the call ended before any audio")


async def _feed(ws: Any, frame: str) -> None:
    """The caller's line: 20 ms of μ-law silence every 20 ms, as Twilio sends it."""
    while True:
        await ws.send_str(frame)
        await asyncio.sleep(0.02)


async def variant(warm: bool, calls: int) -> dict[str, Any]:
    from runtime.call import CallOverrides
    from runtime.catalog import load_catalog
    from runtime.registry import load_registry
    from runtime.transports.server import CallServer, ServerConfig
    from runtime.warmup import VoiceWarmer

    registry = load_registry()
    snapshot = load_catalog(ROOT / "bots", registry)
    config = ServerConfig(port=0, overrides=CallOverrides(ignore_schedule=True))
    server = CallServer(lambda: snapshot, registry, config)
    started = time.perf_counter()
    if warm:
        await VoiceWarmer(registry).warm(snapshot.bots.values())
    await server.start()
    ready = time.perf_counter() - started
    url = server.url.replace("http://", "ws://") + "/twilio/stream"
    delays = []
    try:
        for _ in range(calls):
            delays.append(await greeting_delay(url))
            while server.active:  # the call's teardown, before the next one rings
                await asyncio.sleep(0.01)
    finally:
        await server.stop()
    return {
        "ready_s": round(ready, 2),
        "first_call_greeting_s": round(delays[0], 3),
        "tenth_call_greeting_s": round(delays[-1], 3),
        "median_later_calls_s": round(statistics.median(delays[1:]), 3),
        "all_s": [round(d, 3) for d in delays],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--variant", choices=["cold", "warm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one fresh process per variant
        print(json.dumps(asyncio.run(variant(args.variant == "warm", args.calls))))
        return
    results: dict[str, Any] = {}
    for name in ("cold", "warm"):
        run = subprocess.run(
            [sys.executable, __file__, "--variant", name, "--calls", str(args.calls)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    warm = results["warm"]
    print(
        json.dumps(
            {
                "benchmark": "first_call",
                "machine": machine(),
                "bot": BOT,
                **results,
                "warm_first_over_tenth": round(
                    warm["first_call_greeting_s"] / warm["tenth_call_greeting_s"], 2
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
