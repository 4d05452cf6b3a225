"""What a media-stream WebSocket says, independent of whose protocol it is.

Each protocol (Twilio Media Streams, Exotel voicebot, the generic PCM protocol) is a
``Wire``: it turns one WebSocket message into one ``Inbound`` event, and bot audio, marks
and clears into messages of its own shape. The call logic (`stream_call`) never sees JSON.

Malformed input never raises out of ``decode``: it becomes ``Malformed`` with a reason a
person can act on, and the call decides what to do with it.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

MAX_PAYLOAD_SECONDS = 1.0  # one media message never carries more than this much audio


@dataclass(frozen=True)
class Start:
    """The stream began: who is calling which bot, with what variables."""

    stream_id: str
    call_id: str | None = None
    bot: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    caller: str | None = None
    callee: str | None = None
    sample_rate: int = 8000
    echoes_marks: bool = True
    outbound: bool = False  # we placed the call (a dialer bridged it): voicemail screening
    auth_token: str | None = None  # a stream token our webhook issued (Twilio), to redeem
    ignore_schedule: bool = False  # asked to answer outside opening hours (dev servers allow)


@dataclass(frozen=True)
class Media:
    pcm16: bytes  # 16-bit little-endian mono at the wire's sample rate


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class Typed:
    """A line the caller typed instead of saying it (the widget's text box)."""

    text: str


@dataclass(frozen=True)
class Stop:
    reason: str


@dataclass(frozen=True)
class Ignored:
    """A message the protocol defines that needs no action (``connected``, keep-alives)."""


@dataclass(frozen=True)
class Malformed:
    reason: str


Inbound = Start | Media | Mark | Dtmf | Typed | Stop | Ignored | Malformed
MAX_TYPED_CHARS = 2000  # a typed line: a sentence or a few, not a document
Outbound = str | bytes


class Wire(ABC):
    """One protocol, for one connection (it remembers the stream id after ``start``)."""

    transport: str
    sample_rate: int = 8000

    @abstractmethod
    def decode(self, message: str | bytes) -> Inbound: ...

    @abstractmethod
    def audio(self, pcm16: bytes) -> Outbound | None:
        """One 20 ms frame of bot audio; None while the protocol batches frames."""

    def flush_audio(self) -> Outbound | None:
        """The end of a bot segment: whatever ``audio`` was still batching."""
        return None

    def mark(self, name: str) -> Outbound | None:
        return None

    def clear(self) -> Outbound | None:
        return None

    def notice(self, kind: str, data: dict[str, Any]) -> Outbound | None:
        """Live call activity (transcript lines, timeline events, the end) for clients
        that show it; telephony protocols have no place for it."""
        return None


def parse_json(message: str | bytes) -> dict[str, Any] | Malformed:
    if isinstance(message, bytes):
        return Malformed("expected a JSON text message, got a binary frame")
    try:
        data = json.loads(message)
    except json.JSONDecodeError as exc:
        return Malformed(f"not valid JSON ({exc.msg} at char {exc.pos})")
    if not isinstance(data, dict):
        return Malformed(f"expected a JSON object, got {type(data).__name__}")
    return data


def stream_event(event: Any, data: dict[str, Any], provider: str) -> Inbound:
    """The non-media events Twilio Media Streams and Exotel share (Exotel's protocol is a
    copy of Twilio's with snake_case keys): ``mark``, ``dtmf``, ``stop``, ``connected``."""
    if event == "mark":
        name = (data.get("mark") or {}).get("name")
        return Mark(name) if isinstance(name, str) else Malformed("mark.name is missing")
    if event == "dtmf":
        digit = (data.get("dtmf") or {}).get("digit")
        return Dtmf(str(digit)) if digit is not None else Malformed("dtmf.digit is missing")
    if event == "stop":
        return Stop(str((data.get("stop") or {}).get("reason") or f"{provider} sent stop"))
    if event == "connected":
        return Ignored()
    return Malformed(f"unknown event {event!r}" if event else "a message without `event`")


def decode_payload(payload: Any, *, max_bytes: int) -> bytes | Malformed:
    if not isinstance(payload, str):
        return Malformed("media.payload must be a base64 string")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return Malformed("media.payload is not valid base64")
    if len(raw) > max_bytes:
        return Malformed(
            f"media.payload carries {len(raw)} bytes; at most {max_bytes} "
            f"({MAX_PAYLOAD_SECONDS:g} s of audio) per message"
        )
    return raw


def text_params(raw: Any) -> dict[str, Any]:
    """Custom parameters as call variables: string keys, JSON values only."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): v for k, v in raw.items() if v is None or isinstance(v, str | int | float | bool)
    }
