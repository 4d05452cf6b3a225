"""Voice-to-voice latency over real SIP/RTP, and the same bot over Twilio Media Streams.

The phone lab (phonelab/: livekit-server, livekit-sip, Redis, one `dialplan start` worker)
serves the shipped receptionist with its shipped offline voice (silero VAD, Whisper
tiny.en, the rules LLM, piper). baresip calls it and, after the greeting, says the lines
of bots/receptionist.demo.txt in the caller voice "ann" (with line hiss), each once the
bot's answer to the one before has been heard, the same lines and voice
bench/voice_latency.py speaks over Twilio. A turn's latency is from the end of the
caller's line to the first 20 ms frame of the bot's answer above the speech floor:

- ``heard_ms``: on the phone's own recordings, the caller's line as sent (enc.wav) and
  the answer as received (dec.wav), their positions tied to wall time by a 5 ms poll of
  the growing files (bench/sip_lab.FileClock).
- ``on_the_wire_ms``: the RTP packets' kernel arrival times (phonelab/capture.py): the
  caller's at livekit-sip's port, the bot's at the phone's (no jitter buffer).

The end of a line is where its synthesized audio ends (the last frame above the floor
plus the synthesizer's trailing quiet in the WAV, ``caller_trailing_quiet_ms``), as
bench/voice_latency.py takes it (the last frame of the line leaving); ``heard_ms_from_last_
loud_frame`` leaves the trailing quiet out. The ``twilio`` key is bench/voice_latency.py's
run with Whisper (its ``run(calls, "faster_whisper")``), after the SIP stack has stopped.

    .ci/in-private-net .venv/bin/python bench/sip_voice_to_voice.py [--calls 2] [--no-twilio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_stats import machine, percentile  # noqa: E402
from sip_lab import (  # noqa: E402
    INBOUND_NUMBER,
    FileClock,
    file_lines,
    first_loud_after,
    lab,
    ms,
    new_call_files,
    packet_at,
    phones,
    wav_pcm,
    wire_call,
)
from voice_latency import EXPECTED_REPLIES, LINES  # noqa: E402

from phonelab.capture import Capture  # noqa: E402
from phonelab.listening import lines, wait_for_lines  # noqa: E402
from phonelab.processes import LabError  # noqa: E402
from phonelab.voices import caller_line  # noqa: E402

CALLER = "+15550111"
LEAD = 0.3  # seconds of silence before each line in its WAV
PAD = 60.0  # and after it (baresip hangs up when the file ends)


class Said:
    """A caller line's WAV and where its speech sits in it."""

    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = caller_line(text, path, then_silence=PAD, lead=LEAD)
        with wave.open(str(path)) as wav:
            total = wav.getnframes() / wav.getframerate()
        spoken = lines(wav_pcm(path))
        self.synth_end = total - PAD  # where the synthesized audio ends
        self.trailing_quiet = self.synth_end - spoken[-1].end


def one_call(
    phone: Any, project: Any, clock: FileClock, wire: Capture, said: list[Said]
) -> dict[str, Any]:
    before_files = clock.files()
    before_events = len(phone.events())
    before_records = len(project.records())
    mark = wire.mark()
    phone.play(phone.dir / "silence.wav")  # the last call's "bye" is not said again
    phone.dial(project.stack.sip_uri(INBOUND_NUMBER))
    phone.wait_event("CALL_ESTABLISHED", timeout=30, after=before_events)
    dec, enc = new_call_files(clock, before_files)
    dec_path, enc_path = phone.recordings / dec, phone.recordings / enc

    def heard() -> bytes:
        return wav_pcm(dec_path)

    wait_for_lines(heard, 1, timeout=30)  # the greeting
    played: list[float] = []
    closed = False
    for index, line in enumerate(said):
        played.append(time.monotonic())
        phone.play(line.path)
        if index == len(said) - 1:  # "Thanks, bye!": the bot says goodbye and hangs up
            with contextlib.suppress(LabError):
                phone.wait_event("CALL_CLOSED", timeout=40, after=before_events)
                closed = True
        else:
            with contextlib.suppress(TimeoutError):  # no answer: the turn counts as missed
                wait_for_lines(heard, index + 2, timeout=30)
    if not closed:
        phone.hang_up()
        phone.wait_event("CALL_CLOSED", timeout=15, after=before_events)
    record = project.wait_records(
        before_records + 1, lambda r: r["variables"].get("caller_number") == CALLER
    )[-1]
    return {
        "turns": turns(phone, clock, wire, mark, said, played, dec_path, enc_path),
        "record": record,
    }


def turns(
    phone: Any,
    clock: FileClock,
    wire: Capture,
    mark: int,
    said: list[Said],
    played: list[float],
    dec_path: Path,
    enc_path: Path,
) -> list[dict[str, Any]]:
    call = wire_call(wire, phone, mark)
    dec_start, enc_start = clock.start_of(dec_path.name), clock.start_of(enc_path.name)
    assert dec_start is not None and enc_start is not None
    sent = [(enc_start + x.start, enc_start + x.end) for x in file_lines(enc_path)]
    received = [dec_start + x.start for x in file_lines(dec_path)]
    on_wire = [
        (packet_at(call.from_phone, x.start), packet_at(call.from_phone, x.end - 0.02) + 0.02)
        for x in call.caller_lines()
    ]
    out = []
    for index, (line, at) in enumerate(zip(said, played, strict=True)):
        until = played[index + 1] if index + 1 < len(played) else float("inf")
        turn: dict[str, Any] = {"said": line.text}
        # the caller's line: the first one after the play command, in each view
        spoken = next((end for start, end in sent if at - 0.1 <= start < until), None)
        if spoken is not None:
            end = spoken + line.trailing_quiet
            answer = next((start for start in received if start > end), None)
            if answer is not None and answer < until + 30:
                turn["heard_ms"] = ms(answer - end)
                turn["heard_ms_from_last_loud_frame"] = ms(answer - spoken)
        spoken_wire = next((end for start, end in on_wire if at - 0.1 <= start < until), None)
        if spoken_wire is not None:
            end = spoken_wire + line.trailing_quiet
            answer = first_loud_after(call.to_phone, end)
            if answer is not None and answer < until + 30:
                turn["on_the_wire_ms"] = ms(answer - end)
        out.append(turn)
    return out


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def run_sip(calls: int, workdir: Path) -> dict[str, Any]:
    said = [Said(text, workdir / f"line-{i}.wav") for i, text in enumerate(LINES)]
    results = []
    with (
        Capture() as wire,
        lab(workdir) as (_stack, project, _worker),
        phones(workdir, [CALLER]) as (phone,),
        FileClock(phone.recordings) as clock,
    ):
        for _ in range(calls):
            results.append(one_call(phone, project, clock, wire, said))
    all_turns = [turn for result in results for turn in result["turns"]]
    right, heard, bot_said = 0, [], []
    for result in results:
        record = result["record"]
        bot_lines = [e["text"] for e in record["transcript"] if e["role"] == "bot"][1:]
        right += sum(
            1
            for expected, text in zip(EXPECTED_REPLIES, bot_lines, strict=False)
            if expected in text
        )
        heard += [e["text"] for e in record["transcript"] if e["role"] == "customer"]
        bot_said += bot_lines

    def column(key: str) -> list[float]:
        return [turn[key] for turn in all_turns if key in turn]

    return {
        "transport": "sip (baresip → livekit-sip → livekit-server → dialplan start)",
        "stt": "faster_whisper",
        "turns": len(column("heard_ms")),
        "lines_said": len(all_turns),
        "replies_right": f"{right}/{len(LINES) * calls}",
        "heard": heard,
        "said": bot_said,
        "heard_ms": spread(column("heard_ms")),
        "on_the_wire_ms": spread(column("on_the_wire_ms")),
        "heard_ms_from_last_loud_frame": spread(column("heard_ms_from_last_loud_frame")),
        "caller_trailing_quiet_ms": [ms(line.trailing_quiet) for line in said],
        "capture_drops": wire.dropped_by_kernel,
        "per_turn": all_turns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2, help="calls over each transport")
    parser.add_argument("--no-twilio", action="store_true", help="SIP only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sip-v2v-") as tmp:
        sip = run_sip(args.calls, Path(tmp))
    result: dict[str, Any] = {"benchmark": "sip_voice_to_voice", "sip": sip}
    if not args.no_twilio:
        from voice_latency import run as twilio_run

        result["twilio"] = asyncio.run(twilio_run(args.calls, "faster_whisper"))
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
