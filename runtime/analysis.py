"""What post-call analysis and QC ask an LLM for, and how its reply is checked.

Each is a `JsonTask`: a static system prompt (instructions plus the JSON Schema of the
answer, identical bytes for every call of a bot version, so providers can cache it), a
per-call user message (the bot's ``prompt`` template rendered over the record, then the
transcript), and a pydantic model the reply must pass: one JSON object with exactly the
wanted keys, optionally inside a ```json fence. Running it is `runtime.postcall`'s job.

Templates see the record's fields as JSON values, ``record`` (the whole record), the call's
variables, ``bot`` and ``call`` like the call's other templates, ``fields`` (the analysis
fields wanted: name -> type) and ``rubric`` (the QC criteria). The record's own ``fields``
(set by dispositions) is ``record.fields``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from runtime.dispositions import expression_context
from runtime.record import CallRecord
from runtime.schema import AnalysisFieldType, ProviderConfig
from runtime.templates import PromptTemplate

if TYPE_CHECKING:
    from runtime.compiler import CompiledBot

_FENCED = re.compile(r"^```(?:json)?[ \t]*\n(.*)\n```$", re.DOTALL | re.IGNORECASE)
_STRICT = ConfigDict(extra="forbid", strict=True)  # "yes" is not a bool, "3" not a number
QC_SCALE = (1, 5)  # a 5-point scale: what QA scorecards use, without spurious precision
REPLY_EXCERPT_CHARS = 200


class InvalidReply(ValueError):
    """The model's reply is not the JSON object asked for. The message says why, phrased
    so it can be sent back to the model."""


@dataclass(frozen=True)
class JsonTask:
    """One post-call LLM job of a bot version: what to send and what to accept back."""

    name: Literal["analysis", "qc"]
    instructions: str  # the static system prompt
    answer: type[BaseModel]
    prompt: PromptTemplate
    llm: ProviderConfig
    llm_options: BaseModel
    timeout: float
    finish: Callable[[BaseModel], dict[str, Any]]  # the validated answer as record data

    def user_message(self, record: CallRecord, bot: CompiledBot) -> str:
        request = self.prompt.render(template_context(record, bot)).strip()
        return f"{request}{flow_text(record)}\n\nTranscript:\n{transcript_text(record)}"

    def parse(self, reply: str) -> dict[str, Any]:
        """The validated answer, or `InvalidReply`."""
        text = reply.strip()
        fenced = _FENCED.match(text)
        if fenced:
            text = fenced.group(1).strip()
        if not text:
            raise InvalidReply("the reply was empty")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidReply(f"the reply is not one JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidReply(f"the reply is JSON but not an object ({type(data).__name__})")
        try:
            answer = self.answer.model_validate(data)
        except ValidationError as exc:
            raise InvalidReply("; ".join(_describe(error) for error in exc.errors())) from None
        return self.finish(answer)


def analysis_task(bot: CompiledBot) -> JsonTask | None:
    config = bot.bot.analysis
    if config is None:
        return None
    answer = fields_model("Analysis", config.fields)
    instructions = "\n\n".join(
        [
            _role(bot, "analyse a finished phone call"),
            "The user message says what to look for and holds the transcript.",
            _json_only(answer),
        ]
    )
    return JsonTask(
        name="analysis",
        instructions=instructions,
        answer=answer,
        prompt=bot.templates["analysis.prompt"],
        llm=config.llm or bot.bot.llm,
        llm_options=_llm_options(bot, "analysis", config.llm),
        timeout=config.timeout,
        finish=lambda answer: answer.model_dump(mode="json", by_alias=True),
    )


def qc_task(bot: CompiledBot) -> JsonTask | None:
    config = bot.bot.qc
    if config is None:
        return None
    answer = qc_model(config.rubric)
    low, high = QC_SCALE
    criteria = "\n".join(f"- {name}: {meaning}" for name, meaning in config.rubric.items())
    instructions = "\n\n".join(
        [
            _role(bot, "review the quality of a finished phone call"),
            f"Score the bot on each criterion of this rubric, from {low} (poor) to {high} "
            "(excellent), with a one-sentence note saying why, then summarise the call's "
            f"quality in two sentences at most.\nRubric:\n{criteria}",
            "The user message says how to review and holds the transcript.",
            _json_only(answer),
        ]
    )
    return JsonTask(
        name="qc",
        instructions=instructions,
        answer=answer,
        prompt=bot.templates["qc.prompt"],
        llm=config.llm or bot.bot.llm,
        llm_options=_llm_options(bot, "qc", config.llm),
        timeout=config.timeout,
        finish=_qc_result,
    )


def fields_model(title: str, fields: Mapping[str, AnalysisFieldType]) -> type[BaseModel]:
    """A strict model with exactly these fields. Attribute names are positional and the
    field names aliases, so a field may be called anything (`json`, `model_id` ...)."""
    definitions: dict[str, Any] = {
        f"field_{index}": (_python_type(kind), Field(alias=name))
        for index, (name, kind) in enumerate(fields.items())
    }
    return create_model(title, __config__=_STRICT, **definitions)


def qc_model(rubric: Mapping[str, str]) -> type[BaseModel]:
    low, high = QC_SCALE
    criterion = create_model(
        "CriterionScore",
        __config__=_STRICT,
        score=(int, Field(ge=low, le=high)),
        note=(str, ...),
    )
    scores: dict[str, Any] = {
        f"criterion_{index}": (criterion, Field(alias=name)) for index, name in enumerate(rubric)
    }
    return create_model(
        "QualityReview",
        __config__=_STRICT,
        scores=(create_model("Scores", __config__=_STRICT, **scores), ...),
        summary=(str, ...),
    )


def _qc_result(answer: BaseModel) -> dict[str, Any]:
    result = answer.model_dump(mode="json", by_alias=True)
    values = [entry["score"] for entry in result["scores"].values()]
    result["overall"] = round(sum(values) / len(values), 2)  # the rubric is never empty
    return result


def _python_type(kind: AnalysisFieldType) -> Any:
    if isinstance(kind, list):
        return Literal[tuple(kind)]
    return {"bool": bool, "number": float, "string": str, "list": list[str]}[kind]


def _llm_options(bot: CompiledBot, section: str, own: ProviderConfig | None) -> BaseModel:
    return bot.provider_options[f"{section}.llm" if own is not None else "llm"]


def _role(bot: CompiledBot, job: str) -> str:
    about = f" ({bot.bot.description})" if bot.bot.description else ""
    return f"You {job} handled by the voice bot {bot.id!r}{about}."


def _json_only(answer: type[BaseModel]) -> str:
    schema = json.dumps(_without_titles(answer.model_json_schema()))
    return (
        "Reply with exactly one JSON object and nothing else: no prose, no comments. It has "
        f"exactly the keys of this JSON Schema, every one of them:\n{schema}"
    )


def _without_titles(schema: Any, *, names: bool = False) -> Any:
    """pydantic's generated titles are tokens the model does not need. ``names`` marks a
    mapping of property names, whose keys are data, not keywords."""
    if isinstance(schema, dict):
        return {
            key: _without_titles(value, names=key in ("properties", "$defs") and not names)
            for key, value in schema.items()
            if names or key != "title"
        }
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    return schema


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"`{where}` is missing"
    if error["type"] == "extra_forbidden":
        return f"`{where}` is not one of the keys asked for"
    return f"`{where}`: {error['msg']} (got {json.dumps(error.get('input'))})"


def template_context(record: CallRecord, bot: CompiledBot) -> dict[str, Any]:
    """What analysis and QC prompt templates see (the module docstring lists it)."""
    analysis, qc = bot.bot.analysis, bot.bot.qc
    call = {
        "session_id": record.session_id,
        "transport": record.transport,
        "caller": record.caller,
        "callee": record.callee,
        "now": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return {
        **expression_context(record, bot),
        "bot": bot.bot_info(),
        "call": call,
        "fields": dict(analysis.fields) if analysis else {},
        "rubric": dict(qc.rubric) if qc else {},
    }


def flow_text(record: CallRecord) -> str:
    """What the call's flow knew (steps taken, values captured), for the analysing LLM:
    the facts it would otherwise have to dig out of the transcript. Empty without one."""
    lines = []
    if record.steps:
        lines.append("Steps taken: " + " -> ".join(record.steps))
    if record.captured:
        lines.append("Values captured: " + json.dumps(record.captured, default=str))
    return "\n\n" + "\n".join(lines) if lines else ""


def transcript_text(record: CallRecord) -> str:
    """One line per turn, ``customer: ...`` / ``bot: ...``."""
    if not record.transcript:
        return "(nothing was said)"
    return "\n".join(f"{entry.role}: {entry.text.strip()}" for entry in record.transcript)


def excerpt(reply: str) -> str:
    text = " ".join(reply.split())
    if len(text) > REPLY_EXCERPT_CHARS:
        text = text[:REPLY_EXCERPT_CHARS] + "..."
    return json.dumps(text)
