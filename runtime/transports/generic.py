"""The generic WebSocket protocol: JSON control messages plus binary 16-bit PCM.

For any client that is not a telephony provider (the browser widget, a softphone, a test
harness). The full protocol is in the README ("Generic WebSocket protocol"); in short:

client → server
    {"type": "start", "bot": "receptionist", "variables": {...}, "sample_rate": 16000,
     "caller": "+1555...", "marks": true}
    binary frames: the caller's audio, 16-bit little-endian mono PCM at ``sample_rate``
    {"type": "mark", "name": "seg-1"}    echo of our mark once its audio has played
    {"type": "dtmf", "digit": "5"}       a key press
    {"type": "say", "text": "..."}        a line typed instead of spoken (the widget's text box)
    {"type": "stop"}                      the caller hangs up
server → client
    {"type": "started", "session_id": ..., "bot": ..., "bot_version": ..., "sample_rate": ...}
    {"type": "flow", "graph": {...}, "step": ..., "captured": {...}}
                                          a bot with a flow, after `started`: its graph
                                          (`runtime.flow.graph.graph_json`), the step the
                                          call is in, the values captured; `step_entered`
                                          and `captured` events follow as `event`s
    binary frames: the bot's audio, same format and rate
    {"type": "mark", "name": "seg-1"}    the bot's segment ends here
    {"type": "clear"}                     the caller barged in: drop buffered bot audio
    {"type": "transcript", "role": "customer"|"bot", "text": ..., "interrupted": ...}
    {"type": "event", "event": {"type": ..., "at": ..., "data": {...}}}
    {"type": "ended", "session_id": ..., "disconnected_by": ..., "cause": ...}
    {"type": "error", "message": ...}     a message we could not use (the call goes on)
"""

from __future__ import annotations

import json
from typing import Any

from runtime.transports.wire import (
    MAX_PAYLOAD_SECONDS,
    MAX_TYPED_CHARS,
    Dtmf,
    Inbound,
    Malformed,
    Mark,
    Media,
    Outbound,
    Start,
    Stop,
    Typed,
    Wire,
    parse_json,
    text_params,
)

SAMPLE_RATES = (8000, 16000, 24000, 48000)


class GenericWire(Wire):
    transport = "websocket"

    def __init__(self, transport: str = "websocket") -> None:
        self.transport = transport
        self.sample_rate = 16000

    def decode(self, message: str | bytes) -> Inbound:
        if isinstance(message, bytes):
            limit = int(self.sample_rate * 2 * MAX_PAYLOAD_SECONDS)
            if len(message) % 2:
                return Malformed(
                    f"a binary frame of {len(message)} bytes: 16-bit PCM needs an even count"
                )
            if len(message) > limit:
                return Malformed(f"a binary frame of {len(message)} bytes; at most {limit}")
            return Media(message)
        data = parse_json(message)
        if isinstance(data, Malformed):
            return data
        kind = data.get("type")
        if kind == "start":
            return self._start(data)
        if kind == "mark":
            name = data.get("name")
            return Mark(name) if isinstance(name, str) else Malformed("mark needs a `name`")
        if kind == "dtmf":
            digit = data.get("digit")
            return Dtmf(digit) if isinstance(digit, str) else Malformed("dtmf needs a `digit`")
        if kind == "say":
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                return Malformed("say needs a `text`")
            if len(text) > MAX_TYPED_CHARS:
                return Malformed(f"say: {len(text)} characters; at most {MAX_TYPED_CHARS}")
            return Typed(text.strip())
        if kind in ("stop", "hangup"):
            return Stop("the client hung up")
        return Malformed(
            f"unknown message type {kind!r}; expected start, mark, dtmf, say or stop"
            if kind
            else "a message without `type`"
        )

    def _start(self, data: dict[str, Any]) -> Inbound:
        rate = data.get("sample_rate", 16000)
        if rate not in SAMPLE_RATES:
            rates = ", ".join(map(str, SAMPLE_RATES))
            return Malformed(f"sample_rate {rate!r}: use one of {rates}")
        variables = data.get("variables", {})
        if not isinstance(variables, dict):
            return Malformed("variables must be a JSON object")
        bot = data.get("bot")
        self.sample_rate = int(rate)
        return Start(
            stream_id=str(data.get("stream_id") or ""),
            bot=bot if isinstance(bot, str) and bot else None,
            variables=text_params(variables),
            caller=data.get("caller") if isinstance(data.get("caller"), str) else None,
            callee=data.get("callee") if isinstance(data.get("callee"), str) else None,
            sample_rate=self.sample_rate,
            echoes_marks=bool(data.get("marks", False)),
            outbound=data.get("direction") == "outbound",
            ignore_schedule=data.get("ignore_schedule") is True,
        )

    def audio(self, pcm16: bytes) -> Outbound | None:
        return pcm16

    def mark(self, name: str) -> Outbound | None:
        return json.dumps({"type": "mark", "name": name})

    def clear(self) -> Outbound | None:
        return json.dumps({"type": "clear"})

    def notice(self, kind: str, data: dict[str, Any]) -> Outbound | None:
        return json.dumps({"type": kind, **data}, default=str)
