"""Campaigns on real SQLite files, with a fake dialer scripted per number (the edge).

Stays on a fake dialer: every outcome (403, 500, invalid rows, resume after Ctrl-C) for
dozens of rows in seconds; real SIP calls: tests/phone/test_campaign.py.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from runtime.fleet.campaign import (
    RAISE_STREAK_LIMIT,
    Campaign,
    CampaignAborted,
    CampaignCall,
    CampaignError,
    CampaignProgress,
    Dial,
)
from runtime.fleet.campaign_csv import campaign_id_for
from runtime.fleet.campaign_progress import ProgressBar
from runtime.fleet.campaign_store import CampaignStore, StoredRow
from runtime.fleet.outcome import DialOutcome
from runtime.record import DisconnectedBy

BOT = "reminder"


class FakeDialer:
    """Answers every number unless ``script`` says otherwise: a list of what each attempt
    does, in order (the last step repeats): answered, busy, rejected, raise, hang."""

    def __init__(self, script: dict[str, Sequence[str]] | None = None, delay: float = 0.0):
        self.script = script or {}
        self.delay = delay
        self.calls: list[CampaignCall] = []
        self.started_at: dict[str, list[float]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.hang = asyncio.Event()  # hung calls end when this is set

    async def __call__(self, call: CampaignCall) -> DialOutcome:
        self.calls.append(call)
        self.started_at.setdefault(call.to, []).append(time.monotonic())
        steps = self.script.get(call.to, ["answered"])
        step = steps[min(len(self.tries(call.to)) - 1, len(steps) - 1)]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if step == "hang":
                await self.hang.wait()
            return outcome(call, step)
        finally:
            self.in_flight -= 1

    def tries(self, number: str) -> list[CampaignCall]:
        return [call for call in self.calls if call.to == number]

    def dialled(self) -> set[str]:
        return {call.to for call in self.calls}


def outcome(call: CampaignCall, step: str) -> DialOutcome:
    room = f"call_{call.session_id}"
    if step in ("answered", "hang"):
        return DialOutcome(call.session_id, room, answered=True)
    if step == "busy":
        return DialOutcome(call.session_id, room, False, DisconnectedBy.NO_ANSWER, 486)
    if step == "rejected":
        return DialOutcome(call.session_id, room, False, DisconnectedBy.REJECTED, 403)
    raise ConnectionError("trunk unreachable")


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+1555010{index:04d}" for index in range(start, start + count)]


def write_csv(path: Path, phones: Sequence[str], header: str = "phone,name") -> Path:
    lines = [header, *(f"{phone},Customer {index}" for index, phone in enumerate(phones))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored_rows(store_path: Path, csv_path: Path, bot: str = BOT) -> dict[str, StoredRow]:
    with CampaignStore(store_path, create=False) as store:
        return {row.phone: row for row in store.rows(campaign_id_for(csv_path, bot))}


def campaign(
    tmp_path: Path,
    csv_path: Path,
    dial: Dial,
    *,
    concurrency: int = 4,
    max_attempts: int = 3,
    retry_delay: float = 0.01,
    phone_column: str | None = None,
    progress: Callable[[CampaignProgress], None] | None = None,
) -> Campaign:
    return Campaign(
        csv_path,
        BOT,
        dial,
        store_path=tmp_path / "state.db",
        concurrency=concurrency,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        phone_column=phone_column,
        progress=progress,
    )


# -- dialling --------------------------------------------------------------------------


async def test_concurrency_never_exceeds_the_limit_and_every_row_is_dialled(
    tmp_path: Path,
) -> None:
    phones = numbers(40)
    dial = FakeDialer(delay=0.005)
    summary = await campaign(tmp_path, write_csv(tmp_path / "leads.csv", phones), dial).run()
    assert dial.max_in_flight == 4
    assert sorted(call.to for call in dial.calls) == phones
    assert (summary.total, summary.answered, summary.pending, summary.placed) == (40, 40, 0, 40)
    assert summary.calls_per_second > 0


async def test_busy_twice_then_answered_takes_three_attempts(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100"])
    dial = FakeDialer({"+15550100": ["busy", "busy", "answered"]})
    summary = await campaign(tmp_path, csv_path, dial).run()
    tries = dial.tries("+15550100")
    assert [call.attempt for call in tries] == [1, 2, 3]
    assert summary.answered == 1
    row = stored_rows(tmp_path / "state.db", csv_path)["+15550100"]
    assert (row.state, row.attempts, row.session_id) == ("answered", 3, tries[-1].session_id)
    with CampaignStore(tmp_path / "state.db") as store:
        recorded = store.session_ids(tries[0].campaign_id, row.row_number)
    assert recorded == [call.session_id for call in tries]
    assert len(set(recorded)) == 3


async def test_busy_forever_ends_as_no_answer_after_max_attempts(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100"])
    dial = FakeDialer({"+15550100": ["busy"]})
    summary = await campaign(tmp_path, csv_path, dial, max_attempts=3).run()
    assert len(dial.tries("+15550100")) == 3
    assert (summary.no_answer, summary.failed, summary.pending) == (1, 0, 0)
    row = stored_rows(tmp_path / "state.db", csv_path)["+15550100"]
    assert (row.state, row.outcome, row.attempts) == ("no_answer", "no_answer", 3)


async def test_rejected_fails_without_a_retry(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100"])
    dial = FakeDialer({"+15550100": ["rejected", "answered"]})
    summary = await campaign(tmp_path, csv_path, dial).run()
    assert len(dial.tries("+15550100")) == 1
    assert summary.failed == 1
    row = stored_rows(tmp_path / "state.db", csv_path)["+15550100"]
    assert (row.state, row.outcome, row.reason) == ("failed", "rejected", "SIP 403")


async def test_a_retry_waits_for_its_delay_while_other_rows_are_dialled(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100", *numbers(5)])
    dial = FakeDialer({"+15550100": ["busy", "answered"]}, delay=0.02)
    await campaign(tmp_path, csv_path, dial, concurrency=1, retry_delay=0.15).run()
    first, second = dial.started_at["+15550100"]
    assert second - first >= 0.15
    others = [dial.started_at[phone][0] for phone in numbers(5)]
    assert any(first < started < second for started in others)


async def test_a_zero_retry_delay_retries_at_once(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100"])
    dial = FakeDialer({"+15550100": ["busy", "busy", "answered"]})
    started = time.monotonic()
    summary = await campaign(tmp_path, csv_path, dial, retry_delay=0).run()
    assert summary.answered == 1 and len(dial.calls) == 3
    assert time.monotonic() - started < 1.0


async def test_invalid_rows_are_never_dialled(tmp_path: Path) -> None:
    csv_path = tmp_path / "leads.csv"
    csv_path.write_text(
        "phone,name\n+1 555-0100,Ada\nnot a number,Bob\n12,Cy\n,Di\n+15550104,Ed,extra\n\n"
        "+15550105,Flo,\n",
        encoding="utf-8",
    )
    dial = FakeDialer()
    summary = await campaign(tmp_path, csv_path, dial).run()
    assert dial.dialled() == {"+15550100", "+15550105"}
    assert (summary.total, summary.answered, summary.invalid) == (6, 2, 4)
    rows = stored_rows(tmp_path / "state.db", csv_path)
    reasons = {phone: row.reason for phone, row in rows.items() if row.state == "invalid"}
    assert reasons == {
        "not a number": "'not a number' is not a phone number; write it in E.164, e.g. +15550100",
        "12": "'12' is not a phone number; write it in E.164, e.g. +15550100",
        "": "no phone number in column 'phone'",
        "+15550104": "3 cells, but the header has 2 columns",
    }


async def test_variables_are_the_other_columns_without_empty_cells(tmp_path: Path) -> None:
    csv_path = tmp_path / "leads.csv"
    csv_path.write_text(
        "\ufeffName,Phone,Due Date,Note\nAda, +15550100 ,2025-03-01,\n", encoding="utf-8"
    )
    dial = FakeDialer()
    await campaign(tmp_path, csv_path, dial).run()
    (call,) = dial.calls
    assert call.to == "+15550100"
    assert call.variables == {"Name": "Ada", "Due Date": "2025-03-01"}
    assert (call.bot, call.row_number, call.attempt) == (BOT, 1, 1)
    assert len(call.session_id) == 32


async def test_an_explicit_phone_column(tmp_path: Path) -> None:
    csv_path = tmp_path / "leads.csv"
    csv_path.write_text("phone,mobile\n+15550100,+15550199\n", encoding="utf-8")
    dial = FakeDialer()
    await campaign(tmp_path, csv_path, dial, phone_column="mobile").run()
    assert [(call.to, call.variables) for call in dial.calls] == [
        ("+15550199", {"phone": "+15550100"})
    ]


# -- the dialer failing ----------------------------------------------------------------


async def test_a_dial_that_raises_fails_only_its_row(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", numbers(5))
    dial = FakeDialer({numbers(1)[0]: ["raise"]})
    summary = await campaign(tmp_path, csv_path, dial).run()
    assert (summary.answered, summary.failed) == (4, 1)
    row = stored_rows(tmp_path / "state.db", csv_path)[numbers(1)[0]]
    assert (row.state, row.outcome) == ("failed", "error")
    assert row.reason == "ConnectionError: trunk unreachable"


async def test_a_dialer_that_keeps_raising_stops_the_campaign(tmp_path: Path) -> None:
    phones = numbers(60)
    csv_path = write_csv(tmp_path / "leads.csv", phones)
    broken = FakeDialer({phone: ["raise"] for phone in phones})
    with pytest.raises(CampaignAborted) as aborted:
        await campaign(tmp_path, csv_path, broken, concurrency=3).run()
    message = str(aborted.value)
    assert f"raised ConnectionError on {RAISE_STREAK_LIMIT}" in message
    assert "trunk unreachable" in message and str(csv_path) in message
    assert RAISE_STREAK_LIMIT <= len(broken.calls) < RAISE_STREAK_LIMIT + 3
    # the rows a broken dialer touched are not failed: the next run tries them again
    assert aborted.value.summary.failed == 0
    assert {row.state for row in stored_rows(tmp_path / "state.db", csv_path).values()} == {
        "pending"
    }
    working = FakeDialer()
    summary = await campaign(tmp_path, csv_path, working, max_attempts=1).run()
    assert (summary.answered, sorted(working.dialled())) == (60, phones)
    assert all(call.attempt == 1 for call in working.calls)


# -- resuming --------------------------------------------------------------------------


async def test_a_stopped_run_resumes_with_the_rest(tmp_path: Path) -> None:
    phones = numbers(20)
    csv_path = write_csv(tmp_path / "leads.csv", phones)
    first_dial = FakeDialer(delay=0.005)
    first = campaign(tmp_path, csv_path, first_dial, concurrency=2)

    async def dial_then_stop(call: CampaignCall) -> DialOutcome:
        if len(first_dial.calls) == 5:
            first.stop()
        return await first_dial(call)

    first.dial = dial_then_stop
    stopped = await first.run()
    assert 6 <= stopped.placed <= 7  # the calls in progress at stop() still end
    assert stopped.answered == stopped.placed and stopped.pending == 20 - stopped.placed
    assert "in_progress" not in {
        r.state for r in stored_rows(tmp_path / "state.db", csv_path).values()
    }

    second_dial = FakeDialer()
    resumed = await campaign(tmp_path, csv_path, second_dial).run()
    assert first_dial.dialled().isdisjoint(second_dial.dialled())
    assert first_dial.dialled() | second_dial.dialled() == set(phones)
    assert resumed.campaign.opened.resumed
    assert resumed.campaign.done_at_start == stopped.placed
    assert (resumed.answered, resumed.pending) == (20, 0)


async def crash_with_a_call_in_progress(tmp_path: Path, csv_path: Path) -> str:
    """Run until only the hung call is left, then cancel the run as a crash would."""
    dial = FakeDialer({"+15550100": ["hang"]})
    task = asyncio.create_task(campaign(tmp_path, csv_path, dial).run())
    while len(dial.calls) < 3 or dial.in_flight > 1:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)  # the answered calls' outcomes are committed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return dial.tries("+15550100")[0].session_id


async def test_a_call_in_progress_at_a_crash_counts_as_an_attempt_and_is_retried(
    tmp_path: Path,
) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100", "+15550101", "+15550102"])
    lost_session = await crash_with_a_call_in_progress(tmp_path, csv_path)
    assert stored_rows(tmp_path / "state.db", csv_path)["+15550100"].state == "in_progress"

    dial = FakeDialer()
    summary = await campaign(tmp_path, csv_path, dial, max_attempts=3).run()
    assert [(call.to, call.attempt) for call in dial.calls] == [("+15550100", 2)]
    assert summary.campaign.opened.interrupted == 1
    assert "1 call(s) cut off by the last run count as attempts" in summary.campaign.header()
    row = stored_rows(tmp_path / "state.db", csv_path)["+15550100"]
    assert (row.state, row.attempts) == ("answered", 2)
    with CampaignStore(tmp_path / "state.db") as store:
        sessions = store.session_ids(dial.calls[0].campaign_id, row.row_number)
    assert sessions == [lost_session, dial.calls[0].session_id]


async def test_a_call_in_progress_at_a_crash_on_its_last_attempt_fails(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100", "+15550101", "+15550102"])
    await crash_with_a_call_in_progress(tmp_path, csv_path)
    dial = FakeDialer()
    summary = await campaign(tmp_path, csv_path, dial, max_attempts=1).run()
    assert dial.calls == []
    assert (summary.answered, summary.failed, summary.pending) == (2, 1, 0)
    row = stored_rows(tmp_path / "state.db", csv_path)["+15550100"]
    assert (row.state, row.outcome) == ("failed", "interrupted")
    assert row.reason is not None and row.reason.startswith("interrupted")


async def test_the_campaign_is_the_csv_content_and_the_bot(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", numbers(3))
    first = await campaign(tmp_path, csv_path, FakeDialer()).run()
    again = await campaign(tmp_path, csv_path, FakeDialer()).run()
    assert again.campaign.campaign_id == first.campaign.campaign_id
    assert again.campaign.opened.resumed and again.placed == 0
    assert campaign_id_for(csv_path, BOT) == first.campaign.campaign_id
    assert campaign_id_for(csv_path, "other-bot") != first.campaign.campaign_id

    write_csv(csv_path, numbers(4))
    edited_dial = FakeDialer()
    edited = await campaign(tmp_path, csv_path, edited_dial).run()
    assert edited.campaign.campaign_id != first.campaign.campaign_id
    assert edited.campaign.opened.replaces == first.campaign.campaign_id
    assert f"the file changed since campaign {first.campaign.campaign_id}" in (
        edited.campaign.header()
    )
    assert len(edited_dial.calls) == 4


async def test_resuming_with_another_phone_column_is_refused(tmp_path: Path) -> None:
    csv_path = tmp_path / "leads.csv"
    csv_path.write_text("phone,mobile\n+15550100,+15550199\n", encoding="utf-8")
    await campaign(tmp_path, csv_path, FakeDialer(), concurrency=1).run()
    with pytest.raises(CampaignError, match="pass --phone-column phone to resume it"):
        await campaign(tmp_path, csv_path, FakeDialer(), phone_column="mobile").run()


def test_the_store_answers_the_status_command(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", ["+15550100", "oops", "+15550102"])
    dial = FakeDialer({"+15550102": ["busy"]})
    asyncio.run(campaign(tmp_path, csv_path, dial, max_attempts=2).run())
    with CampaignStore(tmp_path / "state.db", create=False) as store:
        counts = store.summary(campaign_id_for(csv_path, BOT))
        assert store.summary("no-such-campaign") is None
        rows = store.rows(campaign_id_for(csv_path, BOT), states=["invalid"])
    assert counts is not None
    assert (counts.total, counts.answered, counts.no_answer, counts.invalid) == (3, 1, 1, 1)
    assert (counts.done, counts.bot_id, counts.csv_path) == (3, BOT, str(csv_path.resolve()))
    assert [row.phone for row in rows] == ["oops"]


# -- progress --------------------------------------------------------------------------


async def test_progress_done_counts_rise_to_the_total(tmp_path: Path) -> None:
    phones = [*numbers(30), "bad"]
    csv_path = write_csv(tmp_path / "leads.csv", phones)
    seen: list[CampaignProgress] = []
    dial = FakeDialer({phones[0]: ["busy", "answered"]}, delay=0.002)
    summary = await campaign(tmp_path, csv_path, dial, progress=seen.append).run()
    done = [snapshot.done for snapshot in seen]
    assert done == sorted(done)
    assert done[0] == 1 and done[-1] == 31
    assert seen[-1].final and seen[-1] == summary
    assert max(snapshot.in_progress for snapshot in seen) <= 4
    assert any(snapshot.retry_pending for snapshot in seen)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_the_progress_bar_redraws_one_line_on_a_terminal(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", numbers(3))
    screen, now = Terminal(), [0.0]
    bar = ProgressBar(screen, clock=lambda: now[0])
    await campaign(tmp_path, csv_path, FakeDialer(), progress=bar).run()
    header, line, end = screen.getvalue().split("\n")
    assert header.startswith("campaign ") and header.endswith("3 rows (new)")
    # the clock stood still: the first snapshot and the final one, nothing in between
    assert line.count("\r") == 2 and end == ""
    assert line.rstrip().endswith("calls/s") and "3/3 100%" in line


async def test_the_progress_bar_writes_a_line_now_and_then_in_a_log(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "leads.csv", numbers(100))
    log = io.StringIO()
    await campaign(tmp_path, csv_path, FakeDialer(), progress=ProgressBar(log)).run()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 3 <= len(lines) <= 13  # the header, then every 10 percent at most
    assert lines[-1].startswith("[####################] 100/100 100%")


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty; its first line names the columns"),
        (b"phone,name\n", "no rows after the header"),
        (b"phone,name\n+15550100,Jos\xe9\n", ":2: not UTF-8 text"),
        (b"phone,name,name\n+15550100,a,b\n", "the header names name more than once"),
        (b"mobile,name\n+15550100,a\n", "no phone/to/number/phone_number column; its col"),
        (b"phone,,name\n+15550100,,a\n", "column 2 of the header has no name"),
    ],
)
async def test_unusable_csv_files_are_named_in_the_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    csv_path = tmp_path / "leads.csv"
    csv_path.write_bytes(content)
    dial = FakeDialer()
    with pytest.raises(CampaignError) as raised:
        await campaign(tmp_path, csv_path, dial).run()
    assert str(raised.value).startswith(str(csv_path))
    assert message in str(raised.value)
    assert dial.calls == []


async def test_a_missing_csv_and_a_missing_phone_column_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=re.escape(f"{tmp_path / 'nowhere.csv'}: no such file")):
        await campaign(tmp_path, tmp_path / "nowhere.csv", FakeDialer()).run()
    csv_path = write_csv(tmp_path / "leads.csv", numbers(1))
    with pytest.raises(
        CampaignError, match=re.escape("no column 'mobile'; its columns are phone, name")
    ):
        await campaign(tmp_path, csv_path, FakeDialer(), phone_column="mobile").run()
