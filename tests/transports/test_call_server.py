"""The call server over real loopback sockets: every transport, the capacity guard, the
Twilio webhook, and clients that misbehave."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from runtime.phone_sim import SimulatedCaller
from tests.voice_fakes import tone

TOKEN = "12345678901234567890123456789012"


def ws_url(server: Any, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def wait_for_records(server: Any, count: int = 1, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while len(server.records) < count:
            await asyncio.sleep(0.05)


async def speak(text: str) -> bytes:
    return tone(0.6, 8000, 300.0)


async def generic_call(
    server: Any, start: dict[str, Any], *, rate: int = 16000, utterances: int = 2
) -> list[dict[str, Any]]:
    """A generic-protocol client: speaks tone bursts, echoes marks, collects notices."""
    notices: list[dict[str, Any]] = []
    frame = rate // 50 * 2
    speech = tone(0.6, rate, 300.0)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        await ws.send_str(json.dumps({"type": "start", "sample_rate": rate, **start}))

        async def send() -> None:
            plan = [b"\x00" * frame] * 100 + [
                chunk
                for _ in range(utterances)
                for chunk in [speech[i : i + frame] for i in range(0, len(speech), frame)]
                + [b"\x00" * frame] * 150
            ]
            for chunk in plan:
                if ws.closed:
                    return
                await ws.send_bytes(chunk)
                await asyncio.sleep(0.02)
            await ws.send_str('{"type": "stop"}')

        sender = asyncio.create_task(send())
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                notices.append(data)
                if data["type"] == "mark":
                    await ws.send_str(json.dumps(data))
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return notices


async def test_the_generic_protocol_streams_transcript_and_events(fake_bot, serve) -> None:
    server = await serve(fake_bot(["what are your hours", "bye"]))
    notices = await generic_call(server, {"bot": "line", "marks": True})
    kinds = [n["type"] for n in notices]
    assert kinds[0] == "started" and kinds[-1] == "ended"
    lines = [(n["role"], n["text"]) for n in notices if n["type"] == "transcript"]
    assert ("customer", "what are your hours") in lines
    assert ("bot", "We are open nine to five.") in lines
    assert notices[-1]["disconnected_by"] == "bot"
    events = {n["event"]["type"] for n in notices if n["type"] == "event"}
    assert {"turn", "tool_call", "bot_audio"} <= events
    await wait_for_records(server)
    assert server.records[-1].transport == "websocket"


async def test_a_flow_bot_sends_its_graph_and_its_steps(dentist_bot, serve) -> None:
    server = await serve(dentist_bot(["I'd like to book a cleaning", "bye"]))
    notices = await generic_call(server, {"bot": "dentist", "marks": True})
    assert [n["type"] for n in notices[:2]] == ["started", "flow"]
    flow = notices[1]
    assert flow["step"] == "triage" and flow["captured"] == {}
    graph = flow["graph"]
    assert graph["start"] == "triage"
    assert {"triage", "booking", "tool:end_call"} <= {node["id"] for node in graph["nodes"]}
    booking = next(e for e in graph["edges"] if e["from"] == "triage" and e["to"] == "booking")
    events = [n["event"] for n in notices if n["type"] == "event"]
    entered = next(e["data"] for e in events if e["type"] == "step_entered")
    assert (entered["from"], entered["step"]) == ("triage", "booking")
    assert entered["transition"] == booking["key"]  # the widget highlights that edge
    captured = next(e["data"] for e in events if e["type"] == "captured")
    assert captured["values"] == {"service": "cleaning"}
    await wait_for_records(server)
    assert server.records[-1].steps == ["triage", "booking"]


async def test_a_bot_without_a_flow_sends_no_graph(fake_bot, serve) -> None:
    server = await serve(fake_bot(["bye"]))
    notices = await generic_call(server, {"bot": "line"}, utterances=1)
    assert "flow" not in {n["type"] for n in notices}


async def test_an_exotel_call_speaks_pcm_in_exotel_sized_chunks(fake_bot, serve) -> None:
    # `tier` comes from the stream: the bot declares it, so it is taken
    server = await serve(fake_bot(["what are your hours", "bye"], variables='tier = "none"'))
    chunks: list[int] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url(server, "/exotel/stream?sample-rate=8000&bot=line")) as ws,
    ):
        await ws.send_str('{"event": "connected"}')
        start = {"stream_sid": "S1", "call_sid": "C1", "from": "0990", "to": "0800"}
        start["custom_parameters"] = {"tier": "gold"}  # type: ignore[assignment]
        await ws.send_str(json.dumps({"event": "start", "stream_sid": "S1", "start": start}))
        speech = tone(0.6, 8000, 300.0)
        plan = [bytes(320)] * 50 + [speech[i : i + 320] for i in range(0, len(speech), 320)]
        plan += [bytes(320)] * 150

        async def send() -> None:
            for chunk in plan * 2:
                payload = base64.b64encode(chunk.ljust(320, b"\x00")).decode()
                await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send())
        async for message in ws:
            data = json.loads(message.data)
            if data["event"] == "media":
                chunks.append(len(base64.b64decode(data["media"]["payload"])))
            elif data["event"] == "mark":
                await ws.send_str(json.dumps(data))
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.transport == "exotel" and record.caller == "0990"
    assert record.variables["tier"] == "gold"  # the bot came from the stream URL
    assert record.disconnected_by == "bot"
    assert chunks and all(size % 320 == 0 for size in chunks)
    assert max(chunks) == 3200


async def test_capacity_refuses_the_next_caller_cleanly(fake_bot, serve) -> None:
    server = await serve(fake_bot(["hello"]), max_concurrent_calls=1)
    first = asyncio.create_task(
        SimulatedCaller(ws_url(server, "/twilio/stream"), bot="line").call(["one"], speak)
    )
    async with asyncio.timeout(10):
        while server.active == 0:
            await asyncio.sleep(0.02)
    refused = await SimulatedCaller(ws_url(server, "/twilio/stream"), bot="line").call([], speak)
    assert refused.close_code == 1013
    rejected = [r for r in server.records if r.disconnected_by == "rejected"]
    assert len(rejected) == 1 and "at capacity (1/1 calls)" in (rejected[0].cause or "")
    async with aiohttp.ClientSession() as http:
        answer = await http.post(server.url + "/twilio/voice?bot=line", data={"From": "+1"})
        assert "<Say>All our lines are busy" in await answer.text()
    await first
    assert sum(r.disconnected_by == "rejected" for r in server.records) == 2


async def test_the_webhook_answers_twiml_and_checks_signatures(fake_bot, serve) -> None:
    server = await serve(fake_bot(["hello"]), twilio_auth_token=TOKEN)
    form = {"From": "+15551230000", "To": "+15559870000", "CallSid": "CA1"}
    url = server.url + "/twilio/voice?bot=line"
    async with aiohttp.ClientSession() as http:
        unsigned = await http.post(url, data=form)
        assert unsigned.status == 403
        forged = await http.post(url, data=form, headers={"X-Twilio-Signature": "bm9wZQ=="})
        assert forged.status == 403
        signature = RequestValidator(TOKEN).compute_signature(url, form)
        signed = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
        assert signed.status == 200
        twiml = await signed.text()
    stream_url = ws_url(server, "/twilio/stream")
    assert f'<Stream url="{stream_url}">' in twiml
    assert '<Parameter name="caller" value="+15551230000"/>' in twiml
    assert '<Parameter name="bot" value="line"/>' in twiml


async def test_malformed_frames_are_reported_and_the_call_goes_on(fake_bot, serve) -> None:
    server = await serve(fake_bot(["what are your hours", "bye"]))
    errors: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        await ws.send_bytes(b"\x00" * 640)  # media before start: dropped
        await ws.send_str("{oops")
        await ws.send_str(json.dumps({"type": "start", "bot": "line", "sample_rate": 16000}))
        await ws.send_bytes(b"\x00" * 641)  # odd-sized PCM
        await ws.send_str('{"type": "start", "bot": "line"}')  # a second start
        await ws.send_str('{"type": "stop"}')
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue  # the greeting's audio, when it starts before the stop is read
            data = json.loads(message.data)
            if data["type"] == "error":
                errors.append(data["message"])
    assert any("not valid JSON" in e for e in errors)
    assert any("16-bit PCM needs an even count" in e for e in errors)
    assert any("a second `start`" in e for e in errors)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "customer" and record.cause == "the client hung up"
    reported = [e.data["error"] for e in record.events if e.type == "transport_error"]
    assert len(reported) == 2


async def test_a_caller_that_vanishes_still_leaves_a_record(fake_bot, serve) -> None:
    server = await serve(fake_bot(["what are your hours"]))
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(ws_url(server, "/ws"))
    await ws.send_str(json.dumps({"type": "start", "bot": "line"}))
    async with asyncio.timeout(10):
        while server.active == 0:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    await session.close()  # no stop, no close handshake: the network just went away
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "customer"
    assert "socket closed" in (record.cause or "")
    assert record.transcript[0].text == "Hello, this is the test line."


async def test_start_problems_close_the_socket_with_a_reason(fake_bot, serve) -> None:
    server = await serve(fake_bot(["hello"]))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(server, "/ws")) as ws:
            await ws.send_str(json.dumps({"type": "start", "bot": "nobody"}))
            messages = [json.loads(m.data) async for m in ws]
        assert "no bot 'nobody'" in messages[0]["message"]
        assert ws.close_code == 1008
        async with http.ws_connect(ws_url(server, "/twilio/stream")) as ws:
            await ws.send_str('{"event": "stop"}')
            assert [m async for m in ws] == []
        assert ws.close_code == 1008
    await wait_for_records(server)
    assert server.records[-1].disconnected_by == "error"
    assert server.records[-1].bot_id == "nobody"


CLOSED = (
    '\n[schedule]\ntimezone = "UTC"\nhours = { sun = "00:00-00:01" }\nclosed_message = "Closed."\n'
)


@pytest.mark.parametrize("allowed", [True, False])
async def test_only_a_dev_server_lets_a_stream_skip_the_opening_hours(
    fake_bot, serve, allowed: bool
) -> None:
    """The widget's "answer even outside opening hours" is for a developer's own server:
    a production server's callers cannot choose it."""
    from tests.transports.conftest import FAKE_BOT

    bots = fake_bot(["bye"])
    (bots / "line.toml").write_text(FAKE_BOT.replace("{lines}", '["bye"]') + CLOSED)
    server = await serve(bots, allow_schedule_override=allowed)
    async with aiohttp.ClientSession() as http:
        listing = await (await http.get(server.url + "/api/bots")).json()
    assert listing["schedule_override"] is allowed
    await generic_call(server, {"bot": "line", "ignore_schedule": True}, utterances=1)
    await wait_for_records(server)
    record = server.records[-1]
    if allowed:
        assert record.disconnected_by == "bot"  # answered, and it hung up on "bye"
    else:
        assert record.disconnected_by == "outside_hours"


async def test_a_server_behind_real_time_refuses_new_calls(fake_bot, serve) -> None:
    """Overload is visible and acted on: a shared stage (the VAD) lagging past the limit
    makes the server refuse the next caller and say why on its health endpoint."""
    from runtime import overload

    server = await serve(fake_bot(["hello"]), max_concurrent_calls=10)
    lag = {"seconds": 0.6}
    overload.register_lag_probe("the test stage", lambda: lag["seconds"])
    try:
        refused = await SimulatedCaller(ws_url(server, "/twilio/stream"), bot="line").call(
            [], speak
        )
        assert refused.close_code == 1013
        (record,) = [r for r in server.records if r.disconnected_by == "rejected"]
        assert record.cause == "overloaded: the test stage is 600 ms behind real time"
        async with aiohttp.ClientSession() as http:
            health = await (await http.get(server.url + "/healthz")).json()
        assert health["lag_ms"] == 600.0 and health["lagging"] == "the test stage"

        lag["seconds"] = 0.0  # caught up: calls are taken again
        answered = await SimulatedCaller(ws_url(server, "/twilio/stream"), bot="line").call(
            ["one"], speak
        )
        assert answered.close_code != 1013
    finally:
        overload.remove_lag_probe("the test stage")
