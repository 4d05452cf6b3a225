"""Who may open a Twilio Media Stream: with TWILIO_AUTH_TOKEN set, only a handshake Twilio
signed, bringing back the one-time token our signed webhook issued for that call. And what
a stream may set: only the variables its bot declares."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from runtime.phone_sim import SimulatedCaller
from runtime.transports.twilio_auth import StreamTokens
from tests.transports.test_call_server import speak, wait_for_records, ws_url

TOKEN = "12345678901234567890123456789012"


async def signed_webhook(server: Any, call_sid: str) -> str:
    """What Twilio does when the call comes in: POST the signed webhook; the stream
    token is in the TwiML's parameters."""
    url = server.url + "/twilio/voice?bot=line"
    form = {"From": "+15551230000", "To": "+15559870000", "CallSid": call_sid}
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    async with aiohttp.ClientSession() as http:
        answer = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
        assert answer.status == 200
        twiml = await answer.text()
    found = re.search(r'<Parameter name="token" value="([^"]+)"/>', twiml)
    assert found, twiml
    return found.group(1)


def signed_headers(server: Any) -> dict[str, str]:
    stream = ws_url(server, "/twilio/stream")
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(stream, {})}


async def test_an_unsigned_stream_is_refused_at_the_handshake(fake_bot, serve) -> None:
    server = await serve(fake_bot(["hello"]), twilio_auth_token=TOKEN)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(server, "/twilio/stream"))
        assert refused.value.status == 403
        forged = {"X-Twilio-Signature": "bm9wZQ=="}
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(ws_url(server, "/twilio/stream"), headers=forged)
    assert list(server.records) == [] and server.active == 0


async def test_a_signed_stream_without_our_token_is_refused_with_a_record(fake_bot, serve) -> None:
    server = await serve(fake_bot(["hello"]), twilio_auth_token=TOKEN)
    caller = SimulatedCaller(
        ws_url(server, "/twilio/stream"), bot="line", headers=signed_headers(server)
    )
    report = await caller.call(["hello"], speak)
    assert report.close_code == 1008 and report.turns == []
    await wait_for_records(server)
    (record,) = server.records
    assert record.disconnected_by == "rejected"
    assert record.cause == "unauthenticated stream: the stream carries no token from our webhook"


async def test_a_twilio_call_end_to_end_and_no_replay_of_its_token(fake_bot, serve) -> None:
    server = await serve(fake_bot(["hello", "bye"]), twilio_auth_token=TOKEN)
    token = await signed_webhook(server, "CA42")

    def caller(call_sid: str) -> SimulatedCaller:
        return SimulatedCaller(
            ws_url(server, "/twilio/stream"),
            bot="line",
            variables={"token": token},
            call_sid=call_sid,
            headers=signed_headers(server),
        )

    answered = await caller("CA42").call(["hello", "bye"], speak)
    assert answered.turns, "the authenticated call was not answered"
    replayed = await caller("CA42").call(["hello"], speak)
    other_call = await caller("CA43").call(["hello"], speak)
    assert replayed.close_code == 1008 and other_call.close_code == 1008
    await wait_for_records(server, 3)
    causes = sorted(r.cause or "" for r in server.records if r.disconnected_by == "rejected")
    assert causes == [
        "unauthenticated stream: the stream's token was already used",
        "unauthenticated stream: the stream's token was not issued for this call",
    ]


def test_tokens_expire_and_bind_to_their_call() -> None:
    tokens = StreamTokens(TOKEN, lifetime=60)
    token = tokens.issue("CA1", now=1000.0)
    assert tokens.redeem(token, "CA1", now=1061.0) == "the stream's token has expired"
    assert tokens.redeem("12.abc", "CA1", now=1000.0) == (
        "the stream's token was not issued for this call"
    )
    assert tokens.redeem("nonsense", "CA1", now=1000.0) == "the stream's token is malformed"
    assert tokens.redeem(token, "CA1", now=1030.0) == ""
    assert StreamTokens("another account's token").redeem(token, "CA1", now=1030.0) == (
        "the stream's token was not issued for this call"
    )


async def test_a_stream_sets_only_the_variables_its_bot_declares(bot_dir, serve) -> None:
    from tests.transports.conftest import FAKE_BOT

    bots = bot_dir(
        "line",
        FAKE_BOT.replace("{lines}", '["bye"]') + '\n[variables]\ncustomer = "there"\n',
    )
    server = await serve(bots)
    caller = SimulatedCaller(
        ws_url(server, "/twilio/stream"),
        bot="line",
        variables={"customer": "Ann", "front_desk": "+19005550000"},
    )
    await caller.call(["bye"], speak)
    await wait_for_records(server)
    (record,) = server.records
    assert record.variables == {"customer": "Ann"}
