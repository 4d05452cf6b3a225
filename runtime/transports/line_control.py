"""`CallControl` for WebSocket calls: what a media stream can do to the line.

DTMF is played in-band (the tones go out as bot audio). A transfer needs the provider:
Twilio's REST API redirects the live call to ``<Dial>`` (with ``TWILIO_ACCOUNT_SID`` and
``TWILIO_AUTH_TOKEN`` set); a generic client is told to transfer and decides itself;
Exotel transfers happen in its call flow after the stream, not from the stream.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol
from xml.sax.saxutils import escape

from runtime.audio.dtmf import dtmf_pcm
from runtime.call_control import ControlUnsupported
from runtime.transports.wire import Start

FRAME_SECONDS = 0.02


class LineSink(Protocol):
    async def send_audio(self, pcm16: bytes) -> None: ...

    def notify(self, kind: str, data: dict[str, object]) -> None: ...


class StreamControl:
    def __init__(self, transport: str, start: Start, sink: LineSink) -> None:
        self.transport = transport
        self.start = start
        self.sink = sink
        self.can_transfer = transport != "exotel" and (
            transport != "twilio" or _twilio_credentials() is not None
        )

    async def transfer(self, target: str) -> None:
        if self.transport == "twilio":
            await self._twilio_transfer(target)
        elif self.transport == "exotel":
            raise ControlUnsupported(
                "an Exotel voicebot stream cannot transfer the call; put a Connect applet "
                "after the Voicebot applet in the Exotel flow"
            )
        else:
            self.sink.notify("transfer", {"to": target})

    async def _twilio_transfer(self, target: str) -> None:
        credentials = _twilio_credentials()
        if credentials is None:
            raise ControlUnsupported(
                "a Twilio transfer needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the "
                "environment of `dialplan serve`"
            )
        if not self.start.call_id:
            raise ControlUnsupported("Twilio's start message had no callSid to transfer")
        client = twilio_client(*credentials)
        twiml = f"<Response><Dial>{escape(target)}</Dial></Response>"
        call_sid = self.start.call_id
        await asyncio.to_thread(lambda: client.calls(call_sid).update(twiml=twiml))

    async def send_dtmf(self, digits: str) -> None:
        rate = self.start.sample_rate
        pcm = dtmf_pcm(digits, rate)
        frame = rate // 50 * 2
        for offset in range(0, len(pcm), frame):
            chunk = pcm[offset : offset + frame]
            await self.sink.send_audio(chunk + bytes(frame - len(chunk)))
            await asyncio.sleep(FRAME_SECONDS)


def twilio_client(account_sid: str, auth_token: str) -> Any:
    from twilio.rest import Client

    return Client(account_sid, auth_token)


def _twilio_credentials() -> tuple[str, str] | None:
    sid, token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
    return (sid, token) if sid and token else None
