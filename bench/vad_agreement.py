"""Does the batched Silero VAD hear the same turns as livekit's per-call Silero?

Every caller line of tests/speech_set (80 lines of the shipped bots), spoken by the caller
voices "ann" and "bob" (unlike the bot's), with a phone line's hiss, through μ-law at
8 kHz, with a second of line before and after, is fed in 20 ms frames to both:

- livekit's ``silero.VAD`` stream (per call: resampled to 16 kHz, one inference per call
  per window) — what a call used before;
- dialplan's batched stream (plugins/vad/silero_batch.py: 8 kHz, one inference for all
  calls per window, silent windows skipped) — the default now.

A turn agrees when both report the same number of speech starts and ends and each
boundary lies within ``--tolerance-ms`` (40). Also: CPU seconds per second of audio for
each (one stream at a time, then ``--streams`` at once for the batched one), and the mean
and largest batch.

    .venv/bin/python bench/vad_agreement.py [--voices ann,bob] [--streams 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import tomli

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench_stats import machine, percentile  # noqa: E402

RATE = 8000
FRAME = RATE // 50


def caller_lines() -> list[str]:
    lines = []
    for path in sorted((REPO / "tests" / "speech_set").glob("*.toml")):
        for scenario in tomli.loads(path.read_text())["scenarios"]:
            lines += [turn["say"] for turn in scenario["turns"] if "say" in turn]
    return lines


async def synthesize(lines: list[str], voice: str) -> list[bytes]:
    from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
    from runtime.registry import load_registry
    from runtime.voice_synth import CallerVoice, add_line_noise

    caller = CallerVoice.named(load_registry(), voice)
    turns = []
    try:
        for index, line in enumerate(lines):
            speech = await caller.synthesize(line)
            quiet = add_line_noise(bytes(2 * RATE), 30.0, seed=index)  # the line's hiss
            pcm = quiet + speech + quiet + quiet[:RATE]
            turns.append(ulaw_to_pcm16(pcm16_to_ulaw(pcm)))
    finally:
        await caller.aclose()
    return turns


async def boundaries(detector: Any, pcm: bytes) -> list[tuple[str, float]]:
    from livekit import rtc
    from livekit.agents import vad

    stream = detector.stream()
    for offset in range(0, len(pcm) - 2 * FRAME + 1, 2 * FRAME):
        stream.push_frame(rtc.AudioFrame(pcm[offset : offset + 2 * FRAME], RATE, 1, FRAME))
    stream.end_input()
    found = []
    async for event in stream:
        if event.type == vad.VADEventType.START_OF_SPEECH:
            found.append(("start", event.timestamp - event.speech_duration))
        elif event.type == vad.VADEventType.END_OF_SPEECH:
            found.append(("end", event.timestamp - event.silence_duration))
    await stream.aclose()
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from livekit.plugins import silero

    from plugins.vad.silero import SileroOptions
    from plugins.vad.silero_batch import BatchedSileroVAD, SileroBatcher

    options = SileroOptions()
    per_call = silero.VAD.load(
        min_speech_duration=options.min_speech_duration,
        min_silence_duration=options.min_silence_duration,
        activation_threshold=options.activation_threshold,
        prefix_padding_duration=options.prefix_padding_duration,
    )
    batched = BatchedSileroVAD(options, SileroBatcher(), telephone_at_8k=args.at_8k)
    lines = caller_lines()
    turns: list[bytes] = []
    for voice in args.voices.split(","):
        turns += await synthesize(lines, voice)
    audio_seconds = sum(len(t) for t in turns) / 2 / RATE

    results: dict[str, list[list[tuple[str, float]]]] = {}
    cpu: dict[str, float] = {}
    for label, detector in (("livekit_per_call", per_call), ("batched", batched)):
        started = time.process_time()
        results[label] = [await boundaries(detector, pcm) for pcm in turns]
        cpu[label] = (time.process_time() - started) / audio_seconds

    agree = 0
    offsets_ms: list[float] = []
    disagreements = []
    for index, (old, new) in enumerate(
        zip(results["livekit_per_call"], results["batched"], strict=True)
    ):
        same_shape = [kind for kind, _ in old] == [kind for kind, _ in new]
        deltas = [abs(a - b) * 1000 for (_, a), (_, b) in zip(old, new, strict=False)]
        offsets_ms += deltas
        if same_shape and all(d <= args.tolerance_ms for d in deltas):
            agree += 1
        elif len(disagreements) < 5:
            disagreements.append(
                {"line": lines[index % len(lines)], "livekit": old, "batched": new}
            )

    # many calls at once: how the batch amortizes the model
    together = BatchedSileroVAD(options, SileroBatcher(), telephone_at_8k=args.at_8k)
    started = time.process_time()
    await asyncio.gather(
        *(boundaries(together, turns[i % len(turns)]) for i in range(args.streams))
    )
    together_audio = sum(len(turns[i % len(turns)]) for i in range(args.streams)) / 2 / RATE
    stats = together.batcher.stats
    return {
        "bench": "vad_agreement",
        "turns": len(turns),
        "voices": args.voices,
        "batched_model_rate": 8000 if args.at_8k else 16000,
        "audio_seconds": round(audio_seconds, 1),
        "tolerance_ms": args.tolerance_ms,
        "turns_agreeing": agree,
        "agreement": round(agree / len(turns), 4),
        "boundary_offset_ms": {
            "median": round(percentile(offsets_ms, 50), 1),
            "p90": round(percentile(offsets_ms, 90), 1),
            "max": round(max(offsets_ms, default=0.0), 1),
        },
        "cpu_seconds_per_audio_second": {k: round(v, 5) for k, v in cpu.items()},
        "batched_many_streams": {
            "streams": args.streams,
            "cpu_seconds_per_audio_second": round(
                (time.process_time() - started) / together_audio, 5
            ),
            "mean_batch": round(stats.mean_batch, 1),
            "largest_batch": stats.largest,
        },
        "disagreements": disagreements,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="ann,bob")
    parser.add_argument("--tolerance-ms", type=float, default=40.0)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument(
        "--at-16k", dest="at_8k", action="store_false", help="resample 8 kHz audio to 16 kHz"
    )
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
