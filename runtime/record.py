"""The call record: everything known about one call, delivered durably after it ends."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field


class DisconnectedBy(str, Enum):
    """Why a call ended. Exactly one per call; the raw cause is kept beside it."""

    CUSTOMER = "customer"
    BOT = "bot"
    VOICEMAIL = "voicemail"
    RNR = "rnr"
    NO_ANSWER = "no_answer"
    OUTSIDE_HOURS = "outside_hours"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    ERROR = "error"


class TranscriptEntry(BaseModel):
    role: Literal["bot", "customer"]
    text: str
    at: float = Field(description="seconds since the call started")
    interrupted: bool = False


class CallEvent(BaseModel):
    """One entry of the call's timeline (a turn, a tool call, an error, ...)."""

    type: str
    at: float = Field(description="seconds since the call started")
    data: dict[str, Any] = Field(default_factory=dict)


class ProviderUsage(BaseModel):
    provider: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    audio_seconds: float = 0.0
    characters: int = 0
    cost_usd: float | None = None


class CallRecord(BaseModel):
    """One call, from ringing to post-call work. Documented field by field in the README."""

    model_config = ConfigDict(use_enum_values=True)

    session_id: str
    bot_id: str
    bot_version: str
    transport: str = Field(description="text, twilio, exotel, ws, livekit")
    direction: Literal["inbound", "outbound"] = "inbound"
    caller: str | None = None
    callee: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    started_at: dt.datetime = Field(description="the call reached dialplan (or was placed)")
    answered_at: dt.datetime | None = Field(None, description="the conversation began")
    ended_at: dt.datetime | None = None
    duration: float = Field(0.0, description="seconds from start to end")
    disconnected_by: DisconnectedBy | None = None
    cause: str | None = Field(None, description="raw cause: SIP status, provider error, ...")
    sip_status: int | None = Field(None, description="the SIP status of a failed outbound dial")
    transferred_to: str | None = Field(None, description="where the caller was transferred")
    step: str | None = Field(None, description="the flow step the call ended in")
    steps: list[str] = Field(
        default_factory=list, description="the flow steps entered, in order (the start first)"
    )
    captured: dict[str, Any] = Field(
        default_factory=dict, description="values captured by flow transitions and tools"
    )
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    events: list[CallEvent] = Field(default_factory=list)
    usage: list[ProviderUsage] = Field(default_factory=list)
    recording_key: str | None = None
    disposition: str | None = Field(None, description="the first disposition rule that fired")
    dispositions: list[str] = Field(
        default_factory=list, description="every disposition rule that fired, in order"
    )
    fields: dict[str, Any] = Field(
        default_factory=dict, description="values set by disposition rules (`set`)"
    )
    analysis_skipped: str | None = Field(
        None, description="the disposition rule that skipped post-call analysis"
    )
    post_call_analysis: dict[str, Any] | None = None
    analysis_error: str | None = None
    qc: dict[str, Any] | None = None
    qc_error: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_customer_message(self) -> bool:
        return any(entry.role == "customer" and entry.text.strip() for entry in self.transcript)

    def expression_context(self) -> dict[str, Any]:
        """What disposition `when` expressions see: every field, as JSON values."""
        return self.model_dump(mode="json")


RECORD_FIELDS = frozenset(CallRecord.model_fields) | frozenset(CallRecord.model_computed_fields)
