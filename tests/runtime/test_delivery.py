"""The deliverer against a real webhook receiver, a JSONL file and plugin hooks; retries,
dead letters, shutdown, and a process killed with SIGKILL mid-delivery."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.delivery import (
    Deliverer,
    DeliveryConfig,
    DeliveryConfigError,
    DeliveryOutcome,
    RetryPolicy,
    build_sinks,
    open_delivery,
)
from runtime.hookspecs import hookimpl
from runtime.outbox import Outbox, OutboxError
from runtime.record import CallRecord
from runtime.registry import Registry
from runtime.sinks import HookSink, JsonlSink, WebhookSink
from tests.conftest import REPO
from tests.sample_records import sample_record
from tests.webhook_receiver import SECRET, Receiver

FAST = RetryPolicy(max_attempts=20, base=0.02, cap=0.2)


class LongestBackoff(random.Random):
    """Full jitter that always draws its upper bound, so the backoff is exact to check."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        await receiver.close()


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def webhook_outbox(outbox_path: Path, receiver: Receiver) -> Iterator[tuple[Outbox, WebhookSink]]:
    sink = WebhookSink(receiver.url, SECRET, timeout=5)
    with Outbox(outbox_path, sinks=[sink.name]) as outbox:
        yield outbox, sink


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def states(outbox: Outbox) -> dict[str, tuple[str, int]]:
    """session_id -> (state, attempts) of its one delivery."""
    found: dict[str, tuple[str, int]] = {}
    for entry in outbox.entries():
        [status] = entry.deliveries
        found[entry.session_id] = (status.state, status.attempts)
    return found


async def test_records_reach_a_signed_webhook_without_polling_lag(
    receiver: Receiver, webhook_outbox: tuple[Outbox, WebhookSink]
) -> None:
    outbox, sink = webhook_outbox
    await receiver.start()
    deliverer = Deliverer(outbox, [sink], poll_interval=60)
    deliverer.start()
    try:
        started = time.monotonic()
        records = [sample_record(f"call-{i}") for i in range(3)]
        for record in records:
            await outbox.put(record)
        await eventually(lambda: len(receiver.accepted) == 3)
        assert time.monotonic() - started < 5  # woken by the put, not by the 60 s poll
        await eventually(lambda: set(states(outbox).values()) == {("delivered", 1)})
    finally:
        await deliverer.aclose()
    assert receiver.unsigned == 0
    for record in records:
        [arrival] = receiver.attempts_of(record.session_id)
        assert arrival.attempt == 1
        assert arrival.body.decode() == record.model_dump_json()
        assert CallRecord.model_validate_json(arrival.body) == record


async def test_a_webhook_that_was_down_gets_each_record_once(
    receiver: Receiver, webhook_outbox: tuple[Outbox, WebhookSink]
) -> None:
    outbox, sink = webhook_outbox
    receiver.answer = lambda key, nth: 503 if nth <= 2 else 200
    deliverer = Deliverer(outbox, [sink], policy=FAST, rng=LongestBackoff())
    deliverer.start()
    try:
        for i in range(5):
            await outbox.put(sample_record(f"call-{i}"))
        # connection refused, twice for every record, before the receiver comes up
        await eventually(lambda: all(a >= 2 for _, a in states(outbox).values()))
        await receiver.start()
        await eventually(lambda: len(receiver.accepted) == 5)
        await eventually(lambda: {s for s, _ in states(outbox).values()} == {"delivered"})
    finally:
        await deliverer.aclose()
    assert receiver.accepted == {f"call-{i}": 1 for i in range(5)}
    for session_id, (_, attempts) in states(outbox).items():
        arrivals = receiver.attempts_of(session_id)
        assert [a.status for a in arrivals] == [503, 503, 200]
        assert arrivals[-1].attempt == attempts >= 5
        for before, after in itertools.pairwise(arrivals):
            assert after.attempt == before.attempt + 1
            bound = min(FAST.cap, FAST.base * 2 ** (before.attempt - 1))
            assert after.at - before.at >= bound - 0.002
    [entry] = outbox.entries(limit=1)
    assert entry.deliveries[0].last_error is None


async def test_a_refusing_webhook_dead_letters_and_retry_delivers_after_the_fix(
    receiver: Receiver, webhook_outbox: tuple[Outbox, WebhookSink]
) -> None:
    outbox, sink = webhook_outbox
    receiver.answer = lambda key, nth: 422
    receiver.error_body = '{"error": "missing field: caller"}'
    await receiver.start()
    deliverer = Deliverer(outbox, [sink], policy=FAST, poll_interval=60)
    deliverer.start()
    try:
        await outbox.put(sample_record("call-1"))
        await eventually(lambda: states(outbox) == {"call-1": ("dead", 1)})
        [entry] = outbox.entries("dead")
        error = entry.deliveries[0].last_error or ""
        assert "HTTP 422" in error and "missing field: caller" in error
        assert len(receiver.arrivals) == 1  # refused for good: never retried on its own

        receiver.answer = lambda key, nth: 200
        assert outbox.retry("call-1") == 1
        await eventually(lambda: states(outbox) == {"call-1": ("delivered", 1)}, timeout=5)
    finally:
        await deliverer.aclose()
    assert receiver.accepted == {"call-1": 1}


async def test_too_many_requests_is_retried(
    receiver: Receiver, webhook_outbox: tuple[Outbox, WebhookSink]
) -> None:
    outbox, sink = webhook_outbox
    receiver.answer = lambda key, nth: 429 if nth == 1 else 200
    await receiver.start()
    await outbox.put(sample_record("call-1"))
    policy = RetryPolicy(base=0.3, cap=0.3)
    deliverer = Deliverer(outbox, [sink], policy=policy, rng=LongestBackoff())
    try:
        await deliverer.run_until_idle()  # returns with the retry scheduled
        assert states(outbox) == {"call-1": ("pending", 1)}
        await asyncio.sleep(policy.cap)
        await deliverer.run_until_idle()
    finally:
        await deliverer.aclose()
    assert states(outbox) == {"call-1": ("delivered", 2)}


async def test_max_attempts_then_dead(
    receiver: Receiver, webhook_outbox: tuple[Outbox, WebhookSink]
) -> None:
    outbox, sink = webhook_outbox
    receiver.answer = lambda key, nth: 500
    await receiver.start()
    policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.05)
    deliverer = Deliverer(outbox, [sink], policy=policy)
    deliverer.start()
    try:
        await outbox.put(sample_record("call-1"))
        await eventually(lambda: states(outbox) == {"call-1": ("dead", 3)})
    finally:
        await deliverer.aclose()
    assert [a.status for a in receiver.arrivals] == [500, 500, 500]
    assert (outbox.entries()[0].deliveries[0].last_error or "").startswith("HTTP 500")


async def test_jsonl_sink_appends_one_line_per_record(tmp_path: Path) -> None:
    config = DeliveryConfig(outbox_path=tmp_path / "outbox.db", jsonl_path=tmp_path / "r.jsonl")
    outbox, deliverer = open_delivery(config)
    with outbox:
        for i in range(3):
            await outbox.put(sample_record(f"call-{i}"))
        await deliverer.run_until_idle()
        await deliverer.aclose()
        assert set(states(outbox).values()) == {("delivered", 1)}
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["session_id"] for line in lines) == [
        "call-0",
        "call-1",
        "call-2",
    ]


class FlakyStore:
    """A plugin whose deliver_result returns an awaitable that fails once per record."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.stored: list[CallRecord] = []

    @hookimpl
    def deliver_result(self, record: CallRecord) -> Any:
        return self._store(record)

    async def _store(self, record: CallRecord) -> None:
        self.seen.append(record.session_id)
        if self.seen.count(record.session_id) == 1:
            raise ConnectionError("CRM unavailable")
        self.stored.append(record)


class QuietLog:
    """A synchronous deliver_result implementation (returns None)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def deliver_result(self, record: CallRecord) -> None:
        self.seen.append(record.session_id)


async def test_hook_sink_awaits_plugins_and_retries_their_failures(
    registry: Registry, tmp_path: Path
) -> None:
    assert build_sinks(DeliveryConfig(), registry) == []  # nobody implements the hook
    flaky, quiet = FlakyStore(), QuietLog()
    manager = registry.plugins.manager
    manager.register(flaky, name="flaky_store")
    manager.register(quiet, name="quiet_log")
    try:
        config = DeliveryConfig(outbox_path=tmp_path / "outbox.db", backoff_base=0.01)
        outbox, deliverer = open_delivery(config, registry)
        assert [sink.name for sink in deliverer.sinks.values()] == ["hooks"]
        outcomes: list[DeliveryOutcome] = []
        deliverer.on_outcome = outcomes.append
        with outbox:
            deliverer.start()
            try:
                await outbox.put(sample_record("call-1"))
                await eventually(lambda: states(outbox) == {"call-1": ("delivered", 2)})
            finally:
                await deliverer.aclose()
    finally:
        manager.unregister(flaky)
        manager.unregister(quiet)
    assert [(o.result, o.error) for o in outcomes] == [
        ("retry", "ConnectionError: CRM unavailable"),
        ("delivered", None),
    ]
    assert flaky.seen == ["call-1", "call-1"]
    assert [r.session_id for r in flaky.stored] == ["call-1"]
    assert quiet.seen == ["call-1", "call-1"]  # at least once, for every plugin


def test_sinks_from_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = "https://example.com/calls"
    with caplog.at_level(logging.WARNING, logger="dialplan.sinks"):
        sinks = build_sinks(DeliveryConfig(webhooks=[url, url], jsonl_path=tmp_path / "r.jsonl"))
    assert [sink.name for sink in sinks] == [f"webhook:{url}", f"jsonl:{tmp_path / 'r.jsonl'}"]
    assert [r.getMessage() for r in caplog.records] == [
        f"webhook {url}: no secret, so requests are not signed "
        "(set DIALPLAN_WEBHOOK_SECRET so the receiver can verify them)"
    ]
    with pytest.raises(DeliveryConfigError, match="'ftp://x': not an http"):
        DeliveryConfig(webhooks=["ftp://x"])


async def test_an_unsigned_webhook_sends_no_signature(outbox_path: Path) -> None:
    receiver = Receiver(secret=None)
    try:
        await receiver.start()
        sink = WebhookSink(receiver.url, None)
        with Outbox(outbox_path, sinks=[sink.name]) as outbox:
            await outbox.put(sample_record("call-1"))
            deliverer = Deliverer(outbox, [sink])
            await deliverer.run_until_idle()
            await deliverer.aclose()
    finally:
        await receiver.close()
    assert receiver.accepted == {"call-1": 1}  # it checks the header is absent


async def test_shutdown_abandons_a_slow_send_which_the_next_start_retries(
    receiver: Receiver, webhook_outbox: tuple[Outbox, WebhookSink]
) -> None:
    outbox, sink = webhook_outbox
    receiver.delay = 3.0
    await receiver.start()
    deliverer = Deliverer(outbox, [sink])
    deliverer.start()
    await outbox.put(sample_record("call-1"))
    await eventually(lambda: bool(deliverer.progress.sending))
    started = time.monotonic()
    await deliverer.aclose(grace=0.1)
    assert time.monotonic() - started < 1.0
    assert states(outbox) == {"call-1": ("pending", 0)}

    receiver.delay = 0.0
    again = Deliverer(outbox, [WebhookSink(receiver.url, SECRET)])
    await again.run_until_idle()
    await again.aclose()
    assert states(outbox) == {"call-1": ("delivered", 1)}


async def test_one_deliverer_per_outbox(webhook_outbox: tuple[Outbox, WebhookSink]) -> None:
    outbox, sink = webhook_outbox
    first = Deliverer(outbox, [sink])
    first.start()
    try:
        second = Deliverer(outbox, [sink])
        with pytest.raises(OutboxError, match=r"another deliverer \(pid \d+\) is already sending"):
            second.start()
    finally:
        await first.aclose()
    then = Deliverer(outbox, [sink])  # the lock went with the first one
    await then.run_until_idle()
    await then.aclose()


async def test_a_one_off_command_beside_a_worker_only_stores(
    outbox_path: Path, receiver: Receiver, registry: Registry
) -> None:
    """`dialplan call` in a worker's directory: it stores its record for the worker to
    deliver, and the worker's calls in progress (held checkpoints) are not mistaken for
    calls a crash cut off."""
    from runtime.call_results import CallResults

    await receiver.start()
    sink = WebhookSink(receiver.url, SECRET, timeout=5)
    worker_outbox = Outbox(outbox_path, sinks=[sink.name])
    worker = CallResults(
        registry, worker_outbox, Deliverer(worker_outbox, [sink], poll_interval=0.1)
    )
    await worker.start()
    in_progress = sample_record("live-call")
    in_progress.ended_at = None
    await worker.checkpoint(in_progress)

    command_outbox = Outbox(outbox_path, sinks=[sink.name])
    alone = CallResults(registry, command_outbox, Deliverer(command_outbox, [sink]))
    with pytest.raises(OutboxError, match="another deliverer"):
        await alone.start()
    command = CallResults(registry, command_outbox, Deliverer(command_outbox, [sink]))
    await command.start(beside_a_deliverer=True)
    assert command.deliverer is None and command.delivered_by == str(os.getpid())
    await command.ended(sample_record("dialed"), None)
    await command.drain()

    def delivered() -> bool:
        entry = command_outbox.entry("dialed")
        return entry is not None and [d.state for d in entry.deliveries] == ["delivered"]

    await eventually(delivered)  # by the worker's deliverer
    live = command_outbox.entry("live-call")
    assert live is not None and live.held  # still the worker's call in progress
    await command.aclose()
    await worker.aclose()


# -- SIGKILL ---------------------------------------------------------------------------


async def kill_child_after(
    outbox_path: Path, receiver: Receiver, count: int, *, arrivals: int
) -> None:
    """Run tests/outbox_child.py: it puts ``count`` records and delivers them; SIGKILL it
    once ``arrivals`` requests reached the receiver (0: as soon as its puts returned)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.outbox_child",
        str(outbox_path),
        receiver.url,
        str(count),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=20)
        assert line.decode().strip() == f"put {count}"
        await eventually(lambda: len(receiver.arrivals) >= arrivals)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.communicate()
    assert child.returncode == -signal.SIGKILL


async def test_sigkill_during_deliveries_loses_nothing(
    receiver: Receiver, outbox_path: Path
) -> None:
    count = 200
    receiver.delay = 0.03  # slow enough that the kill lands mid-way
    await receiver.start()
    await kill_child_after(outbox_path, receiver, count, arrivals=40)
    assert 40 <= len(receiver.arrivals) < count

    receiver.delay = 0.0
    config = DeliveryConfig(outbox_path=outbox_path, webhooks=[receiver.url], webhook_secret=SECRET)
    outbox, deliverer = open_delivery(config)  # the same construction as the child's
    with outbox:
        await deliverer.run_until_idle()
        await deliverer.aclose()
        assert set(states(outbox).values()) == {("delivered", 1)}
        assert len(states(outbox)) == count
    received = receiver.accepted
    assert set(received) == {f"call-{i:04d}" for i in range(count)}
    # at least once: only sends still unrecorded at the kill (one per slot) came twice
    assert sum(received.values()) - count <= config.concurrency


async def test_sigkill_right_after_the_puts_loses_nothing(
    receiver: Receiver, outbox_path: Path
) -> None:
    count = 50
    receiver.delay = 1.0  # nothing can be marked delivered before the kill
    await receiver.start()
    await kill_child_after(outbox_path, receiver, count, arrivals=0)
    with Outbox(outbox_path) as outbox:
        assert {state for state, _ in states(outbox).values()} == {"pending"}
        assert len(states(outbox)) == count

    receiver.delay = 0.0
    config = DeliveryConfig(outbox_path=outbox_path, webhooks=[receiver.url], webhook_secret=SECRET)
    outbox, deliverer = open_delivery(config)
    with outbox:
        await deliverer.run_until_idle()
        await deliverer.aclose()
        assert set(states(outbox).values()) == {("delivered", 1)}
    assert set(receiver.accepted) == {f"call-{i:04d}" for i in range(count)}


def test_jsonl_sink_name_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert JsonlSink("r.jsonl").name == f"jsonl:{tmp_path / 'r.jsonl'}"
    assert HookSink.name == "hooks"
