"""The PostgreSQL results store on a real server (tests/pg_server.py): the SQLite outbox's
behaviours, what a fleet sharing one database adds (held records per worker, claimed
deliveries, one schema), clear errors, and records delivered end to end by two workers."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import psycopg
import pytest

from runtime.call_results import CallResults
from runtime.cli_args import UsageError
from runtime.cli_outbox import add_outbox_commands
from runtime.delivery import DeliveryConfig, open_delivery
from runtime.errors import DialplanError
from runtime.outbox import UnknownRecord
from runtime.pg_outbox import PostgresOutbox, PostgresOutboxError
from runtime.registry import Registry
from tests.pg_server import PostgresServer
from tests.sample_records import CALL_START, sample_record
from tests.webhook_receiver import SECRET, Receiver

SINKS = ("webhook:http://127.0.0.1:9/calls", "jsonl:/tmp/calls.jsonl")


@pytest.fixture
async def outbox(pg_dsn: str) -> AsyncIterator[PostgresOutbox]:
    store = PostgresOutbox(pg_dsn, sinks=SINKS, worker_id="worker-a")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()


def states(outbox: PostgresOutbox, session_id: str) -> dict[str, tuple[str, int]]:
    entry = outbox.entry(session_id)
    assert entry is not None
    return {status.sink: (status.state, status.attempts) for status in entry.deliveries}


def query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    """Another connection, as another worker or an operator would see the database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


# -- what the SQLite outbox does too ----------------------------------------------------


async def test_a_put_record_is_committed_when_put_returns(
    pg_dsn: str, outbox: PostgresOutbox
) -> None:
    await outbox.put(sample_record("call-1"))
    assert query(pg_dsn, "SELECT session_id, held FROM dialplan_records") == [("call-1", False)]
    assert query(pg_dsn, "SELECT version FROM dialplan_results_schema") == [(1,)]
    due = await outbox.due(SINKS, limit=10)
    assert sorted(d.sink for d in due) == sorted(SINKS)
    assert due[0].record() == sample_record("call-1")


async def test_held_records_are_not_due_until_released(outbox: PostgresOutbox) -> None:
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


async def test_held_records_survive_a_restart(pg_dsn: str) -> None:
    first = PostgresOutbox(pg_dsn, sinks=SINKS, worker_id="worker-a")
    await first.put(sample_record("call-1"), held=True)
    await first.put(sample_record("call-2"))
    await first.aclose()
    again = PostgresOutbox(pg_dsn, sinks=SINKS, worker_id="worker-a")
    try:
        assert [r.session_id for r in await again.held()] == ["call-1"]
        await again.release(sample_record("call-1"))
        assert await again.held() == []
        assert states(again, "call-1") == {sink: ("pending", 0) for sink in SINKS}
    finally:
        await again.aclose()


async def test_putting_a_session_again_replaces_it(outbox: PostgresOutbox) -> None:
    await outbox.put(sample_record("call-1"))
    changed = sample_record("call-1").model_copy(update={"disposition": "callback"})
    await outbox.put(changed)
    entries = outbox.entries()
    assert [e.session_id for e in entries] == ["call-1"]
    assert len(entries[0].deliveries) == len(SINKS)
    due = await outbox.due(SINKS, limit=10)
    assert len(due) == len(SINKS)
    assert {d.record().disposition for d in due} == {"callback"}


async def test_concurrent_puts_from_two_workers_all_land_once(
    pg_dsn: str, outbox: PostgresOutbox
) -> None:
    other = PostgresOutbox(pg_dsn, sinks=SINKS, worker_id="worker-b")
    try:
        # both workers put the same 50 sessions (a record put twice), and 150 of their own
        puts = [
            store.put(sample_record(f"shared-{i}")) for i in range(50) for store in (outbox, other)
        ]
        puts += [outbox.put(sample_record(f"a-{i}")) for i in range(75)]
        puts += [other.put(sample_record(f"b-{i}")) for i in range(75)]
        await asyncio.gather(*puts)
    finally:
        await other.aclose()
    ids = [entry.session_id for entry in outbox.entries()]
    assert len(ids) == len(set(ids)) == 200
    assert query(pg_dsn, "SELECT count(*) FROM dialplan_deliveries") == [(200 * len(SINKS),)]


async def test_a_cancelled_put_still_stores_the_record(pg_dsn: str) -> None:
    outbox = PostgresOutbox(pg_dsn, sinks=SINKS)
    put = asyncio.create_task(outbox.put(sample_record("call-1")))
    await asyncio.sleep(0)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    await outbox.aclose()
    assert query(pg_dsn, "SELECT session_id FROM dialplan_records") == [("call-1",)]


async def test_failed_deliveries_retry_and_dead_letter(outbox: PostgresOutbox) -> None:
    await outbox.put(sample_record("call-1"))
    by_sink = {d.sink: d for d in await outbox.due(SINKS, limit=10)}
    webhook, jsonl = by_sink[SINKS[0]], by_sink[SINKS[1]]
    await outbox.mark_failed(webhook, "HTTP 422: missing field", retry_at=None)
    await outbox.mark_failed(jsonl, "disk full", retry_at=time.time() + 3600)
    assert states(outbox, "call-1") == {webhook.sink: ("dead", 1), jsonl.sink: ("pending", 1)}
    # the retry is scheduled, not due: listed without its body
    [scheduled] = await outbox.due(SINKS, limit=10)
    assert (scheduled.sink, scheduled.body, scheduled.attempt) == (jsonl.sink, None, 2)
    assert scheduled.next_attempt_at == pytest.approx(time.time() + 3600, abs=5)
    [entry] = outbox.entries("dead")
    dead = next(s for s in entry.deliveries if s.state == "dead")
    assert dead.last_error == "HTTP 422: missing field"

    assert outbox.retry("call-1") == 2
    assert states(outbox, "call-1") == {sink: ("pending", 0) for sink in SINKS}
    due = await outbox.due(SINKS, limit=10)
    assert len(due) == 2 and all(d.body is not None and d.attempt == 1 for d in due)


async def test_retry_of_an_unknown_session_names_it(outbox: PostgresOutbox) -> None:
    with pytest.raises(UnknownRecord, match="no record with session_id 'nope'") as raised:
        outbox.retry("nope")
    assert outbox.path in str(raised.value)


async def test_an_outcome_for_a_requeued_delivery_is_ignored(outbox: PostgresOutbox) -> None:
    await outbox.put(sample_record("call-1"))
    in_flight = (await outbox.due(SINKS[:1], limit=1))[0]
    await outbox.release(sample_record("call-1").model_copy(update={"disposition": "new"}))
    await outbox.mark_delivered(in_flight)  # the old content went out, not the new one
    assert states(outbox, "call-1")[SINKS[0]] == ("pending", 0)
    [again] = await outbox.due(SINKS[:1], limit=1)
    assert again.record().disposition == "new"


async def test_replay_requeues_records_ended_since(pg_dsn: str) -> None:
    first = PostgresOutbox(pg_dsn, sinks=SINKS[:1])
    for hours in (0, 2, 5):
        ended = CALL_START + dt.timedelta(hours=hours)
        await first.put(sample_record(f"call-{hours}h", ended_at=ended))
    for delivery in await first.due(SINKS, limit=10):
        await first.mark_delivered(delivery)
    await first.aclose()
    # opened with a second sink: replay queues the new sink too
    with PostgresOutbox(pg_dsn, sinks=SINKS) as outbox:
        assert outbox.replay(CALL_START + dt.timedelta(hours=1)) == 2
        assert states(outbox, "call-0h") == {SINKS[0]: ("delivered", 1)}
        for replayed in ("call-2h", "call-5h"):
            assert states(outbox, replayed) == {sink: ("pending", 0) for sink in SINKS}
        assert [e.session_id for e in outbox.entries("pending")] == ["call-5h", "call-2h"]


async def test_listeners_hear_of_deliverable_records(outbox: PostgresOutbox) -> None:
    heard = threading.Event()
    outbox.add_listener(heard.set)
    await outbox.put(sample_record("call-1"), held=True)
    assert not heard.is_set()
    await outbox.release(sample_record("call-1"))
    assert heard.is_set()
    outbox.remove_listener(heard.set)


async def test_a_closed_store_refuses_work(outbox: PostgresOutbox) -> None:
    await outbox.aclose()
    await outbox.aclose()
    with pytest.raises(PostgresOutboxError, match="closed"):
        await outbox.put(sample_record())
    with pytest.raises(PostgresOutboxError, match="closed"):
        outbox.entries()


# -- a fleet sharing one database -------------------------------------------------------


async def test_held_returns_only_this_workers_records_until_a_worker_is_gone(
    pg_dsn: str, outbox: PostgresOutbox
) -> None:
    other = PostgresOutbox(pg_dsn, sinks=SINKS, worker_id="worker-b:41")
    await outbox.put(sample_record("a-busy"), held=True)  # worker-a's post-call work runs
    await other.put(sample_record("b-crashed"), held=True)
    assert [r.session_id for r in await other.held()] == ["b-crashed"]
    await other.aclose()  # worker-b stops (its server session ends, as in a crash)

    restarted = PostgresOutbox(pg_dsn, sinks=SINKS, worker_id="worker-b:42")
    try:
        # worker-b's record is taken over once its session is gone; worker-a's never is
        await eventually(
            lambda: query(
                pg_dsn,
                "SELECT 1 FROM dialplan_records r WHERE NOT "
                "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.holder_pid)",
            )
        )
        assert [r.session_id for r in await restarted.held()] == ["b-crashed"]
        assert await restarted.held() == [sample_record("b-crashed")]
        assert [r.session_id for r in await outbox.held()] == ["a-busy"]
    finally:
        await restarted.aclose()


async def test_workers_claiming_at_once_never_get_the_same_delivery(pg_dsn: str) -> None:
    workers = [PostgresOutbox(pg_dsn, sinks=SINKS, worker_id=f"w{i}") for i in range(4)]
    await asyncio.gather(*(workers[i % 4].put(sample_record(f"call-{i}")) for i in range(100)))
    handed_out: Counter[tuple[str, str]] = Counter()

    async def deliver_all(store: PostgresOutbox) -> None:
        while due := [d for d in await store.due(SINKS, limit=7) if d.body is not None]:
            handed_out.update(d.key for d in due)
            await asyncio.sleep(0.001)  # sending; the other workers claim meanwhile
            await asyncio.gather(*(store.mark_delivered(d) for d in due))

    try:
        await asyncio.gather(*(deliver_all(store) for store in workers))
        assert len(handed_out) == 100 * len(SINKS)
        assert set(handed_out.values()) == {1}
        assert all(s.state == "delivered" for e in workers[0].entries() for s in e.deliveries)
    finally:
        await asyncio.gather(*(store.aclose() for store in workers))


async def test_a_claim_is_due_again_for_others_only_when_its_lease_ends(pg_dsn: str) -> None:
    crashing = PostgresOutbox(pg_dsn, sinks=SINKS[:1], worker_id="w1", lease=0.5)
    survivor = PostgresOutbox(pg_dsn, sinks=SINKS[:1], worker_id="w2")
    try:
        await crashing.put(sample_record("call-1"))
        [claimed] = await crashing.due(SINKS, limit=5)
        await crashing.aclose()  # died mid-send: no outcome recorded
        [waiting] = await survivor.due(SINKS, limit=5)
        assert waiting.body is None and waiting.next_attempt_at > time.time()
        await asyncio.sleep(max(0.0, waiting.next_attempt_at - time.time()) + 0.05)
        [taken_over] = await survivor.due(SINKS, limit=5)
        assert (taken_over.key, taken_over.attempt) == (claimed.key, 1)
        assert taken_over.body is not None
    finally:
        await survivor.aclose()


async def test_a_worker_gets_its_unsent_claims_back_first(outbox: PostgresOutbox) -> None:
    await asyncio.gather(*(outbox.put(sample_record(f"call-{i}")) for i in range(5)))
    first = await outbox.due(SINKS[:1], limit=3)
    again = await outbox.due(SINKS[:1], limit=4)
    assert [d.key for d in again[:3]] == [d.key for d in first]  # renewed, not lost
    assert again[3].key not in {d.key for d in first} and again[3].body is not None


async def test_workers_starting_together_create_the_schema_once(pg_dsn: str) -> None:
    def open_and_close() -> None:
        PostgresOutbox(pg_dsn).close()

    await asyncio.gather(*(asyncio.to_thread(open_and_close) for _ in range(6)))
    assert query(pg_dsn, "SELECT version FROM dialplan_results_schema") == [(1,)]


async def test_puts_carry_on_when_the_server_drops_every_connection(
    pg_dsn: str, outbox: PostgresOutbox
) -> None:
    await asyncio.gather(*(outbox.put(sample_record(f"before-{i}")) for i in range(8)))
    # what a restart or failover does to the worker's connections
    terminated = query(
        pg_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'dialplan worker-a'",
    )
    assert len(terminated) >= 2
    await outbox.put(sample_record("after"))
    assert query(pg_dsn, "SELECT count(*) FROM dialplan_records") == [(9,)]
    assert len(await outbox.due(SINKS, limit=100)) == 9 * len(SINKS)


# -- errors -----------------------------------------------------------------------------


def test_an_unreachable_database_names_host_and_database_never_the_password(
    postgres_server: PostgresServer,
) -> None:
    closed_port = postgres_server.port + 1 if postgres_server.port < 65535 else 1
    for dsn in (
        f"host=127.0.0.1 port={closed_port} dbname=calls user=dialplan password=hunter2",
        f"postgresql://dialplan:hunter2@127.0.0.1:{closed_port}/calls",
    ):
        with pytest.raises(PostgresOutboxError) as raised:
            PostgresOutbox(dsn)
        message = str(raised.value)
        assert isinstance(raised.value, DialplanError)
        assert message.startswith(f"postgresql://dialplan@127.0.0.1:{closed_port}/calls: ")
        assert "cannot connect" in message and "DIALPLAN_RESULTS_DSN" in message
        assert "hunter2" not in message

    missing = postgres_server.dsn("no_such_db") + " password=hunter2"
    with pytest.raises(PostgresOutboxError, match='database "no_such_db" does not exist') as raised:
        PostgresOutbox(missing)
    assert "hunter2" not in str(raised.value)
    with pytest.raises(PostgresOutboxError, match="not a PostgreSQL DSN"):
        PostgresOutbox("just some words")


def test_the_path_is_the_dsn_without_its_password(pg_dsn: str) -> None:
    with PostgresOutbox(pg_dsn + " password=hunter2") as outbox:
        assert outbox.path.startswith("postgresql://postgres@127.0.0.1:")
        assert "hunter2" not in outbox.path


def test_the_cli_does_not_create_tables_and_refuses_a_newer_schema(pg_dsn: str) -> None:
    with pytest.raises(PostgresOutboxError, match="no dialplan results here"):
        PostgresOutbox(pg_dsn, create=False)
    PostgresOutbox(pg_dsn).close()
    PostgresOutbox(pg_dsn, create=False).close()
    query(pg_dsn, "UPDATE dialplan_results_schema SET version = 2 RETURNING version")
    with pytest.raises(PostgresOutboxError, match=r"newer dialplan \(results schema 2"):
        PostgresOutbox(pg_dsn)


# -- end to end -------------------------------------------------------------------------


async def test_two_workers_deliver_each_record_exactly_once(
    pg_dsn: str, receiver: Receiver, registry: Registry
) -> None:
    config = DeliveryConfig(
        postgres_dsn=pg_dsn, webhooks=(receiver.url,), webhook_secret=SECRET, hooks=False
    )
    fleet = []
    for worker_id in ("worker-a", "worker-b"):
        store, deliverer = open_delivery(config, registry, worker_id=worker_id)
        deliverer.poll_interval = 0.05  # each also delivers what the other worker released
        fleet.append(CallResults(registry, store, deliverer))
    for results in fleet:
        await results.start()
    try:
        ended = [fleet[i % 2].ended(sample_record(f"call-{i}"), None) for i in range(40)]
        await asyncio.gather(*ended)
        await eventually(lambda: len(receiver.accepted) == 40)
        await asyncio.sleep(0.3)  # a second send would arrive now
    finally:
        for results in fleet:
            await results.aclose()
    assert receiver.accepted == {f"call-{i}": 1 for i in range(40)}
    assert len(receiver.arrivals) == 40 and receiver.unsigned == 0
    with PostgresOutbox(pg_dsn) as outbox:
        assert {s.state for e in outbox.entries() for s in e.deliveries} == {"delivered"}


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


def outbox_command(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """``dialplan outbox ARGS...`` with runtime.cli.main's error handling."""
    parser = argparse.ArgumentParser(prog="dialplan")
    add_outbox_commands(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["outbox", *args])
    try:
        status = parsed.handler(parsed)
    except UsageError as exc:
        print(f"dialplan: {exc}", file=sys.stderr)
        status = 2
    except DialplanError as exc:
        print(f"dialplan: error: {exc}", file=sys.stderr)
        status = 1
    captured = capsys.readouterr()
    return Ran(status, captured.out, captured.err)


async def test_the_outbox_cli_works_on_the_shared_store(
    pg_dsn: str,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIALPLAN_WEBHOOK_SECRET", SECRET)
    missing = outbox_command(capsys, "list", "--postgres", pg_dsn)
    assert missing.status == 1 and "no dialplan results here" in missing.err
    sinks = [f"webhook:{receiver.url}"]
    now = dt.datetime.now(dt.timezone.utc)
    store = PostgresOutbox(pg_dsn, sinks=sinks)
    await store.put(sample_record("call-1", ended_at=now - dt.timedelta(minutes=30)))
    [delivery] = await store.due(sinks, limit=1)
    await store.mark_failed(delivery, "HTTP 410: gone", retry_at=None)
    await store.aclose()

    monkeypatch.setenv("DIALPLAN_RESULTS_DSN", pg_dsn)
    listed = outbox_command(capsys, "list", "--state", "dead")
    assert listed.status == 0 and "HTTP 410: gone" in listed.out
    assert outbox_command(capsys, "retry", "call-1").out == "call-1: 1 delivery due now\n"
    ran = await asyncio.to_thread(outbox_command, capsys, "deliver", "--once")
    assert ran.status == 0, ran.err
    assert ran.out.splitlines()[0].startswith("delivering from postgresql://postgres@127.0.0.1")
    assert receiver.accepted == {"call-1": 1}
    replayed = outbox_command(capsys, "replay", "--since", "1h")
    assert replayed.out.startswith("re-queued 1 record(s)")
