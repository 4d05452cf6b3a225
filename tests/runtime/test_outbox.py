"""The outbox on real SQLite files: put, held/release, list, retry, replay, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from runtime.outbox import Outbox, OutboxError, UnknownRecord
from tests.sample_records import CALL_START, sample_record

SINKS = ("webhook:http://127.0.0.1:9/calls", "jsonl:/tmp/calls.jsonl")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", sinks=SINKS) as opened:
        yield opened


def states(outbox: Outbox, session_id: str) -> dict[str, tuple[str, int]]:
    entry = outbox.entry(session_id)
    assert entry is not None
    return {status.sink: (status.state, status.attempts) for status in entry.deliveries}


async def test_a_put_record_is_on_disk_when_put_returns(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, sinks=SINKS) as outbox:
        await outbox.put(sample_record("call-1"))
        # another connection, as after a crash: the commit is already there
        with closing(sqlite3.connect(path)) as reader:
            rows = reader.execute("SELECT session_id, held FROM records").fetchall()
        assert rows == [("call-1", 0)]
        due = await outbox.due(SINKS, limit=10)
    assert sorted(d.sink for d in due) == sorted(SINKS)
    assert due[0].record() == sample_record("call-1")
    with closing(sqlite3.connect(path)) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_held_records_are_not_due_until_released(outbox: Outbox) -> None:
    record = sample_record("call-1")
    record.post_call_analysis = None
    await outbox.put(record, held=True)
    assert await outbox.due(SINKS, limit=10) == []
    assert [e.session_id for e in outbox.entries("held")] == ["call-1"]
    assert await outbox.held() == [record]

    analysed = record.model_copy(update={"post_call_analysis": {"intent": "reschedule"}})
    await outbox.release(analysed)
    assert await outbox.held() == []
    due = await outbox.due(SINKS, limit=10)
    assert {d.sink for d in due} == set(SINKS)
    assert all(d.record().post_call_analysis == {"intent": "reschedule"} for d in due)


def test_held_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, sinks=SINKS) as outbox:
        outbox.put_sync(sample_record("call-1"), held=True)
        outbox.put_sync(sample_record("call-2"))
    with Outbox(path, sinks=SINKS) as reopened:
        assert [r.session_id for r in reopened.held_sync()] == ["call-1"]
        reopened.release_sync(sample_record("call-1"))
        assert reopened.held_sync() == []
        assert states(reopened, "call-1") == {sink: ("pending", 0) for sink in SINKS}


async def test_putting_a_session_again_replaces_it(outbox: Outbox) -> None:
    await outbox.put(sample_record("call-1"))
    changed = sample_record("call-1").model_copy(update={"disposition": "callback"})
    await outbox.put(changed)
    entries = outbox.entries()
    assert [e.session_id for e in entries] == ["call-1"]
    assert len(entries[0].deliveries) == len(SINKS)
    due = await outbox.due(SINKS, limit=10)
    assert len(due) == len(SINKS)
    assert {d.record().disposition for d in due} == {"callback"}


async def test_concurrent_puts_from_tasks_and_threads_all_land(outbox: Outbox) -> None:
    records = [sample_record(f"task-{i}") for i in range(200)]

    def sync_putter(worker: int) -> None:
        for i in range(25):
            outbox.put_sync(sample_record(f"thread-{worker}-{i}"))

    threads = [threading.Thread(target=sync_putter, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(outbox.put(record) for record in records))
    await asyncio.gather(*(asyncio.to_thread(thread.join) for thread in threads))
    ids = [entry.session_id for entry in outbox.entries()]
    assert len(ids) == len(set(ids)) == 300
    assert len(await outbox.due(SINKS, limit=1000)) == 300 * len(SINKS)


async def test_a_cancelled_put_still_stores_the_record(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, sinks=SINKS)
    put = asyncio.create_task(outbox.put(sample_record("call-1")))
    await asyncio.sleep(0)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    await outbox.aclose()
    with Outbox(path) as reopened:
        assert [e.session_id for e in reopened.entries()] == ["call-1"]


async def test_failed_deliveries_retry_and_dead_letter(outbox: Outbox) -> None:
    await outbox.put(sample_record("call-1"))
    by_sink = {d.sink: d for d in await outbox.due(SINKS, limit=10)}
    webhook, jsonl = by_sink[SINKS[0]], by_sink[SINKS[1]]
    await outbox.mark_failed(webhook, "HTTP 422: missing field", retry_at=None)
    await outbox.mark_failed(jsonl, "disk full", retry_at=9e9)
    assert states(outbox, "call-1") == {webhook.sink: ("dead", 1), jsonl.sink: ("pending", 1)}
    # the retry is scheduled, not due: listed without its body
    [scheduled] = await outbox.due(SINKS, limit=10)
    assert (scheduled.sink, scheduled.body, scheduled.attempt) == (jsonl.sink, None, 2)
    assert [e.session_id for e in outbox.entries("dead")] == ["call-1"]
    [entry] = outbox.entries("dead")
    dead = next(s for s in entry.deliveries if s.state == "dead")
    assert dead.last_error == "HTTP 422: missing field"

    assert outbox.retry("call-1") == 2
    assert states(outbox, "call-1") == {sink: ("pending", 0) for sink in SINKS}
    due = await outbox.due(SINKS, limit=10)
    assert all(d.body is not None and d.attempt == 1 for d in due)


async def test_retry_of_an_unknown_session_names_it(outbox: Outbox) -> None:
    with pytest.raises(UnknownRecord, match="no record with session_id 'nope'") as raised:
        outbox.retry("nope")
    assert str(outbox.path) in str(raised.value)


async def test_an_outcome_for_a_requeued_delivery_is_ignored(outbox: Outbox) -> None:
    await outbox.put(sample_record("call-1"))
    in_flight = (await outbox.due(SINKS[:1], limit=1))[0]
    await outbox.release(sample_record("call-1").model_copy(update={"disposition": "new"}))
    await outbox.mark_delivered(in_flight)  # the old content went out, not the new one
    assert states(outbox, "call-1")[SINKS[0]] == ("pending", 0)
    [again] = await outbox.due(SINKS[:1], limit=1)
    assert again.record().disposition == "new"


async def test_replay_requeues_records_ended_since(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, sinks=SINKS[:1]) as outbox:
        for hours in (0, 2, 5):
            ended = CALL_START + dt.timedelta(hours=hours)
            await outbox.put(sample_record(f"call-{hours}h", ended_at=ended))
        for delivery in await outbox.due(SINKS, limit=10):
            await outbox.mark_delivered(delivery)
    # reopened with a second sink: replay queues the new sink too
    with Outbox(path, sinks=SINKS) as outbox:
        since = CALL_START + dt.timedelta(hours=1)
        assert outbox.replay(since) == 2
        assert states(outbox, "call-0h") == {SINKS[0]: ("delivered", 1)}
        for replayed in ("call-2h", "call-5h"):
            assert states(outbox, replayed) == {sink: ("pending", 0) for sink in SINKS}
        assert [e.session_id for e in outbox.entries("pending")] == ["call-5h", "call-2h"]


async def test_listeners_hear_of_deliverable_records(outbox: Outbox) -> None:
    heard = threading.Event()
    outbox.add_listener(heard.set)
    await outbox.put(sample_record("call-1"), held=True)
    assert not heard.is_set()
    await outbox.release(sample_record("call-1"))
    assert heard.is_set()


def test_opening_problems_name_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(OutboxError, match=r"no outbox here.*DIALPLAN_OUTBOX"):
        Outbox(missing, create=False)
    assert not missing.exists()

    garbage = tmp_path / "notes.txt"
    garbage.write_text("these are not the records you are looking for\n" * 100)
    with pytest.raises(OutboxError, match=r"notes\.txt: not a dialplan outbox"):
        Outbox(garbage)

    with pytest.raises(OutboxError, match=r"no-such-dir.*cannot open"):
        Outbox(tmp_path / "no-such-dir" / "outbox.db")


def test_a_closed_outbox_refuses_work(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.put_sync(sample_record())
