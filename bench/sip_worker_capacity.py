"""How many simultaneous SIP calls one `dialplan start` worker holds on one core.

The phone lab (phonelab/: livekit-server, livekit-sip, Redis) with one worker pinned to one
core (``taskset -c``; everything else, this process, the stack and the phones, on the other
cores), serving the shipped receptionist with its shipped offline voice (silero VAD,
Whisper tiny.en, piper). For k = 1, 2, 3 ... baresip phones (one account each,
+1555012NN) call at once (each ``--stagger`` after the one before), hear the greeting,
ask ``--questions`` questions in the caller voice "ann", each after the answer to the one
before, and hang up. The RTP reaching the phones is captured with kernel timestamps
(phonelab/capture.py). Per k:

- ``lateness_ms``: at the phones, for each packet of the bot's speech (inside its lines,
  by energy) the arrival gap to the packet before minus the 20 ms its sequence numbers
  call for; p99 over every stream of the round.
- ``dropout_frames``: frames of the bot's speech that arrived as exact digital silence
  (livekit-sip's mixer with nothing buffered; a 0.4 s stall of the worker did not make
  any: Opus concealment upstream fills the gap first).
- ``worker_send_lateness_ms``: the same for the worker's own audio packets (Opus/RED, SRTP
  with the RTP header in the clear) on their way to livekit-server, against their RTP
  timestamps: the worker's UDP ports are read from /proc while the calls run. livekit-sip
  sends the phone a frame every 20 ms on its own clock whatever arrives (its mixer, with
  Opus concealment upstream), so a worker that falls behind hardly shows in the phones'
  RTP timing; it shows here (a 0.4 s SIGSTOP of the worker: one 0.4 s late packet here,
  nothing at the phones).

- ``reply_ms``: from the last frame of each question above the floor, on the wire, to the
  first frame of the answer above it.
- the worker's RSS (/proc/<pid>/status VmRSS): idle before the ramp, peak in the round,
  and (peak - idle) / k; its CPU use in the round (share of its one core).

The ramp stops at the first k with a p99 (at the phones or as the worker sends) over
``--lateness-limit-ms`` (20) or with a call not answered, or at ``--max-calls`` (6).

    .ci/in-private-net .venv/bin/python bench/sip_worker_capacity.py [--max-calls 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_stats import machine, percentile  # noqa: E402
from sip_lab import (  # noqa: E402
    INBOUND_NUMBER,
    WEBRTC_PORT,
    cpu_seconds,
    first_loud_after,
    lab,
    ms,
    packet_at,
    phones,
    rss_mb,
    udp_ports,
    wav_pcm,
    wire_call,
)

from phonelab.baresip import Phone  # noqa: E402
from phonelab.capture import (  # noqa: E402
    Capture,
    digital_silence,
    lateness,
    sender_lateness,
)
from phonelab.listening import wait_for_lines  # noqa: E402
from phonelab.project import Project  # noqa: E402
from phonelab.voices import caller_line  # noqa: E402

AUDIO_PAYLOAD_TYPES = (63, 111)  # RED (what livekit's Rust SDK publishes), Opus
QUESTIONS = ["What are your opening hours?", "Where are you located?", "Can I book a cleaning?"]


def user(index: int) -> str:
    return f"+1555012{index:02d}"


def new_dec_file(phone: Phone, before: set[Path], timeout: float = 15.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(phone.recordings.glob("*-dec.wav")) - before
        if new:
            return new.pop()
        time.sleep(0.02)
    raise TimeoutError(f"{phone.user}: no recording within {timeout:g} s")


def child_processes(pid: int) -> list[int]:
    """The worker's own child processes (its jobs run on threads: expected none)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def one_call(phone: Phone, uri: str, delay: float, questions: list[Path], log: dict) -> None:
    """Dial, hear the greeting, ask each question after the answer before, hang up."""
    try:
        time.sleep(delay)
        before_files = set(phone.recordings.glob("*-dec.wav"))
        before_events = len(phone.events())
        phone.play(phone.dir / "silence.wav")  # the last call's question is not said again
        phone.dial(uri)
        phone.wait_event("CALL_ESTABLISHED", timeout=30, after=before_events)
        dec = new_dec_file(phone, before_files)

        def heard() -> bytes:
            return wav_pcm(dec)

        wait_for_lines(heard, 1, timeout=60)
        for index, question in enumerate(questions):
            phone.play(question)
            try:
                wait_for_lines(heard, index + 2, timeout=60)
            except TimeoutError:
                log.setdefault("unanswered", 0)
                log["unanswered"] += 1
        phone.hang_up()
        phone.wait_event("CALL_CLOSED", timeout=15, after=before_events)
    except Exception as exc:  # reported in the round's row
        log["error"] = f"{type(exc).__name__}: {exc}"


def analyse(wire: Capture, used: list[Phone], mark: int) -> dict[str, Any]:
    late: list[float] = []
    speech_frames = dropouts = 0
    replies: list[float] = []
    unanswered: list[str] = []
    for phone in used:
        try:
            call = wire_call(wire, phone, mark)
        except LookupError as exc:
            unanswered.append(str(exc))
            continue
        packets = call.to_phone
        inside: list[int] = []
        for line in call.bot_lines():
            inside += range(round(line.start * 50), min(len(packets), round(line.end * 50)))
        late += lateness(packets, inside)
        speech_frames += len(inside)
        dropouts += sum(digital_silence(packets[i]) for i in inside)
        for line in call.caller_lines():
            end = packet_at(call.from_phone, line.end - 0.02) + 0.02
            answer = first_loud_after(packets, end)
            if answer is not None:
                replies.append(answer - end)
    late_ms = [x * 1000 for x in late]
    return {
        "calls_answered": len(used) - len(unanswered),
        "lateness_ms": {
            "p50": round(percentile(late_ms, 50), 2),
            "p99": round(percentile(late_ms, 99), 2),
            "max": round(max(late_ms), 2),
            "packets": len(late_ms),
        }
        if late_ms
        else None,
        "dropout_frames": dropouts,
        "bot_speech_frames": speech_frames,
        "reply_ms": {
            "median": ms(percentile(replies, 50)),
            "p90": ms(percentile(replies, 90)),
            "turns": len(replies),
        }
        if replies
        else None,
    }


def worker_side(wire: Capture, mark: int, legs: set[int]) -> dict[str, Any] | None:
    """Lateness of the worker's own audio packets (Opus/RED) on their way to livekit-server."""
    sent = [p for p in wire.since(mark) if p.sport in legs and p.dport == WEBRTC_PORT]
    late_ms = [x * 1000 for x in sender_lateness(sent, AUDIO_PAYLOAD_TYPES)]
    if not late_ms:
        return None
    return {
        "p50": round(percentile(late_ms, 50), 2),
        "p99": round(percentile(late_ms, 99), 2),
        "max": round(max(late_ms), 2),
        "packets": len(late_ms),
    }


def held(row: dict[str, Any], limit_ms: float) -> bool:
    """Every call of the round answered, and the bot's audio on time (p99 lateness) at the
    phones and as the worker sends it."""
    if row["calls_answered"] != row["calls"]:
        return False
    return all(
        row[key] is not None and row[key]["p99"] <= limit_ms
        for key in ("lateness_ms", "worker_send_lateness_ms")
    )


def on_time(row: dict[str, Any], key: str, limit_ms: float) -> bool:
    late = row[key]
    return row["calls_answered"] == row["calls"] and late is not None and late["p99"] <= limit_ms


def records_stored(project: Project, before: int, count: int, timeout: float = 60.0) -> int:
    """Wait (up to ``timeout``) for the round's call records, so the next round starts on
    an idle worker; how many arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(project.records()) >= before + count:
            break
        time.sleep(0.2)
    return len(project.records()) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-calls", type=int, default=6)
    parser.add_argument("--questions", type=int, default=2, help="per call (at most 3)")
    parser.add_argument("--worker-core", type=int, default=1)
    parser.add_argument("--lateness-limit-ms", type=float, default=20.0)
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between dials")
    parser.add_argument("--from-calls", type=int, default=1, help="the ramp's first k")
    parser.add_argument("--workdir", type=Path, help="keep the lab's files here (logs, records)")
    args = parser.parse_args()
    cores = os.sched_getaffinity(0)
    others = cores - {args.worker_core}
    if others:  # this process, the stack and the phones stay off the worker's core
        os.sched_setaffinity(0, others)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sip-capacity-") as tmp:
        workdir = args.workdir or Path(tmp)
        questions = [
            caller_line(text, workdir / f"question-{i}.wav", then_silence=60)
            for i, text in enumerate(QUESTIONS[: args.questions])
        ]
        users = [user(i) for i in range(args.max_calls)]
        with (
            Capture(also=(WEBRTC_PORT,)) as wire,
            # capacity well above the ramp: the worker's own limit is not what is measured
            lab(workdir, max_calls=2 * args.max_calls + 2, worker_core=args.worker_core) as (
                stack,
                project,
                worker,
            ),
            phones(workdir, users) as all_phones,
        ):
            pinned = sorted(os.sched_getaffinity(worker.pid))
            time.sleep(2)
            idle = rss_mb(worker.pid)
            children = child_processes(worker.pid)
            uri = stack.sip_uri(INBOUND_NUMBER)
            for k in range(args.from_calls, args.max_calls + 1):
                used = all_phones[:k]
                before_records = len(project.records())
                mark = wire.mark()
                logs: list[dict[str, Any]] = [{} for _ in used]
                threads = [
                    threading.Thread(
                        target=one_call, args=(phone, uri, i * args.stagger, questions, log)
                    )
                    for i, (phone, log) in enumerate(zip(used, logs, strict=True))
                ]
                started, cpu_before, peak = time.monotonic(), cpu_seconds(worker.pid), 0.0
                legs: set[int] = set()  # the worker's WebRTC ports, one set per call
                for thread in threads:
                    thread.start()
                while any(thread.is_alive() for thread in threads):
                    peak = max(peak, rss_mb(worker.pid))
                    legs |= udp_ports(worker.pid)
                    time.sleep(0.25)
                cpu = (cpu_seconds(worker.pid) - cpu_before) / (time.monotonic() - started)
                ended = time.monotonic()
                stored = records_stored(project, before_records, k)
                row = {
                    "calls": k,
                    **analyse(wire, used, mark),
                    "worker_send_lateness_ms": worker_side(wire, mark, legs),
                    "worker_rss_mb": round(peak, 1),
                    "rss_per_call_mb": round((peak - idle) / k, 1),
                    "worker_cpu_share": round(cpu, 2),
                    "seconds": round(time.monotonic() - started, 1),
                    "capture_drops": wire.drops(),
                    "records_stored": stored,
                    "records_wait_s": round(time.monotonic() - ended, 1),
                }
                problems = [log for log in logs if log]
                if problems:
                    row["problems"] = problems
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if not held(row, args.lateness_limit_ms):
                    break
                time.sleep(2)  # the worker settles between rounds
    limit = args.lateness_limit_ms
    at_phones = [row["calls"] for row in rows if on_time(row, "lateness_ms", limit)]
    at_worker = [row["calls"] for row in rows if on_time(row, "worker_send_lateness_ms", limit)]
    held_calls = [row["calls"] for row in rows if held(row, limit)]
    result = {
        "benchmark": "sip_worker_capacity",
        "worker_cores": pinned,
        "lateness_limit_ms": args.lateness_limit_ms,
        "max_calls_tried": args.max_calls,
        "calls_held": max(held_calls, default=0),
        "calls_on_time_at_the_phones": max(at_phones, default=0),
        "calls_on_time_as_the_worker_sends": max(at_worker, default=0),
        "stopped_early": bool(rows) and rows[-1]["calls"] not in held_calls,
        "worker_idle_rss_mb": round(idle, 1),
        "worker_child_processes": len(children),
        "rss_per_call_mb_at_max": rows[-1]["rss_per_call_mb"] if rows else None,
        "rounds": rows,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
