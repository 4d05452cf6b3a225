"""Call setup over real SIP: baresip dials the receptionist through livekit-sip.

The phone lab (phonelab/: livekit-server, livekit-sip, Redis, a `dialplan start` worker
with the shipped bots) in a private network namespace; baresip places N inbound calls one
after another. Per call:

- dial → established: from the ctrl_tcp ``dial`` command to baresip's CALL_ESTABLISHED
  event (both on this process's clock); and INVITE → 200 OK as the wire saw them (an
  AF_PACKET capture with kernel timestamps, phonelab/capture.py).
- 200 OK → greeting: from the 200 OK reaching the phone to the first 20 ms frame of the
  greeting above the speech floor (listening.SPEECH_RMS) that the phone received:
  ``heard`` from the phone's decoded recording (dec.wav), its position tied to wall time
  (bench/sip_lab.FileClock: a 5 ms poll of the growing file); ``polled`` the poll that
  first saw the frame (late by up to a poll); ``on_the_wire`` the RTP packet's arrival.

Each call hangs up once the greeting is heard and waits for the call's record before the
next. A warm-up call first (the worker's first call) is reported on its own.

    .ci/in-private-net .venv/bin/python bench/sip_call_setup.py [--calls 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_stats import machine, summary  # noqa: E402
from sip_lab import (  # noqa: E402
    INBOUND_NUMBER,
    FileClock,
    lab,
    ms,
    new_call_files,
    phones,
    wav_pcm,
    wire_call,
)

from phonelab.capture import Capture, ulaw_pcm  # noqa: E402
from phonelab.listening import FRAME, SPEECH_RMS  # noqa: E402

CALLER = "+15550111"


def first_loud_frame(pcm16: bytes) -> int | None:
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype=np.int16).astype(np.float32)
    count = len(samples) // FRAME
    frames = samples[: count * FRAME].reshape(count, FRAME)
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > SPEECH_RMS)[0]
    return int(loud[0]) if len(loud) else None


def one_call(phone: Any, project: Any, clock: FileClock, wire: Capture) -> dict[str, Any]:
    before_files = clock.files()
    before_events = len(phone.events())
    before_records = len(project.records())
    mark = wire.mark()
    dialed = time.monotonic()
    phone.dial(project.stack.sip_uri(INBOUND_NUMBER))
    established = phone.wait_event("CALL_ESTABLISHED", timeout=30, after=before_events)
    dec, _enc = new_call_files(clock, before_files)
    deadline = time.monotonic() + 30
    while clock.loud_seen(dec) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no greeting within 30 s")
        time.sleep(0.01)
    time.sleep(0.3)  # some of it on the wire and in the file
    phone.hang_up()
    phone.wait_event("CALL_CLOSED", timeout=15, after=before_events)
    project.wait_records(
        before_records + 1, lambda r: r["variables"].get("caller_number") == CALLER
    )
    call = wire_call(wire, phone, mark)
    frame = first_loud_frame(wav_pcm(phone.recordings / dec))
    start = clock.start_of(dec)
    on_wire = next((p.at for p in call.to_phone if p.at >= call.ok_at and _loud(p.payload)), None)
    polled = clock.loud_seen(dec)
    assert frame is not None and start is not None and on_wire is not None and polled
    heard_at = start + frame * 0.02
    return {
        "dial_to_established_ms": ms(established["at"] - dialed),
        "invite_to_200ok_ms": ms(call.ok_at - call.invite_at),
        "200ok_to_greeting_heard_ms": ms(heard_at - call.ok_at),
        "200ok_to_greeting_polled_ms": ms(polled - call.ok_at),
        "200ok_to_greeting_on_the_wire_ms": ms(on_wire - call.ok_at),
    }


def _loud(payload: bytes) -> bool:
    samples = ulaw_pcm(payload).astype(np.float32)
    return bool(len(samples)) and float(np.sqrt((samples**2).mean())) > SPEECH_RMS


def stats(per_call: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {name: round(value, 1) for name, value in summary([c[key] for c in per_call]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1, help="calls before the measured ones")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sip-call-setup-") as tmp:
        workdir = Path(tmp)
        with (
            Capture() as wire,
            lab(workdir) as (_stack, project, _worker),
            phones(workdir, [CALLER]) as (phone,),
            FileClock(phone.recordings) as clock,
        ):
            warmup = [one_call(phone, project, clock, wire) for _ in range(args.warmup)]
            per_call = [one_call(phone, project, clock, wire) for _ in range(args.calls)]
    keys = [key for key in per_call[0]]
    result = {
        "benchmark": "sip_call_setup",
        "calls": len(per_call),
        **{key: stats(per_call, key) for key in keys},
        "warmup": warmup,
        "capture_drops": wire.dropped_by_kernel,
        "per_call": per_call,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
