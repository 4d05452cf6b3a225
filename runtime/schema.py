"""The pydantic model of a bot file (``bots/<id>.toml``). Unknown keys are errors.

Provider tables (``[stt]``, ``[llm]``, ``[tts]``, ``[vad]``) and ``[[tools]]`` entries keep
their own options as extra keys here; the compiler validates them against the options model
the provider's plugin registered, because only the registry knows those models.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.durations import Duration
from runtime.errors import type_choice
from runtime.flow.schema import FlowConfig, Step
from runtime.identifiers import BOT_ID as BOT_ID
from runtime.identifiers import VARIABLE_NAME as VARIABLE_NAME


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptConfig(Strict):
    """``system`` is the static part (same bytes on every call of a bot version, so LLM
    providers can cache it; it may use ``bot.*`` only). ``context`` is the per-call part,
    rendered with the call's variables. Each is a file under prompts/ or inline text."""

    system: str = Field(description="static system prompt: a file under prompts/ or inline text")
    context: str = Field("", description="per-call part of the system prompt (may use variables)")
    greeting: str = Field("", description="what the bot says first (template)")
    greeting_mode: Literal["speak", "generate", "wait"] = Field(
        "speak",
        description="speak: say `greeting` verbatim; generate: the LLM opens the call "
        "(`greeting` is its instruction); wait: let the caller speak first",
    )


class VariableSpec(Strict):
    default: Any = None
    required: bool = False
    description: str = ""


class ProviderConfig(BaseModel):
    """``provider`` picks a registered provider; every other key is that provider's option."""

    model_config = ConfigDict(extra="allow", frozen=True)
    provider: str = Field(description="name of a registered provider (see `dialplan plugins`)")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TurnConfig(Strict):
    allow_interruptions: bool = True
    min_endpointing_delay: Duration = Field(
        0.3, description="wait after the caller's speech ends, when the turn sounds finished"
    )
    max_endpointing_delay: Duration = Field(
        3.0,
        description="wait after the caller's speech ends, when the turn sounds unfinished "
        '("I\'d like to book, um"); `transcript` detection decides which',
    )
    min_interruption_duration: Duration = 0.5
    detection: Literal["transcript", "vad", "stt", "manual"] = Field(
        "transcript",
        description="how the end of the caller's turn is detected (never a cloud model): "
        "transcript = the VAD's silence, judged by the words heard (a sentence ending on "
        '"and", "the", "um" or a comma waits for more); vad = the silence alone',
    )


class Limits(Strict):
    """When a call ends without anyone deciding to end it. Messages are templates over the
    call's variables; an empty message ends the call without a word."""

    max_duration: Duration = Field(
        900.0, gt=0, description="wall-clock limit of a call; then it ends as `timeout`"
    )
    max_duration_message: str = Field(
        "", description="said (after cutting the bot off) when max_duration is reached"
    )
    silence_timeout: Duration = Field(
        20.0, gt=0, description="hang up after this much dead air (`rnr`)"
    )
    silence_reminders: list[str] = Field(
        default_factory=list,
        description="said one by one, evenly spaced within silence_timeout, while the line "
        "stays silent; the caller speaking starts them over",
    )
    ring_timeout: Duration = Field(
        30.0, gt=0, description="outbound: give up ringing after this long (`no_answer`)"
    )
    max_tool_steps: int = Field(3, ge=1, le=20)
    max_provider_errors: int = Field(
        1,
        ge=0,
        le=10,
        description="unrecoverable STT/LLM/TTS errors (after the provider's own retries) "
        "tolerated in a row; the next one ends the call as `error`",
    )
    error_message: str = Field(
        "I'm sorry, something went wrong on our side. Please call again later.",
        description="the apology said when the call ends on an error (when TTS still works)",
    )


class ToolBinding(BaseModel):
    """``use`` picks a registered tool; the other keys are that tool's options, except
    ``capture``, which is dialplan's: values this tool's result sets."""

    model_config = ConfigDict(extra="allow", frozen=True)
    use: str = Field(description="name of a registered tool (see `dialplan plugins`)")
    capture: dict[str, str] = Field(
        default_factory=dict,
        description="captured values set from the tool's result when it succeeds: "
        '`{ booking_ref = "result.reference" }` (Jinja expressions over `result`)',
    )

    @field_validator("capture")
    @classmethod
    def _capture_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not VARIABLE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid capture name (letters, digits, _)")
        return value

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DispositionRule(Strict):
    """An auto-disposition rule, applied after the call (see runtime/dispositions.py).

    A rule named like a built-in rule (``short_call``, ``voicemail`` ...) replaces it;
    ``enabled = false`` with no ``when`` just disables that built-in."""

    name: str = Field(min_length=1, description="what `disposition` says when this fires")
    when: str | None = Field(
        None,
        description="a Jinja expression over the call record (duration, disconnected_by, "
        "has_customer_message, transcript, ...) and the call's variables",
    )
    enabled: bool = Field(True, description="false: never fire (disables a built-in rule)")
    skip_analysis: bool = Field(False, description="no LLM analysis or QC when this fires")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="values for the record's `fields`; a string value is a template over "
        "the same names as `when`",
    )

    @model_validator(mode="after")
    def _needs_a_condition(self) -> DispositionRule:
        if self.enabled and self.when is None:
            raise ValueError(
                f"disposition {self.name!r} needs `when` (a Jinja expression over the call "
                "record), or `enabled = false` to disable the built-in rule of that name"
            )
        return self


AnalysisFieldType = Literal["bool", "number", "string", "list"] | list[str]
ANALYSIS_TYPES = ("bool", "number", "string", "list")
POST_CALL_TIMEOUT = 60.0  # seconds; a post-call LLM job is not waited on by anyone live


def _json_keys(what: str) -> Any:
    """A validator for keys the LLM must reproduce exactly in its JSON reply."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not VARIABLE_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid {what} name (letters, digits, _)")
        return value

    return check


class AnalysisConfig(Strict):
    """Post-call analysis: one LLM call that returns exactly ``fields`` as a JSON object,
    stored in the record's ``post_call_analysis``."""

    prompt: str = Field(
        description="what to extract: a file under prompts/ or inline text (a template over "
        "the record; the transcript is appended to it)"
    )
    fields: dict[str, AnalysisFieldType] = Field(
        min_length=1,
        description='name -> "bool", "number", "string", "list" (of strings) or a list of '
        "allowed strings",
    )
    llm: ProviderConfig | None = Field(None, description="the LLM to use; default: [llm]")
    timeout: Duration = Field(POST_CALL_TIMEOUT, description="give up (both attempts) after")

    _field_names = field_validator("fields")(_json_keys("field"))

    @field_validator("fields", mode="before")
    @classmethod
    def _known_types(cls, value: Any) -> Any:
        # one message naming the choices (and what was probably meant), not one per
        # member of the union
        if isinstance(value, dict):
            for name, kind in value.items():
                if isinstance(kind, str) and kind not in ANALYSIS_TYPES:
                    raise ValueError(
                        f"field {name!r}: {kind!r} is not a field type; "
                        + type_choice(kind, ANALYSIS_TYPES)
                        + ", or a list of allowed values"
                    )
        return value

    @field_validator("fields")
    @classmethod
    def _usable_choices(cls, value: dict[str, AnalysisFieldType]) -> dict[str, AnalysisFieldType]:
        for name, kind in value.items():
            if isinstance(kind, list) and (not kind or len(set(kind)) != len(kind)):
                raise ValueError(f"field {name!r}: list the allowed values, each once")
        return value


class QCConfig(Strict):
    """Post-call quality control: every rubric criterion scored 1 (poor) to 5 (excellent)
    with a note, plus a summary; stored in the record's ``qc`` as ``{"scores": {criterion:
    {"score", "note"}}, "summary", "overall"}``, ``overall`` being the mean score."""

    prompt: str = Field(
        description="how to review: a file under prompts/ or inline text (a template over "
        "the record; the transcript is appended to it)"
    )
    rubric: dict[str, str] = Field(min_length=1, description="criterion -> what a good call does")
    llm: ProviderConfig | None = Field(None, description="the LLM to use; default: [llm]")
    timeout: Duration = Field(POST_CALL_TIMEOUT, description="give up (both attempts) after")

    _criterion_names = field_validator("rubric")(_json_keys("criterion"))


class RecordingConfig(Strict):
    enabled: bool = False
    stereo: bool = Field(True, description="caller on the left channel, bot on the right")


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


def known_timezone(value: str) -> str:
    """A validator for IANA time zone names (schedules, calendars)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name like 'Europe/Berlin'"
        ) from None
    return value


class Schedule(Strict):
    timezone: str = "UTC"
    hours: dict[str, str] = Field(
        default_factory=dict,
        description='opening hours per day: { "mon-fri" = "09:00-17:00", sat = "10:00-14:00" }',
    )
    closed_message: str = Field("", description="said before hanging up outside opening hours")

    _known_timezone = field_validator("timezone")(known_timezone)

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[str, str]) -> dict[str, str]:
        for days, span in value.items():
            expand_days(days)
            parse_span(span)
        return value

    def is_open(self, at: dt.datetime) -> bool:
        if not self.hours:
            return True
        hours = opening_hours(self.timezone, tuple(self.hours.items()))
        return hours.open_at(at.astimezone(hours.zone))


@dataclass(frozen=True)
class OpeningHours:
    """A schedule's hours parsed: its zone and the open spans of each weekday (Monday
    first), so a call's opening-hours check parses nothing."""

    zone: zoneinfo.ZoneInfo
    week: tuple[tuple[tuple[dt.time, dt.time], ...], ...]

    def open_at(self, local: dt.datetime) -> bool:
        """``local``: a time in `zone`."""
        now = local.time()
        return any(start <= now < end for start, end in self.week[local.weekday()])


@functools.lru_cache(maxsize=1024)
def opening_hours(timezone: str, hours: tuple[tuple[str, str], ...]) -> OpeningHours:
    week: list[list[tuple[dt.time, dt.time]]] = [[] for _ in DAY_NAMES]
    for days, span in hours:
        parsed = parse_span(span)
        for day in expand_days(days):
            week[DAY_NAMES.index(day)].append(parsed)
    return OpeningHours(zoneinfo.ZoneInfo(timezone), tuple(tuple(spans) for spans in week))


def expand_days(spec: str) -> list[str]:
    days: list[str] = []
    for part in spec.lower().split(","):
        part = part.strip()
        first, _, last = part.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"{spec!r}: days are written mon..sun, e.g. 'mon-fri' or 'sat,sun'")
        start = DAY_NAMES.index(first)
        stop = DAY_NAMES.index(last) if last else start
        days.extend(DAY_NAMES[start : stop + 1])
    return days


def parse_span(span: str) -> tuple[dt.time, dt.time]:
    match = _HOURS.match(span.strip())
    if not match:
        raise ValueError(f"{span!r}: opening hours are written 'HH:MM-HH:MM', e.g. '09:00-17:30'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        midnight = (h2, m2) == (24, 0)  # "24:00": open until the end of the day
        start, end = dt.time(h1, m1), dt.time.max if midnight else dt.time(h2, m2)
    except ValueError:
        raise ValueError(f"{span!r}: not a valid time of day") from None
    if end <= start:
        raise ValueError(f"{span!r}: closing time must be after opening time")
    return start, end


class VoicemailConfig(Strict):
    """Answering-machine detection on outbound calls (livekit-agents' AMD), before the
    greeting: a machine ends the call as `voicemail`."""

    detect: bool = Field(True, description="listen for an answering machine on outbound calls")
    action: Literal["hangup", "leave_message"] = Field(
        "hangup", description="hang up, or leave `message` when the mailbox takes one"
    )
    message: str = Field("", description="the message left on the machine (template)")
    timeout: Duration = Field(20.0, gt=0, description="give up detecting (treat as a person)")
    llm: ProviderConfig | None = Field(
        None,
        description="classifies the greeting; default: the bot's [llm], or built-in "
        "phrase matching when that is the offline `rules` provider",
    )

    @model_validator(mode="after")
    def _message_to_leave(self) -> VoicemailConfig:
        if self.action == "leave_message" and not self.message.strip():
            raise ValueError('action = "leave_message" needs a `message` to leave')
        return self


class Bot(Strict):
    """One bot. ``id`` defaults to the file name."""

    id: str | None = Field(None, description="defaults to the file name without .toml")
    description: str = ""
    language: str = Field("en", description="BCP-47 language of the conversation")
    prompt: PromptConfig
    variables: dict[str, VariableSpec] = Field(
        default_factory=dict,
        description="per-call variables: `name = default` or "
        '`name = { required = true, description = "..." }`',
    )
    stt: ProviderConfig | None = None
    llm: ProviderConfig
    tts: ProviderConfig | None = None
    vad: ProviderConfig | None = None
    turn: TurnConfig = TurnConfig()
    limits: Limits = Limits()
    tools: list[ToolBinding] = Field(default_factory=list)
    dispositions: list[DispositionRule] = Field(default_factory=list)
    analysis: AnalysisConfig | None = None
    qc: QCConfig | None = None
    recording: RecordingConfig = RecordingConfig()
    schedule: Schedule | None = None
    voicemail: VoicemailConfig | None = None
    flow: FlowConfig | None = Field(
        None, description="script the conversation as steps (see [steps.*]); none: one step"
    )
    steps: dict[str, Step] = Field(
        default_factory=dict, description="the steps of the flow, by name"
    )

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        if value is not None and not BOT_ID.match(value):
            raise ValueError(
                f"{value!r} is not a valid bot id: use lowercase letters, digits, '-' and '_'"
            )
        return value

    @field_validator("variables", mode="before")
    @classmethod
    def _variable_specs(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        specs: dict[str, Any] = {}
        for name, spec in value.items():
            if not VARIABLE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid variable name (letters, digits, _)")
            is_spec = (
                isinstance(spec, dict) and spec and set(spec) <= set(VariableSpec.model_fields)
            )
            specs[name] = spec if is_spec else {"default": spec}
        return specs

    @field_validator("steps")
    @classmethod
    def _step_names(cls, value: dict[str, Step]) -> dict[str, Step]:
        for name in value:
            if not VARIABLE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid step name (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _flow_and_steps(self) -> Bot:
        if self.steps and self.flow is None:
            first = next(iter(self.steps))
            raise ValueError(
                f"the bot has steps but no start step: add [flow] with start = {first!r}"
            )
        if self.flow is not None and not self.steps:
            raise ValueError("[flow] needs steps: declare them as [steps.<name>] tables")
        return self

    @model_validator(mode="after")
    def _unique_dispositions(self) -> Bot:
        names = [rule.name for rule in self.dispositions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"disposition names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.variables.items() if not spec.required}

    def required_variables(self) -> list[str]:
        return [name for name, spec in self.variables.items() if spec.required]
