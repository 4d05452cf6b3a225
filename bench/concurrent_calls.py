"""How many simulated Twilio calls one server process holds on one core.

The server (pinned to CPU 0) runs the instant fake providers (scripted STT, tone TTS,
energy VAD), so what is measured is dialplan's transport and the livekit pipeline, not a
model. The callers (pinned to CPU 1) stream real-time μ-law both ways, speak three lines
and hang up after the bot's goodbye. For each number of concurrent calls it reports the
outbound frame lateness against the real-time schedule (the jitter the caller hears) and
the server's memory per call.

``--stt faster_whisper`` measures the offline recognizer instead: the server hears with
Whisper tiny.en (one CPU thread) and the silero VAD, and the callers speak the lines in the
caller voice "ann" (real speech, line hiss); then it also reports the reply latency at the
caller and how many calls the bot understood to the end (it hung up after "bye").

``--vad`` picks the server's voice activity detection, with the scripted STT (so the VAD
is what is measured): ``energy`` (the default here: no model), ``silero`` (the default of a
bot without ``[vad]``: batched, one inference per window for all calls), ``silero-8k``
(batched, phone audio judged at 8 kHz) and ``silero-per-call`` (livekit's stream, one
inference per call per window: the default before). With a silero VAD the callers speak
their lines in the caller voice "ann", and a call counts as held only if the bot
understood it to its goodbye with replies under a second (p99).

    python bench/concurrent_calls.py [--calls 25,50,100,150] [--stt faster_whisper]
    python bench/concurrent_calls.py --vad silero --calls 20,40,60,80
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_stats import machine, percentile  # noqa: E402

ARRIVAL_GAP = 0.05
LINES = ["what are your hours", "what are your hours", "bye"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the server process ----------------------------------------------------------------


async def serve(bots: Path) -> None:
    from runtime.catalog import load_catalog
    from runtime.registry import load_registry
    from runtime.transports.server import CallServer, ServerConfig
    from runtime.warmup import VoiceWarmer
    from tests.voice_fakes import FakeVoicePlugin

    registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin())])
    snapshot = load_catalog(bots, registry)
    server = CallServer(
        lambda: snapshot, registry, ServerConfig(port=0, max_concurrent_calls=10_000)
    )
    await VoiceWarmer(registry).warm(snapshot.bots.values())  # as `serve` does
    await server.start()
    print(json.dumps({"url": server.url}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"stats":
            stats = [e.data for r in server.records for e in r.events if e.type == "audio_out"]
            ended_by_bot = sum(r.disconnected_by == "bot" for r in server.records)
            report = {"records": len(server.records), "audio_out": stats, "bot_ended": ended_by_bot}
            print(json.dumps(report), flush=True)
            server.records.clear()
    await server.stop()


BOT = """
[prompt]
system = "bench"
greeting = "Hello, thanks for calling the benchmark line."
[llm]
provider = "rules"
default = "Sorry?"
[[llm.rules]]
match = "hours"
reply = "We are open from nine in the morning to five in the evening."
[[llm.rules]]
match = "bye"
tool = "end_call"
[[tools]]
use = "end_call"
goodbye = "Goodbye."
[stt]
provider = "scripted"
lines = LINES
[tts]
provider = "tone"
[vad]
provider = "energy"
[turn]
min_endpointing_delay = "0.3s"
""".replace("LINES", json.dumps(LINES))
# the real offline recognizer: what a bot without an [stt] table hears with
WHISPER_VOICE = """
[stt]
provider = "faster_whisper"
cpu_threads = 1
[tts]
provider = "tone"
[vad]
provider = "silero"
"""


VADS = {
    "energy": '[vad]\nprovider = "energy"\n',
    "silero": '[vad]\nprovider = "silero"\n',
    "silero-8k": '[vad]\nprovider = "silero"\ntelephone_at_8k = true\n',
    "silero-per-call": '[vad]\nprovider = "silero"\nbatched = false\n',
}


def bot_file(stt: str, vad: str = "energy") -> str:
    if stt == "scripted":
        return BOT.replace(VADS["energy"], VADS[vad])
    return BOT[: BOT.index("[stt]")] + WHISPER_VOICE


def real_speech(stt: str, vad: str) -> bool:
    """Callers speak synthesized speech (a model listens), not tone bursts."""
    return stt != "scripted" or vad != "energy"


# -- the driver ------------------------------------------------------------------------


async def run_calls(
    url: str, count: int, stt: str = "scripted", gap: float = ARRIVAL_GAP, speech_: bool = False
) -> dict[str, Any]:
    from runtime.phone_sim import SimulatedCaller
    from tests.voice_fakes import tone

    speech = {line: tone(0.7, 8000, 300.0) for line in LINES}
    if stt != "scripted" or speech_:
        speech = await spoken_lines()

    async def speak(text: str) -> bytes:
        return speech[text]

    async def one(index: int) -> Any:
        await asyncio.sleep(index * gap)  # 0.05 s: callers arrive at 20 a second
        caller = SimulatedCaller(url + "/twilio/stream", bot="bench", reply_timeout=30)
        return await caller.call(LINES, speak)

    started = time.monotonic()
    reports = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    failures = [repr(r) for r in reports if isinstance(r, BaseException)]
    latencies = [
        turn.reply_latency * 1000
        for report in reports
        if not isinstance(report, BaseException)
        for turn in report.turns
        if turn.reply_latency is not None
    ]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "failures": failures[:3],
        "reply_ms": {
            "median": round(percentile(latencies, 50), 1) if latencies else None,
            "p99": round(percentile(latencies, 99), 1) if latencies else None,
        },
    }


async def spoken_lines() -> dict[str, bytes]:
    """The caller's lines in a caller voice, synthesized once (the callers' CPU is theirs)."""
    from runtime.registry import load_registry
    from runtime.voice_synth import CallerVoice

    voice = CallerVoice.named(load_registry(), "ann")
    try:
        return {line: await voice.synthesize(line) for line in LINES}
    finally:
        await voice.aclose()


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", default="25,50,100,150")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stt", choices=["scripted", "faster_whisper"], default="scripted")
    parser.add_argument("--vad", choices=sorted(VADS), default="energy")
    parser.add_argument(
        "--arrival-gap",
        type=float,
        default=ARRIVAL_GAP,
        help="seconds between callers (default 0.05: they speak nearly in lockstep, the "
        "worst case for a shared recognizer; 0.5 spreads their turns as real calls are)",
    )
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    bots = Path(tempfile.mkdtemp()) / "bots"
    bots.mkdir(parents=True)
    (bots / "bench.toml").write_text(bot_file(args.stt, args.vad))
    speech = real_speech(args.stt, args.vad)
    server = subprocess.Popen(
        [*pinned(0), sys.executable, __file__, "--serve", str(bots)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert server.stdin and server.stdout
    url = json.loads(server.stdout.readline())["url"].replace("http://", "ws://")

    def stats() -> dict[str, Any]:
        assert server.stdin and server.stdout
        server.stdin.write("stats\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())

    results: list[dict[str, Any]] = []
    try:
        asyncio.run(run_calls(url, 1, args.stt, speech_=speech))  # warm up: imports, first session
        stats()
        baseline = rss_mb(server.pid)
        for count in [int(n) for n in args.calls.split(",")]:
            peak = baseline
            loop_result: dict[str, Any] = {}

            async def measure(n: int = count) -> None:
                nonlocal peak, loop_result
                task = asyncio.create_task(
                    run_calls(url, n, args.stt, args.arrival_gap, speech_=speech)
                )
                while not task.done():
                    peak = max(peak, rss_mb(server.pid))
                    await asyncio.sleep(0.5)
                loop_result = task.result()

            asyncio.run(measure())
            collected = stats()
            p99s = [s["lateness_p99_ms"] for s in collected["audio_out"] if "lateness_p99_ms" in s]
            maxes = [s["lateness_max_ms"] for s in collected["audio_out"] if "lateness_max_ms" in s]
            results.append(
                {
                    "concurrent_calls": count,
                    "records": collected["records"],
                    "understood_to_the_end": collected["bot_ended"],
                    "reply_ms": loop_result["reply_ms"],
                    "failures": loop_result["failures"],
                    "wall_seconds": loop_result["seconds"],
                    "frame_lateness_p99_ms": {
                        "median_call": round(percentile(p99s, 50), 2) if p99s else None,
                        "worst_call": round(max(p99s), 2) if p99s else None,
                    },
                    "frame_lateness_max_ms": round(max(maxes), 2) if maxes else None,
                    "server_rss_mb": {"baseline": round(baseline, 1), "peak": round(peak, 1)},
                    "mb_per_call": round((peak - baseline) / count, 2),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    # held: smooth audio, no call lost; with a real recognizer also every call understood
    # to its goodbye and replies within a second (p99) at the caller
    held = [
        r["concurrent_calls"]
        for r in results
        if (r["frame_lateness_p99_ms"]["worst_call"] or 0) < 20
        and not r["failures"]
        and (
            not speech
            or (
                r["understood_to_the_end"] == r["concurrent_calls"]
                and (r["reply_ms"]["p99"] or 0) < 1000
            )
        )
    ]
    providers = (
        f"scripted STT, {args.vad} VAD, rules LLM, tone TTS"
        if args.stt == "scripted"
        else "Whisper tiny.en (1 thread) + silero VAD, rules LLM, tone TTS"
    )
    print(
        json.dumps(
            {
                "benchmark": "concurrent_calls",
                "server": f"one process pinned to one core; {providers}",
                "results": results,
                "held": max(held) if held else 0,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
