"""What a WebSocket call can do to the line: a Twilio transfer through Twilio's REST API
(answered here by a local server speaking that API), in-band DTMF, refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from runtime.audio.dtmf import dtmf_pcm
from runtime.call_control import ControlUnsupported
from runtime.transports import line_control
from runtime.transports.line_control import StreamControl
from runtime.transports.wire import Start


class Line:
    def __init__(self) -> None:
        self.audio: list[bytes] = []
        self.notices: list[tuple[str, dict[str, Any]]] = []

    async def send_audio(self, pcm16: bytes) -> None:
        self.audio.append(pcm16)

    def notify(self, kind: str, data: dict[str, Any]) -> None:
        self.notices.append((kind, data))


class LocalTwilio(TwilioHttpClient):
    """Twilio's own HTTP client, sent to a local server instead of api.twilio.com."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(
            method, url.replace("https://api.twilio.com", self.base), *args, **kwargs
        )


async def test_a_twilio_transfer_redirects_the_live_call(monkeypatch) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def update_call(request: web.Request) -> web.Response:
        seen.append((request.path, dict(await request.post())))
        return web.json_response({"sid": request.match_info["sid"], "status": "in-progress"})

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", update_call)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "1" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret")
    monkeypatch.setattr(
        line_control,
        "twilio_client",
        lambda sid, token: Client(sid, token, http_client=LocalTwilio(f"http://{host}:{port}")),
    )
    try:
        control = StreamControl("twilio", Start(stream_id="MZ1", call_id="CA9"), Line())
        assert control.can_transfer
        await control.transfer("+15550100")
    finally:
        await runner.cleanup()
    assert seen == [
        (
            f"/2010-04-01/Accounts/AC{'1' * 32}/Calls/CA9.json",
            {"Twiml": "<Response><Dial>+15550100</Dial></Response>"},
        )
    ]


async def test_transfers_that_cannot_happen_say_why(monkeypatch) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    twilio = StreamControl("twilio", Start(stream_id="MZ1", call_id="CA9"), Line())
    assert not twilio.can_transfer
    with pytest.raises(ControlUnsupported, match="TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"):
        await twilio.transfer("+1555")
    with pytest.raises(ControlUnsupported, match="Connect applet"):
        await StreamControl("exotel", Start(stream_id="S"), Line()).transfer("+1555")
    line = Line()
    await StreamControl("websocket", Start(stream_id=""), line).transfer("sip:desk@pbx")
    assert line.notices == [("transfer", {"to": "sip:desk@pbx"})]


async def test_dtmf_is_played_in_band_as_the_right_tone_pairs() -> None:
    line = Line()
    await asyncio.wait_for(StreamControl("twilio", Start(stream_id="MZ1"), line).send_dtmf("5#"), 5)
    assert all(len(frame) == 320 for frame in line.audio)  # whole 20 ms frames at 8 kHz
    tone = np.frombuffer(b"".join(line.audio)[: 800 * 2], dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(tone))
    peaks = sorted(np.fft.rfftfreq(tone.size, 1 / 8000)[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([770, 1336], abs=10)  # "5": 770 Hz + 1336 Hz
    with pytest.raises(ValueError, match="not a DTMF digit"):
        dtmf_pcm("5x", 8000)
