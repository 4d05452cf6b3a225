"""A call over a real socket ends in the outbox and at the webhook: disposition applied,
durable before post-call work, delivered once per session; records a crash left held are
delivered at the next start."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from runtime.call_results import INTERRUPTED, CallResults
from runtime.delivery import DeliveryConfig, open_delivery
from runtime.outbox import Outbox
from runtime.registry import load_registry
from tests.sample_records import sample_record
from tests.transports.test_call_endings import call_line
from tests.transports.test_call_server import wait_for_records, ws_url
from tests.voice_fakes import FakeVoicePlugin
from tests.webhook_receiver import SECRET, Receiver


def delivery(tmp_path: Path, receiver: Receiver) -> CallResults:
    registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin())])
    config = DeliveryConfig(
        outbox_path=tmp_path / "outbox.db",
        webhooks=(receiver.url,),
        webhook_secret=SECRET,
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    outbox, deliverer = open_delivery(config, registry)
    return CallResults(registry, outbox, deliverer)


async def until(condition, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_a_call_is_delivered_once_with_its_disposition(fake_bot, serve, tmp_path) -> None:
    receiver = Receiver()
    await receiver.start()
    results = delivery(tmp_path, receiver)
    server = await serve(fake_bot(["what are your hours", "bye"]), results=results)
    await call_line(server, speech_at=(1.0, 4.0))
    await wait_for_records(server)
    await until(lambda: len(receiver.accepted) == 1)
    record = server.records[-1]
    assert receiver.accepted == {record.session_id: 1}
    delivered = json.loads(receiver.arrivals[0].body)
    assert delivered["disconnected_by"] == "bot"
    assert delivered["has_customer_message"] is True
    assert delivered["dispositions"] == [] and delivered["analysis_skipped"] is None
    assert len(results.durable_ms) == 1  # the record was durable before post-call work
    with Outbox(tmp_path / "outbox.db", create=False) as outbox:
        entry = outbox.entry(record.session_id)
    assert entry is not None and not entry.held
    assert [d.state for d in entry.deliveries] == ["delivered"]
    await receiver.close()


async def test_a_caller_who_never_speaks_is_labelled_without_analysis(
    fake_bot, serve, tmp_path
) -> None:
    receiver = Receiver()
    await receiver.start()
    server = await serve(fake_bot(["bye"]), results=delivery(tmp_path, receiver))
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        await ws.send_str(json.dumps({"type": "start", "sample_rate": 16000, "bot": "line"}))
        await asyncio.sleep(1.0)
        await ws.close()
    # a caller who hangs up without a word
    await until(lambda: len(receiver.accepted) == 1)
    delivered = json.loads(receiver.arrivals[0].body)
    assert delivered["disconnected_by"] == "customer"
    assert delivered["disposition"] == "no_customer_message"
    assert delivered["analysis_skipped"] == "no_customer_message"
    await receiver.close()


async def test_records_left_held_by_a_crash_are_delivered_at_start(tmp_path) -> None:
    receiver = Receiver()
    await receiver.start()
    crashed = Outbox(tmp_path / "outbox.db", sinks=[f"webhook:{receiver.url}"])
    records = [sample_record(f"crashed-{n}") for n in range(3)]
    for record in records:
        crashed.put_sync(record, held=True)  # post-call work never finished
    crashed.close()
    results = delivery(tmp_path, receiver)
    await results.start()
    await until(lambda: len(receiver.accepted) == 3)
    assert set(receiver.accepted) == {r.session_id for r in records}
    assert all(json.loads(a.body)["analysis_error"] == INTERRUPTED for a in receiver.arrivals)
    await results.aclose()
    await receiver.close()
