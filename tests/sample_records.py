"""Realistic call records for outbox tests and the outbox benchmark: a three-minute call
with 30 transcript entries and 100 timeline events, about as large as production ones."""

from __future__ import annotations

import datetime as dt
from typing import Any

from runtime.record import CallEvent, CallRecord, ProviderUsage, TranscriptEntry

CALL_START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.timezone.utc)
CUSTOMER_LINES = [
    "Hi, I'd like to move my cleaning appointment to next week if that's possible.",
    "Tuesday afternoon would be best, maybe around three?",
    "Yes, that's the one. It's under Ann Lee, date of birth March third.",
    "Do I need to bring anything, like my insurance card?",
]
BOT_LINES = [
    "Of course. Let me look up your appointment. Could you tell me your full name?",
    "I found it: a cleaning with Dr. Patel this Thursday at 10 am. Shall I move it?",
    "Tuesday at 3 pm is free with Dr. Patel. I've booked it and cancelled Thursday.",
    "Please bring your insurance card and arrive ten minutes early. Anything else?",
]


def sample_record(
    session_id: str = "call-0001",
    *,
    ended_at: dt.datetime | None = None,
    entries: int = 30,
    events: int = 100,
) -> CallRecord:
    """A finished inbound call; ``ended_at`` defaults to three minutes after CALL_START."""
    ended_at = ended_at or CALL_START + dt.timedelta(minutes=3)
    started_at = ended_at - dt.timedelta(minutes=3)
    step = 180.0 / max(entries, 1)
    transcript = [
        TranscriptEntry(
            role="customer" if i % 2 else "bot",
            text=(CUSTOMER_LINES if i % 2 else BOT_LINES)[(i // 2) % 4],
            at=round(i * step, 3),
            interrupted=i % 11 == 5,
        )
        for i in range(entries)
    ]
    timeline = [_event(i, 180.0 * i / max(events, 1)) for i in range(events)]
    return CallRecord(
        session_id=session_id,
        bot_id="receptionist",
        bot_version="3f9c2a1b7d",
        transport="twilio",
        caller="+15550100",
        callee="+15550199",
        variables={"caller_name": "Ann", "clinic_name": "Bright Smile Dental", "tier": "gold"},
        started_at=started_at,
        answered_at=started_at + dt.timedelta(seconds=1.2),
        ended_at=ended_at,
        duration=180.0,
        disconnected_by="customer",
        cause="caller hung up",
        transcript=transcript,
        events=timeline,
        usage=[
            ProviderUsage(provider="pocketsphinx", audio_seconds=92.4),
            ProviderUsage(
                provider="litellm",
                model="openai/gpt-4o-mini",
                prompt_tokens=18_240,
                completion_tokens=912,
                cached_tokens=14_336,
                cost_usd=0.0031,
            ),
            ProviderUsage(provider="piper", characters=1_874),
        ],
        recording_key="recordings/" + session_id + ".wav",
        disposition="rescheduled",
        dispositions=["rescheduled", "has_insurance_question"],
        fields={"priority": "normal"},
        post_call_analysis={
            "intent": "reschedule",
            "rescheduled": True,
            "new_slot": "Tuesday 15:00",
            "sentiment": "positive",
            "summary": "Caller moved her cleaning from Thursday 10:00 to Tuesday 15:00.",
        },
        qc={"score": 0.92, "greeting": True, "verified_identity": True},
    )


def _event(index: int, at: float) -> CallEvent:
    kind = index % 5
    data: dict[str, Any]
    if kind == 0:
        data = {"role": "customer", "chars": 74, "end_of_utterance_delay": 0.41}
        return CallEvent(type="turn", at=round(at, 3), data=data)
    if kind == 1:
        data = {"role": "bot", "chars": 81, "llm_node_ttft": 0.38, "tts_node_ttfb": 0.12}
        return CallEvent(type="turn", at=round(at, 3), data=data)
    if kind == 2:
        return CallEvent(type="bot_audio", at=round(at, 3), data={"latency_ms": 612.4})
    if kind == 3:
        data = {
            "name": "calendar_find_slots",
            "arguments": {"day": "tuesday", "after": "14:00", "provider": "Dr. Patel"},
            "outcome": "ok",
            "error": None,
            "result": '{"slots": ["15:00", "15:30", "16:00"], "timezone": "America/New_York"}',
            "latency_ms": 48.211,
        }
        return CallEvent(type="tool_call", at=round(at, 3), data=data)
    data = {"frames": 412, "underruns": 0, "late_ms": 3.5, "queue_ms_max": 120.0}
    return CallEvent(type="audio_out", at=round(at, 3), data=data)
