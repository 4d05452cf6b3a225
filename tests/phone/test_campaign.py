"""A campaign against the real stack: each row is a real outbound SIP call; a callee who
refuses the first call (486 Busy Here) is called again and answers the retry."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from phonelab.baresip import Phone
from phonelab.listening import assert_heard, wait_for_lines
from phonelab.project import DIALPLAN, Project
from phonelab.voices import caller_line
from tests.phone.conftest import CALLEE_NUMBER, PHONE_IP

BUSY_FIRST = "+15550124"


def test_a_campaign_calls_every_row_and_retries_the_busy_one(
    project: Project, worker: object, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "phone,customer_name,appointment_time\n"
        f"{CALLEE_NUMBER},Ada,Tuesday at 3 pm\n"
        f"{BUSY_FIRST},Bob,Friday at 10 am\n"
    )
    yes = caller_line("Yes, I'll be there.", tmp_path / "yes.wav")
    phone = Phone(
        tmp_path,
        CALLEE_NUMBER,
        ip=PHONE_IP,
        sip_port=5080,
        control_port=4445,
        auto_answer=True,
        ringing_users=(BUSY_FIRST,),
    )
    phone.start()
    campaign = subprocess.Popen(
        [
            str(DIALPLAN),
            "campaign",
            "run",
            str(rows),
            "--bot",
            "reminder",
            "--concurrency",
            "1",
            "--max-attempts",
            "2",
            "--retry-delay",
            "2s",
            "--state",
            str(tmp_path / "campaign.db"),
        ],
        cwd=project.dir,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        refused, answered = 0, []
        seen, deadline = 0, time.monotonic() + 150
        while campaign.poll() is None and time.monotonic() < deadline:
            events = phone.events()
            for event in events[seen:]:
                to = str(event.get("accountaor", ""))
                if event.get("type") == "CALL_INCOMING" and BUSY_FIRST in to:
                    if refused == 0:
                        refused += 1
                        phone.hang_up()  # busy: the campaign must come back
                    else:
                        phone.accept()
                elif event.get("type") == "CALL_ESTABLISHED":
                    call = len(answered)  # the n-th answered call wrote the n-th file
                    # the greeting is two sentences: a busy machine may pause between them
                    greeting = wait_for_lines(
                        lambda c=call: phone.heard(c), 1, timeout=30, gap=2.0
                    )[0]
                    answered.append(to)
                    name = "bob" if BUSY_FIRST in to else "ada"
                    assert_heard(f"calling for {name} you have an appointment", greeting.pcm)
                    phone.play(yes)
                elif event.get("type") == "CALL_CLOSED":
                    phone.quiet()  # the next call starts silent
            seen = len(events)
            time.sleep(0.1)
        output, _ = campaign.communicate(timeout=60)
    finally:
        if campaign.poll() is None:
            campaign.kill()
        phone.stop()
    assert campaign.returncode == 0, output
    assert refused == 1 and len(answered) == 2, (answered, output)

    def ours(record: dict) -> bool:
        return record["direction"] == "outbound" and record["callee"] in (CALLEE_NUMBER, BUSY_FIRST)

    records = sorted(project.wait_records(3, ours), key=lambda r: r["started_at"])
    by_callee = {n: [r for r in records if r["callee"] == n] for n in (CALLEE_NUMBER, BUSY_FIRST)}
    assert [r["disconnected_by"] for r in by_callee[CALLEE_NUMBER]] == ["bot"]
    bob = [(r["disconnected_by"], r["sip_status"]) for r in by_callee[BUSY_FIRST]]
    assert bob == [("no_answer", 486), ("bot", None)], bob
    status = project.run(
        "campaign",
        "status",
        str(rows),
        "--bot",
        "reminder",
        "--state",
        str(tmp_path / "campaign.db"),
    )
    assert status.returncode == 0, status.stderr
    assert "2/2 done — answered 2, no answer 0, failed 0" in status.stdout, status.stdout
