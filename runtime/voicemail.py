"""Voicemail on outbound calls: livekit-agents' answering-machine detection (AMD) before
the greeting, and what the bot does about a machine (hang up, or leave a message).

AMD classifies the greeting it hears with an LLM tool call. A bot on a real model lends it
that model; the offline `rules` provider cannot classify free text, so such bots get
``PhraseClassifier``: the phrases answering machines say, as an ``llm.LLM``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, llm
from livekit.agents.llm import ChatChunk, ChoiceDelta, FunctionToolCall

from runtime.record import DisconnectedBy

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from runtime.call import CallContext
    from runtime.schema import VoicemailConfig

# first match wins: a full mailbox also says "leave a message"
MACHINE_PHRASES = (
    (
        "machine-unavailable",
        r"mailbox is full|(has not|hasn't|not) been set up|not accepting messages"
        r"|cannot (take|accept) (any )?messages",
    ),
    ("machine-ivr", r"\bpress (\d|one|two|three|star|pound)\b|\bpara español\b"),
    (
        "machine-vm",
        r"leave (a|your) (message|name)|after the (tone|beep)|voice ?mail|record your message"
        r"|(is|am) (not available|unavailable)|can't (come to|take) the (phone|call)",
    ),
)


class PhraseClassifier(llm.LLM):
    """Answers AMD's ``save_prediction`` tool call from phrases, without a model."""

    @property
    def model(self) -> str:
        return "voicemail-phrases"

    @property
    def provider(self) -> str:
        return "dialplan"

    def chat(self, *, chat_ctx: llm.ChatContext, **kwargs: Any) -> llm.LLMStream:
        return _PhraseStream(
            self,
            chat_ctx=chat_ctx,
            tools=kwargs.get("tools") or [],
            conn_options=kwargs.get("conn_options", DEFAULT_API_CONNECT_OPTIONS),
        )


def classify(transcript: str) -> str:
    text = transcript.lower()
    for label, pattern in MACHINE_PHRASES:
        if re.search(pattern, text):
            return label
    return "uncertain"  # AMD keeps listening, then settles on its timing rules


class _PhraseStream(llm.LLMStream):
    async def _run(self) -> None:
        messages = [item for item in self._chat_ctx.items if item.type == "message"]
        heard = messages[-1].text_content or "" if messages else ""
        call = FunctionToolCall(
            name="save_prediction",
            arguments=json.dumps({"label": classify(heard)}),
            call_id=f"amd_{uuid.uuid4().hex[:8]}",
        )
        self._event_ch.send_nowait(
            ChatChunk(id=call.call_id, delta=ChoiceDelta(role="assistant", tool_calls=[call]))
        )


class VoicemailScreen:
    """AMD for one outbound call. ``start`` must run before the greeting is queued: AMD
    holds every speech until its verdict, so a machine never hears the greeting and a
    person hears it as soon as they have said hello."""

    def __init__(
        self,
        session: AgentSession,
        call: CallContext,
        config: VoicemailConfig,
        classifier: llm.LLM | None,
        message: str,
    ) -> None:
        from livekit.agents.voice.amd import AMD

        self.call = call
        self.config = config
        self.message = message
        self.detector = AMD(
            session,
            llm=classifier,
            stt=None,  # the session's own transcripts: no second STT
            interrupt_on_machine=True,
            ivr_detection=False,
            suppress_compatibility_warning=True,
            detection_options={"timeout": config.timeout},
        )

    async def start(self) -> None:
        await self.detector.__aenter__()

    async def verdict(self) -> bool:
        """Wait for AMD; True when a machine answered (the call is then asked to end as
        ``voicemail``, leaving the message if the mailbox takes one)."""
        from livekit.agents.voice.amd import AMDCategory

        try:
            result = await self.detector.execute()
        finally:
            await self.detector.aclose()
        self.call.add_event(
            "voicemail_detection",
            category=result.category.value,
            reason=result.reason,
            transcript=result.transcript,
            delay_ms=round(result.delay * 1000, 1),
        )
        if not result.is_machine:
            return False
        leave = self.config.action == "leave_message" and result.category == AMDCategory.MACHINE_VM
        heard = f": {result.transcript!r}" if result.transcript else ""
        self.call.request_end(
            DisconnectedBy.VOICEMAIL,
            cause=f"answering machine ({result.category.value}){heard}",
            goodbye=self.message if leave else None,
        )
        return True
