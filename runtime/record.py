"""The call record: everything known about one call, delivered durably after it ends."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    model_config = ConfigDict(use_enum_values=True)

    session_id: str
    bot_id: str
    bot_version: str
    transport: str
    caller: str | None = None
    callee: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    started_at: dt.datetime
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    duration: float = Field(0.0, description="seconds from start to end")
    disconnected_by: DisconnectedBy | None = None
    cause: str | None = Field(None, description="raw cause: SIP status, provider error, ...")
    transferred_to: str | None = Field(None, description="where the caller was transferred")
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    events: list[CallEvent] = Field(default_factory=list)
    usage: list[ProviderUsage] = Field(default_factory=list)
    recording_key: str | None = None
    disposition: str | None = None
    post_call_analysis: dict[str, Any] | None = None
    qc: dict[str, Any] | None = None

    @property
    def has_customer_message(self) -> bool:
        return any(entry.role == "customer" and entry.text.strip() for entry in self.transcript)

    def expression_context(self) -> dict[str, Any]:
        """What disposition `when` expressions see."""
        data = self.model_dump(mode="json")
        data["has_customer_message"] = self.has_customer_message
        return data


RECORD_FIELDS = frozenset(CallRecord.model_fields) | {"has_customer_message"}
