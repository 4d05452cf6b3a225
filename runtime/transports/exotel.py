"""Exotel's voicebot (bidirectional stream) applet.

Exotel sends ``connected``, ``start`` (``custom_parameters``, ``from``, ``to``), ``media``
(base64 16-bit PCM, 8 kHz unless the stream URL asks ``?sample-rate=16000|24000``),
``dtmf``, ``mark`` and ``stop``. We send ``media``, ``mark`` and ``clear``. Exotel wants
outbound chunks of at least 3.2 KB in multiples of 320 bytes, so bot audio leaves in
3.2 KB messages of whole 20 ms frames (200 ms at 8 kHz), the last one of a segment shorter.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from runtime.transports.wire import (
    MAX_PAYLOAD_SECONDS,
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

SAMPLE_RATES = (8000, 16000, 24000)
MIN_CHUNK_BYTES = 3200  # Exotel's minimum outbound chunk
RESERVED_PARAMETERS = frozenset({"bot"})


class ExotelWire(Wire):
    transport = "exotel"

    def __init__(
        self, sample_rate: int = 8000, url_parameters: dict[str, str] | None = None
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample-rate {sample_rate}: Exotel streams at 8000, 16000 or 24000")
        self.sample_rate = sample_rate
        # parameters on the applet's stream URL (`?bot=receptionist`); `start` wins
        self.url_parameters = {
            k: v for k, v in (url_parameters or {}).items() if k != "sample-rate"
        }
        self.stream_sid: str | None = None
        self._batch: list[bytes] = []

    def decode(self, message: str | bytes) -> Inbound:
        data = parse_json(message)
        if isinstance(data, Malformed):
            return data
        event = data.get("event")
        if event == "media":
            media = data.get("media")
            if not isinstance(media, dict):
                return Malformed("media event without a `media` object")
            limit = int(self.sample_rate * 2 * MAX_PAYLOAD_SECONDS)
            raw = decode_payload(media.get("payload"), max_bytes=limit)
            if isinstance(raw, Malformed):
                return raw
            if len(raw) % 2:
                return Malformed(
                    f"media.payload has {len(raw)} bytes: 16-bit PCM needs an even count"
                )
            return Media(raw)
        if event == "start":
            return self._start(data)
        return stream_event(event, data, "exotel")

    def _start(self, data: dict[str, Any]) -> Inbound:
        start = data.get("start")
        if not isinstance(start, dict):
            return Malformed("start event without a `start` object")
        stream_sid = start.get("stream_sid") or data.get("stream_sid")
        if not isinstance(stream_sid, str) or not stream_sid:
            return Malformed("start.stream_sid is missing")
        self.stream_sid = stream_sid
        params = {**self.url_parameters, **text_params(start.get("custom_parameters"))}
        return Start(
            stream_id=stream_sid,
            call_id=start.get("call_sid"),
            bot=params["bot"] if isinstance(params.get("bot"), str) else None,
            variables={k: v for k, v in params.items() if k not in RESERVED_PARAMETERS},
            caller=_opt_str(start.get("from")),
            callee=_opt_str(start.get("to")),
            sample_rate=self.sample_rate,
            echoes_marks=True,
        )

    def audio(self, pcm16: bytes) -> Outbound | None:
        self._batch.append(pcm16)
        if sum(map(len, self._batch)) < MIN_CHUNK_BYTES:
            return None
        return self.flush_audio()

    def flush_audio(self) -> Outbound | None:
        if not self._batch:
            return None
        payload = base64.b64encode(b"".join(self._batch)).decode("ascii")
        self._batch.clear()
        return json.dumps(
            {"event": "media", "stream_sid": self.stream_sid, "media": {"payload": payload}}
        )

    def mark(self, name: str) -> Outbound | None:
        return json.dumps({"event": "mark", "stream_sid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> Outbound | None:
        self._batch.clear()
        return json.dumps({"event": "clear", "stream_sid": self.stream_sid})


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
