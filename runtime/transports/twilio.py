"""Twilio Media Streams (bidirectional), as documented by Twilio.

Twilio sends ``connected``, ``start`` (with ``customParameters`` from the TwiML
``<Parameter>``s), ``media`` (base64 μ-law 8 kHz, 20 ms per message), ``mark`` (a mark of
ours has been played), ``dtmf`` and ``stop``. We send ``media``, ``mark`` after each bot
segment, and ``clear`` when the caller barges in (Twilio drops what it has buffered and
echoes the outstanding marks).

The incoming-call webhook answers TwiML ``<Connect><Stream>`` pointing back at this server
(see `server.py`); its ``<Parameter>``s carry the bot id and the caller's numbers.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from xml.sax.saxutils import quoteattr

from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from runtime.transports.twilio_auth import TOKEN_PARAMETER
from runtime.transports.wire import (
    MAX_PAYLOAD_SECONDS,
    Ignored,
    Inbound,
    Malformed,
    Media,
    Outbound,
    Start,
    Wire,
    decode_payload,
    parse_json,
    stream_event,
    text_params,
)

SAMPLE_RATE = 8000
# names the webhook puts in <Parameter>s; everything else becomes a call variable
RESERVED_PARAMETERS = frozenset({"bot", "caller", "callee", "direction", TOKEN_PARAMETER})


class TwilioWire(Wire):
    transport = "twilio"
    sample_rate = SAMPLE_RATE

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self._media_prefix = '{"event": "media", "streamSid": null, "media": {"payload": "'

    def decode(self, message: str | bytes) -> Inbound:
        data = parse_json(message)
        if isinstance(data, Malformed):
            return data
        event = data.get("event")
        if event == "media":
            return self._media(data)
        if event == "start":
            return self._start(data)
        return stream_event(event, data, "twilio")

    def _start(self, data: dict[str, Any]) -> Inbound:
        start = data.get("start")
        if not isinstance(start, dict):
            return Malformed("start event without a `start` object")
        stream_sid = start.get("streamSid") or data.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            return Malformed("start.streamSid is missing")
        media_format = start.get("mediaFormat") or {}
        encoding = media_format.get("encoding", "audio/x-mulaw")
        if encoding != "audio/x-mulaw" or str(media_format.get("sampleRate", "8000")) != "8000":
            return Malformed(f"unsupported mediaFormat {media_format}: expected audio/x-mulaw 8000")
        self.stream_sid = stream_sid
        self._media_prefix = (
            '{"event": "media", "streamSid": ' + json.dumps(stream_sid) + ', "media": {"payload": "'
        )
        params = text_params(start.get("customParameters"))
        return Start(
            stream_id=stream_sid,
            call_id=start.get("callSid"),
            bot=_opt_str(params.get("bot")),
            variables={k: v for k, v in params.items() if k not in RESERVED_PARAMETERS},
            caller=_opt_str(params.get("caller")),
            callee=_opt_str(params.get("callee")),
            outbound=params.get("direction") == "outbound",
            sample_rate=SAMPLE_RATE,
            echoes_marks=True,
            auth_token=_opt_str(params.get(TOKEN_PARAMETER)),
        )

    def _media(self, data: dict[str, Any]) -> Inbound:
        media = data.get("media")
        if not isinstance(media, dict):
            return Malformed("media event without a `media` object")
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return Ignored()  # our own audio echoed on an outbound track
        raw = decode_payload(media.get("payload"), max_bytes=int(SAMPLE_RATE * MAX_PAYLOAD_SECONDS))
        if isinstance(raw, Malformed):
            return raw
        return Media(ulaw_to_pcm16(raw))

    def audio(self, pcm16: bytes) -> Outbound:
        # 50 of these a second per call: a template, not json.dumps (base64 needs no
        # escaping; the stream sid was escaped once, when `start` arrived)
        payload = base64.b64encode(pcm16_to_ulaw(pcm16)).decode("ascii")
        return self._media_prefix + payload + '"}}'

    def mark(self, name: str) -> Outbound | None:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> Outbound | None:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def connect_stream_twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """The webhook's answer: connect the call's audio to our WebSocket."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(stream_url)}>{params}</Stream>"
        "</Connect></Response>"
    )


def refuse_twiml(message: str) -> str:
    """The webhook's answer when no call can be taken: say why, then hang up."""
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"<Say>{escape(message)}</Say><Hangup/></Response>"
    )
