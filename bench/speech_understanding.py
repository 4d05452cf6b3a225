"""Does the offline stack understand callers? Intent accuracy and word error rate of each
offline recognizer on the caller-line test set (tests/speech_set: 80 lines for the three
shipped bots, one scenario each, covering every rule, tool and transition).

Each line is spoken by a caller voice that is not the bot's (runtime/caller_voices.py:
"ann" and "bob" are Piper with pitch, formants and pace moved; "robot" is eSpeak NG),
gets a phone line's hiss, goes through μ-law at 8 kHz and is recognized by the STT; the
line's scenario then runs on what was heard. Intent accuracy = scenarios whose
expectations (the reply, the tool, the step) held. WER ignores case, punctuation and
fillers ("uh", "um"). The real-time factor is the recognizer's time over the audio's,
with one CPU thread.

    uv run python bench/speech_understanding.py [--voices ann bob robot] [--stt ...]
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

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_stats import machine  # noqa: E402

SPEECH_SET = REPO / "tests" / "speech_set"
# (label, provider, options): the default now, and the default before it
RECOGNIZERS = {
    "faster_whisper": ("faster_whisper", {"cpu_threads": 1}),
    "pocketsphinx": ("pocketsphinx", {}),
}


async def measure(label: str, voice: str) -> dict[str, Any]:
    from runtime.registry import load_registry
    from runtime.scenario_hearing import Hearing
    from runtime.scenario_suite import run_suite
    from runtime.voice_synth import CallerVoice

    registry = load_registry()
    provider, options = RECOGNIZERS[label]
    hearing = Hearing(registry, CallerVoice.named(registry, voice), stt=(provider, options))
    started = time.perf_counter()
    try:
        outcome = await run_suite(
            REPO / "bots",
            registry,
            prompts_dir=REPO / "prompts",
            scenarios=SPEECH_SET,
            hear=hearing,
            out=lambda _: None,
        )
    finally:
        await hearing.aclose()
    errors, words = hearing.word_errors()
    audio = sum(line.audio_seconds for line in hearing.lines)
    recognizing = sum(line.recognize_seconds for line in hearing.lines)
    passed = sum(result.passed for result in outcome.results)
    missed = [
        {"said": m.said, "expected": m.expected, "got": m.got}
        for result in outcome.results
        for m in result.mismatches[:1]
    ]
    return {
        "stt": label,
        "voice": voice,
        "lines": len(outcome.results),
        "intent_accuracy": round(passed / max(len(outcome.results), 1), 3),
        "wer": round(errors / max(words, 1), 3),
        "real_time_factor_one_thread": round(recognizing / max(audio, 1e-9), 3),
        "recognize_ms_median": round(
            sorted(line.recognize_seconds for line in hearing.lines)[len(hearing.lines) // 2]
            * 1000,
            1,
        ),
        "seconds": round(time.perf_counter() - started, 1),
        "missed": missed,
    }


def model_memory() -> dict[str, Any]:
    """Resident memory a process gains by loading the default recognizer (measured in a
    fresh process, so nothing else is loaded yet), and the load time."""
    import subprocess

    code = (
        "import time, json\n"
        "from pathlib import Path\n"
        "def rss():\n"
        "    for l in Path('/proc/self/status').read_text().splitlines():\n"
        "        if l.startswith('VmRSS:'): return int(l.split()[1]) / 1024\n"
        "from plugins.stt.faster_whisper import FasterWhisperOptions\n"
        "from plugins.stt.faster_whisper_stt import WhisperSTT, resolve_model\n"
        "import numpy as np\n"
        "o = FasterWhisperOptions(cpu_threads=1)\n"
        "before = rss(); t = time.perf_counter()\n"
        "stt = WhisperSTT(o, resolve_model(o)); stt.warm()\n"
        "print(json.dumps({'load_and_warm_s': round(time.perf_counter() - t, 2),"
        " 'rss_gain_mb': round(rss() - before, 1), 'rss_mb': round(rss(), 1)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", nargs="+", default=["ann", "bob", "robot"])
    parser.add_argument("--stt", nargs="+", default=list(RECOGNIZERS), choices=RECOGNIZERS)
    args = parser.parse_args()
    os.chdir(Path(os.environ.get("TMPDIR", "/tmp")))  # the dentist's calendar file lands here
    results = []
    for label in args.stt:
        for voice in args.voices:
            results.append(asyncio.run(measure(label, voice)))
            print(
                json.dumps({k: v for k, v in results[-1].items() if k != "missed"}), file=sys.stderr
            )
    summary = {}
    for label in args.stt:
        mine = [r for r in results if r["stt"] == label and r["voice"] != "robot"]
        if mine:
            summary[label] = {
                "intent_accuracy_human_voices": round(
                    sum(r["intent_accuracy"] * r["lines"] for r in mine)
                    / sum(r["lines"] for r in mine),
                    3,
                ),
                "wer_human_voices": round(sum(r["wer"] for r in mine) / len(mine), 3),
            }
    print(
        json.dumps(
            {
                "benchmark": "speech_understanding",
                "summary": summary,
                "default_recognizer_memory": model_memory(),
                "results": results,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
