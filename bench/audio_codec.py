"""Telephony audio path per 20 ms frame: G.711 μ-law codec and the resampling around it.

A phone call's media is 8 kHz μ-law, 160 bytes per 20 ms frame; the agent side runs at
16 kHz in (STT/VAD) and 24 kHz out (TTS). Per frame this times:

(a) codec: ``ulaw_to_pcm16`` of an inbound frame + ``pcm16_to_ulaw`` of an outbound one
    (each also reported alone);
(b) inbound: decode -> ``livekit.rtc.AudioResampler(8000, 16000, num_channels=1)``;
(c) outbound: a 24 kHz TTS frame -> ``AudioResampler(24000, 8000)`` -> encode;
(d) full: (b) + (c), one telephony frame each way, the per-call audio cost of a bridge.

The resamplers are fed 20 ms frames continuously, as on a live call (their first outputs
are delayed by the filter, so the output sample counts are reported and checked). The
signal is a voice-like mix of tones and noise at a speaking level. Timings are per frame
in microseconds after a warm-up, with the heap frozen (``gc.freeze()``) as in
bench/call_setup.py; "frames per second per core" is frames / total time of the variant,
and "calls per core" how many calls one core could carry on the full path (20 ms / mean).
The sox resampler returns its output in bursts rather than per push; how (first output,
burst size, cost of a push with and without output) is reported under resampler_output.
For scale, CPython's C ``audioop`` codec is timed alongside where it still exists (< 3.13).

    uv run python bench/audio_codec.py [--frames 5000] [--warmup 300]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_stats import machine, summary

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FRAME_MS = 20
PHONE_RATE, STT_RATE, TTS_RATE = 8000, 16000, 24000


def voice_like(rate: int, frames: int, seed: int) -> np.ndarray:
    """int16 samples: a few harmonics with a slow envelope plus noise, about -20 dBFS."""
    n = rate * FRAME_MS // 1000 * frames
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    tones = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)
    signal = 3000 * envelope * tones + rng.normal(0, 300, n)
    return np.clip(signal, -32768, 32767).astype("<i2")


def chunks(samples: np.ndarray, rate: int) -> list[bytes]:
    size = rate * FRAME_MS // 1000
    return [samples[i : i + size].tobytes() for i in range(0, len(samples), size)]


def measure(frames: int, warmup: int) -> dict[str, Any]:
    from livekit import rtc

    from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16

    total = frames + warmup
    inbound_ulaw = [pcm16_to_ulaw(f) for f in chunks(voice_like(PHONE_RATE, total, 1), PHONE_RATE)]
    outbound_8k = chunks(voice_like(PHONE_RATE, total, 2), PHONE_RATE)
    outbound_24k = chunks(voice_like(TTS_RATE, total, 3), TTS_RATE)
    upsampler = rtc.AudioResampler(PHONE_RATE, STT_RATE, num_channels=1)
    downsampler = rtc.AudioResampler(TTS_RATE, PHONE_RATE, num_channels=1)
    # per push: output samples (16 kHz in, 8 kHz μ-law bytes out); the sox resampler
    # returns its output in bursts, so most pushes give nothing back
    inbound_out: list[int] = []
    outbound_out: list[int] = []

    def inbound(i: int) -> None:
        out = 0
        for frame in upsampler.push(bytearray(ulaw_to_pcm16(inbound_ulaw[i]))):
            out += frame.samples_per_channel
        inbound_out.append(out)

    def outbound(i: int) -> None:
        out = 0
        for frame in downsampler.push(bytearray(outbound_24k[i])):
            out += len(pcm16_to_ulaw(bytes(frame.data)))
        outbound_out.append(out)

    variants: dict[str, Callable[[int], object]] = {
        "decode": lambda i: ulaw_to_pcm16(inbound_ulaw[i]),
        "encode": lambda i: pcm16_to_ulaw(outbound_8k[i]),
        "codec": lambda i: (ulaw_to_pcm16(inbound_ulaw[i]), pcm16_to_ulaw(outbound_8k[i])),
        "inbound": inbound,
        "outbound": outbound,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            audioop = None  # type: ignore[assignment]
    if audioop is not None:
        assert audioop.ulaw2lin(inbound_ulaw[0], 2) == ulaw_to_pcm16(inbound_ulaw[0])
        assert audioop.lin2ulaw(outbound_8k[0], 2) == pcm16_to_ulaw(outbound_8k[0])
        variants["audioop_codec"] = lambda i: (
            audioop.ulaw2lin(inbound_ulaw[i], 2),
            audioop.lin2ulaw(outbound_8k[i], 2),
        )

    samples: dict[str, list[float]] = {name: [] for name in variants}
    samples["full"] = []
    bursts: dict[str, list[float]] = {"inbound": [], "outbound": []}
    quiet: dict[str, list[float]] = {"inbound": [], "outbound": []}
    clock = time.perf_counter_ns
    for i in range(total):
        if i == warmup:
            gc.collect()
            gc.freeze()
        elapsed: dict[str, float] = {}
        for name, run in variants.items():
            started = clock()
            run(i)
            elapsed[name] = (clock() - started) / 1000
        if i >= warmup:
            for name, value in elapsed.items():
                samples[name].append(value)
            samples["full"].append(elapsed["inbound"] + elapsed["outbound"])
            for name, out in (("inbound", inbound_out[i]), ("outbound", outbound_out[i])):
                (bursts if out else quiet)[name].append(elapsed[name])
    resampling = {
        "inbound_8k_to_16k": resampler_report(
            inbound_out, STT_RATE, total, bursts["inbound"], quiet["inbound"]
        ),
        "outbound_24k_to_8k": resampler_report(
            outbound_out, PHONE_RATE, total, bursts["outbound"], quiet["outbound"]
        ),
    }
    return report(samples, frames, warmup) | {"resampler_output": resampling}


def resampler_report(
    outputs: list[int], rate: int, pushes: int, bursts: list[float], quiet: list[float]
) -> dict[str, Any]:
    """How the resampler's output arrives: total, first output, burst size and cost."""
    nonempty = [n for n in outputs if n]
    first = next((i for i, n in enumerate(outputs) if n), None)
    return {
        "samples_out": sum(outputs),
        "samples_in_equivalent": pushes * rate * FRAME_MS // 1000,
        "pushes": pushes,
        "pushes_with_output": len(nonempty),
        "first_output_after_frames": None if first is None else first + 1,
        "mean_burst_ms": round(statistics.fmean(nonempty) / rate * 1000, 1) if nonempty else 0,
        "push_us_median_with_output": round(statistics.median(bursts), 3) if bursts else None,
        "push_us_median_without_output": round(statistics.median(quiet), 3) if quiet else None,
    }


def report(samples: dict[str, list[float]], frames: int, warmup: int) -> dict[str, Any]:
    per_frame: dict[str, Any] = {}
    for name, values in samples.items():
        per_frame[name] = {
            "us": summary(values),
            "frames_per_second_per_core": round(1e6 / statistics.fmean(values)),
        }
    return {
        "frames": frames,
        "warmup": warmup,
        "frame": f"{FRAME_MS} ms, {PHONE_RATE * FRAME_MS // 1000} μ-law bytes",
        "resampler_quality": "medium (livekit default)",
        "per_frame": per_frame,
        # one core carrying the full path both ways for this many calls would be saturated
        "calls_per_core_full_path": round(FRAME_MS * 1000 / statistics.fmean(samples["full"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "audio_codec"}
    result |= measure(args.frames, args.warmup)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
