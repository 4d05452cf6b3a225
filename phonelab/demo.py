"""`make phone-demo`: one real phone call to the receptionist bot, on this machine.

Starts Redis, livekit-server and livekit-sip (built from their Go modules by
`.ci/build-livekit`), provisions them from a `dialplan.toml`, starts a `dialplan start`
worker, and has baresip call the inbound number: the caller listens to the greeting, asks
for the opening hours, then says goodbye. Prints what the caller heard (transcribed
offline), the bot's transcript and the call record. Everything runs inside a private
network namespace (`.ci/in-private-net`) and is stopped at the end.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from phonelab.baresip import Phone
from phonelab.listening import lines, transcribe, wait_for_lines
from phonelab.processes import LabError
from phonelab.project import Project
from phonelab.stack import LiveKitStack
from phonelab.voices import caller_line

NUMBER = "+15550100"
CALLER = "+15550111"
FLEET = f"""\
[worker]
agent_name = "dialplan-demo"
bots = "bots"
max_concurrent_calls = 2
port = 0

[results]
outbox = "outbox.db"
jsonl = "records.jsonl"

[[trunks.inbound]]
name = "demo"
numbers = ["{NUMBER}"]

[[routes]]
number = "{NUMBER}"
bot = "receptionist"
"""


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def call(stack: LiveKitStack, project: Project, workdir: Path) -> dict[str, Any]:
    """Provision, start a worker, place the call; the delivered record."""
    step("dialplan provision")
    print("   " + project.provision().stdout.strip().replace("\n", "\n   "))
    step("dialplan start (loading the voice models)")
    project.start_worker()
    phone = Phone(workdir, CALLER, ip="10.77.0.2")
    question = caller_line("What are your opening hours?", workdir / "question.wav")
    goodbye = caller_line("Thank you, goodbye.", workdir / "goodbye.wav")
    phone.start()
    try:
        step(f"baresip ({CALLER}) calls {NUMBER}")
        dialed = time.monotonic()
        phone.dial(stack.sip_uri(NUMBER))
        phone.wait_event("CALL_ESTABLISHED", timeout=30)
        print(f"   answered after {time.monotonic() - dialed:.2f} s")
        heard = [wait_for_lines(phone.heard, 1, timeout=30)[0]]
        print(f"   caller hears: {transcribe(heard[0].pcm)!r}")
        print("   caller says:  'What are your opening hours?'")
        phone.play(question)
        heard.append(wait_for_lines(phone.heard, 2, timeout=45)[1])
        print(f"   caller hears: {transcribe(heard[1].pcm)!r}")
        print("   caller says:  'Thank you, goodbye.'")
        phone.play(goodbye)
        phone.wait_event("CALL_CLOSED", timeout=60)
        for line in lines(phone.heard())[2:]:  # the call is over: every line is whole
            print(f"   caller hears: {transcribe(line.pcm)!r}")
        print("   the bot hung up (the phone got a BYE)")
    finally:
        phone.stop()
    (record,) = project.wait_records(1)
    return record


def run(workdir: Path) -> int:
    step("starting Redis, livekit-server and livekit-sip (built once into ~/.cache)")
    with LiveKitStack(workdir / "stack") as stack:
        print(f"   LiveKit {stack.url}, SIP {stack.sip_uri(NUMBER)}")
        project = Project(workdir / "project", stack, FLEET)
        try:
            record = call(stack, project, workdir)
        finally:
            project.stop_workers()  # also when the call failed: no worker outlives the demo
    step("the bot's transcript")
    for entry in record["transcript"]:
        print(f"   {entry['role']:>8}: {entry['text']}")
    step("the call record (records.jsonl, delivered through the outbox)")
    summary = {
        key: record[key]
        for key in (
            "session_id",
            "bot_id",
            "transport",
            "direction",
            "caller",
            "callee",
            "duration",
            "disconnected_by",
            "disposition",
            "recording_key",
        )
    }
    print(json.dumps(summary, indent=2))
    print(f"   full record and logs: {workdir}")
    return 0


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dialplan-phone-demo-"))
    try:
        return run(workdir)
    except (LabError, TimeoutError) as exc:
        print(f"phone demo failed: {exc}\n(logs in {workdir})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
