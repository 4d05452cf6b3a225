"""Post-call analysis and QC: a scripted LLM on livekit's real base classes, registered as a
provider by a plugin on a real registry, answers each request with the next scripted reply
and remembers what it was sent. (The shipped bots and litellm's caching hints:
test_postcall_offline.py.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import APIConnectOptions, APIStatusError, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
from pydantic import BaseModel, ConfigDict

from runtime import CallContext, RegisterProvider, hookimpl
from runtime.analysis import InvalidReply, analysis_task, qc_task
from runtime.catalog import load_catalog
from runtime.compiler import CompiledBot
from runtime.postcall import RETRY_REQUEST, run_post_call
from runtime.record import CallRecord, DisconnectedBy, TranscriptEntry
from runtime.registry import Registry, load_registry

# -- a scripted LLM ----------------------------------------------------------------------

HANG = "<hang>"  # a reply that never comes


@dataclass
class Script:
    """Replies for one provider table, in order (a string, or an exception to raise), and
    every request's messages as (role, text)."""

    replies: list[str | Exception] = field(default_factory=list)
    requests: list[list[tuple[str, str]]] = field(default_factory=list)
    contexts: list[CallContext] = field(default_factory=list)


class ScriptedLLM(llm.LLM):
    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    @property
    def model(self) -> str:
        return "scripted-1"

    @property
    def provider(self) -> str:
        return "test"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: Any = NOT_GIVEN,
        tool_choice: Any = NOT_GIVEN,
        extra_kwargs: Any = NOT_GIVEN,
    ) -> ScriptedStream:
        self.script.requests.append(
            [
                (item.role, item.text_content or "")
                for item in chat_ctx.items
                if isinstance(item, llm.ChatMessage)
            ]
        )
        reply = self.script.replies.pop(0)
        return ScriptedStream(
            self, reply, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class ScriptedStream(llm.LLMStream):
    def __init__(self, model: ScriptedLLM, reply: str | Exception, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._reply = reply

    async def _run(self) -> None:
        if isinstance(self._reply, Exception):
            raise self._reply
        if self._reply == HANG:
            await asyncio.Event().wait()
        delta = llm.ChoiceDelta(role="assistant", content=self._reply)
        self._event_ch.send_nowait(llm.ChatChunk(id="r1", delta=delta))
        usage = llm.CompletionUsage(
            completion_tokens=30, prompt_tokens=500, prompt_cached_tokens=400, total_tokens=530
        )
        self._event_ch.send_nowait(llm.ChatChunk(id="r1", usage=usage))


class ScriptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: str


class ScriptedLLMPlugin:
    """Registers the ``scripted`` LLM; ``script = "name"`` in a table picks its script."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}

    def script(self, name: str, *replies: str | Exception) -> Script:
        self.scripts[name] = Script(list(replies))
        return self.scripts[name]

    @hookimpl
    def register_providers(self, register: RegisterProvider) -> None:
        register(kind="llm", name="scripted", factory=self.create, options=ScriptOptions)

    def create(self, options: ScriptOptions, call: CallContext) -> ScriptedLLM:
        script = self.scripts[options.script]
        script.contexts.append(call)
        return ScriptedLLM(script)


@pytest.fixture
def scripted() -> ScriptedLLMPlugin:
    return ScriptedLLMPlugin()


@pytest.fixture
def scripted_registry(scripted: ScriptedLLMPlugin) -> Registry:
    return load_registry(extra_plugins=[("scripted-llm", scripted)])


# -- the bot and its call ----------------------------------------------------------------

CLINIC = """
description = "Test Clinic front desk"
[prompt]
system = "You are the front desk."
[variables]
customer_name = "Ann"
[llm]
provider = "scripted"
script = "conversation"

[analysis]
prompt = "Did {{ customer_name }} book? It took {{ duration }} s; fields: {{ fields|join(', ') }}."
timeout = "{analysis_timeout}"
[analysis.fields]
booked = "bool"
sentiment = ["positive", "neutral", "negative"]
topics = "list"
wait_minutes = "number"
summary = "string"
[analysis.llm]
provider = "scripted"
script = "analysis"

[qc]
prompt = "Review the call for {{ customer_name }} against: {{ rubric | join(', ') }}."
rubric = { greeting = "greets the caller by name", accuracy = "gives correct information" }
[qc.llm]
provider = "scripted"
script = "qc"
"""
ANALYSIS: dict[str, Any] = {
    "booked": True,
    "sentiment": "positive",
    "topics": ["cleaning"],
    "wait_minutes": 5,
    "summary": "Ann booked a cleaning.",
}
QC: dict[str, Any] = {
    "scores": {
        "greeting": {"score": 5, "note": "Used her name."},
        "accuracy": {"score": 4, "note": "Correct, a little vague."},
    },
    "summary": "Good call.",
}


@pytest.fixture
def clinic(bot_dir: Callable[..., Path], scripted_registry: Registry) -> Callable[..., CompiledBot]:
    def load(toml: str = CLINIC, analysis_timeout: str = "60s") -> CompiledBot:
        source = toml.replace("{analysis_timeout}", analysis_timeout)
        snapshot = load_catalog(bot_dir("clinic", source), scripted_registry)
        assert not snapshot.problems, [str(p) for p in snapshot.problems]
        return snapshot.get("clinic")

    return load


def ended_call(bot: CompiledBot, **fields: Any) -> CallRecord:
    values: dict[str, Any] = {
        "session_id": "call-7",
        "bot_id": bot.id,
        "bot_version": bot.version,
        "transport": "twilio",
        "variables": {"customer_name": "Ann"},
        "started_at": dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc),
        "duration": 42.0,
        "disconnected_by": DisconnectedBy.CUSTOMER,
        "transcript": [
            TranscriptEntry(role="bot", text="Hi Ann, Test Clinic.", at=0.2),
            TranscriptEntry(role="customer", text="Can I book a cleaning?", at=3.0),
            TranscriptEntry(role="bot", text="Tuesday at ten is free.", at=5.0),
        ],
    }
    return CallRecord(**{**values, **fields})


def reply(data: dict[str, Any]) -> str:
    return json.dumps(data)


# -- analysis and QC ---------------------------------------------------------------------


async def test_analysis_and_qc_are_validated_and_recorded(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic()
    analysis = scripted.script("analysis", reply(ANALYSIS))
    qc = scripted.script("qc", reply(QC))

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.post_call_analysis == {**ANALYSIS, "wait_minutes": 5.0}
    assert record.qc == {**QC, "overall": 4.5}
    assert (record.analysis_error, record.qc_error) == (None, None)
    assert (record.disposition, record.dispositions, record.analysis_skipped) == (None, [], None)
    assert [(u.provider, u.model, u.prompt_tokens, u.cached_tokens) for u in record.usage] == [
        ("test", "scripted-1", 500, 400),
        ("test", "scripted-1", 500, 400),
    ]
    [request] = analysis.requests
    assert [role for role, _ in request] == ["system", "user"]
    system, user = request[0][1], request[1][1]
    assert "'clinic' (Test Clinic front desk)" in system
    assert '"sentiment": {"enum": ["positive", "neutral", "negative"], "type": "string"}' in system
    assert user == (
        "Did Ann book? It took 42.0 s; "
        "fields: booked, sentiment, topics, wait_minutes, summary.\n\n"
        "Transcript:\n"
        "bot: Hi Ann, Test Clinic.\n"
        "customer: Can I book a cleaning?\n"
        "bot: Tuesday at ten is free."
    )
    [qc_request] = qc.requests
    assert "- greeting: greets the caller by name" in qc_request[0][1]
    assert qc_request[1][1].startswith("Review the call for Ann against: greeting, accuracy.")


async def test_a_flow_calls_steps_and_captured_values_reach_the_analysis(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic(
        CLINIC.replace(
            'prompt = "Did {{ customer_name }} book?',
            'prompt = "Did {{ captured.patient }} book in {{ step }}?',
        )
    )
    analysis = scripted.script("analysis", reply(ANALYSIS))
    scripted.script("qc", reply(QC))
    record = ended_call(
        bot,
        steps=["triage", "booking"],
        step="booking",
        captured={"patient": "Ann", "service": "cleaning"},
    )
    await run_post_call(record, bot, scripted_registry)
    user = analysis.requests[0][1][1]
    assert user.startswith("Did Ann book in booking? It took 42.0 s;")
    assert (
        "\n\nSteps taken: triage -> booking\n"
        'Values captured: {"patient": "Ann", "service": "cleaning"}\n\nTranscript:\n'
    ) in user


async def test_the_system_prompt_is_static_and_given_to_the_factory(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    """Identical bytes for every call of a bot version, handed to the provider as the call's
    static prompt, under a version of its own, so caching providers keep it apart."""
    bot = clinic()
    analysis = scripted.script("analysis", reply(ANALYSIS), reply(ANALYSIS))
    scripted.script("qc", reply(QC), reply(QC))
    other_call = ended_call(
        bot,
        session_id="call-8",
        variables={"customer_name": "Bob"},
        transcript=[TranscriptEntry(role="customer", text="Hello?", at=1.0)],
    )

    await run_post_call(ended_call(bot), bot, scripted_registry)
    await run_post_call(other_call, bot, scripted_registry)

    first, second = analysis.requests
    assert first[0] == second[0]  # the system message
    assert first[1] != second[1]  # the per-call part
    context = analysis.contexts[0]
    assert context.prompt.static == first[0][1]
    assert (context.bot_id, context.bot_version) == ("clinic", f"{bot.version}:analysis")
    assert scripted.scripts["qc"].contexts[0].bot_version == f"{bot.version}:qc"
    assert context.variables == {"customer_name": "Ann"}
    assert context.session_id == "call-7"
    assert analysis.contexts[1].variables == {"customer_name": "Bob"}


async def test_a_fenced_json_reply_is_accepted(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic()
    scripted.script("analysis", f"```json\n{json.dumps(ANALYSIS, indent=2)}\n```\n")
    scripted.script("qc", f"```\n{reply(QC)}\n```")

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.post_call_analysis is not None and record.qc is not None
    assert record.post_call_analysis["summary"] == "Ann booked a cleaning."


async def test_an_invalid_reply_is_retried_once_with_the_problem(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic()
    wrong = {**ANALYSIS, "sentiment": "happy"}
    analysis = scripted.script("analysis", reply(wrong), reply(ANALYSIS))
    qc = scripted.script(
        "qc",
        reply({**QC, "scores": {**QC["scores"], "greeting": {"score": 9, "note": "!"}}}),
        reply(QC),
    )

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.post_call_analysis == {**ANALYSIS, "wait_minutes": 5.0}
    assert record.qc is not None and record.qc["overall"] == 4.5
    first, retry = analysis.requests
    assert retry[:2] == first
    assert retry[2] == ("assistant", reply(wrong))
    role, text = retry[3]
    assert role == "user"
    assert text == RETRY_REQUEST.format(
        problem="`sentiment`: Input should be 'positive', 'neutral' or 'negative' (got \"happy\")"
    )
    assert (
        "`scores.greeting.score`: Input should be less than or equal to 5" in qc.requests[1][3][1]
    )
    assert record.usage[0].prompt_tokens == 1000  # both requests count


async def test_invalid_twice_is_an_analysis_error(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic()
    scripted.script("analysis", "Sure! The caller booked.", reply({"booked": "yes"}))
    scripted.script("qc", reply(QC))

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.post_call_analysis is None
    assert record.analysis_error is not None
    assert record.analysis_error.startswith("invalid reply twice, the last: `booked`: ")
    assert "`sentiment` is missing" in record.analysis_error
    assert record.analysis_error.endswith('(reply: "{\\"booked\\": \\"yes\\"}")')
    assert record.qc is not None  # QC does not depend on the analysis
    assert record.transcript == ended_call(bot).transcript  # the rest of the record is kept


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (
            APIStatusError("quota exceeded", status_code=400, retryable=False),
            "APIStatusError: quota exceeded",
        ),
        (RuntimeError("provider bug"), "RuntimeError: provider bug"),
    ],
)
async def test_provider_errors_become_analysis_errors(
    clinic: Callable[..., CompiledBot],
    scripted: ScriptedLLMPlugin,
    scripted_registry: Registry,
    failure: Exception,
    error: str,
) -> None:
    bot = clinic()
    scripted.script("analysis", failure)
    scripted.script("qc", failure)

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.post_call_analysis is None and record.qc is None
    assert record.analysis_error is not None and record.analysis_error.startswith(error)
    assert record.qc_error is not None and record.qc_error.startswith(error)
    assert record.usage == []


async def test_a_hanging_provider_times_out(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic(analysis_timeout="50ms")
    scripted.script("analysis", HANG)
    scripted.script("qc", reply(QC))

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.analysis_error == "no answer within 0.05 s"
    assert record.qc is not None


async def test_a_skipping_disposition_means_no_llm_call(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic()
    analysis = scripted.script("analysis")
    qc = scripted.script("qc")

    record = await run_post_call(
        ended_call(bot, disconnected_by=DisconnectedBy.VOICEMAIL, transcript=[]),
        bot,
        scripted_registry,
    )

    assert record.dispositions == ["voicemail", "no_customer_message"]
    assert record.analysis_skipped == "voicemail"
    assert (record.post_call_analysis, record.qc) == (None, None)
    assert (record.analysis_error, record.qc_error) == (None, None)
    assert analysis.requests == qc.requests == []


async def test_the_bots_llm_analyses_when_there_is_no_analysis_llm(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    toml = CLINIC.split("[analysis.llm]")[0]  # no [analysis.llm], no [qc]
    bot = clinic(toml)
    conversation = scripted.script("conversation", reply(ANALYSIS))

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.post_call_analysis is not None
    assert len(conversation.requests) == 1
    assert conversation.contexts[0].bot_version == f"{bot.version}:analysis"
    assert record.qc is None and record.qc_error is None


async def test_a_template_failing_on_this_call_is_an_analysis_error(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    toml = CLINIC.replace(
        "Did {{ customer_name }} book?", "Did {{ record.transcript[9].text }} book?"
    )
    bot = clinic(toml)
    analysis = scripted.script("analysis", reply(ANALYSIS))
    scripted.script("qc", reply(QC))

    record = await run_post_call(ended_call(bot), bot, scripted_registry)

    assert record.analysis_error is not None
    assert record.analysis_error.startswith("cannot render analysis.prompt: ")
    assert analysis.requests == []
    assert record.qc is not None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the reply was empty"),
        ("The caller booked.", "the reply is not one JSON object (Expecting value"),
        ("[1, 2]", "the reply is JSON but not an object (list)"),
        ('Here it is: {"booked": true}', "the reply is not one JSON object"),
        (
            reply({**ANALYSIS, "mood": "calm"}),
            "`mood` is not one of the keys asked for",
        ),
        (
            reply({**ANALYSIS, "wait_minutes": "5"}),
            "`wait_minutes`: Input should be a valid number",
        ),
        (reply({**ANALYSIS, "topics": "cleaning"}), "`topics`: Input should be a valid list"),
        (reply({**ANALYSIS, "booked": 1}), "`booked`: Input should be a valid boolean"),
    ],
)
def test_what_an_invalid_reply_is_told(
    clinic: Callable[..., CompiledBot], text: str, problem: str
) -> None:
    task = analysis_task(clinic())
    assert task is not None

    with pytest.raises(InvalidReply) as raised:
        task.parse(text)

    assert problem in str(raised.value)


def test_field_names_may_shadow_model_attributes(
    clinic: Callable[..., CompiledBot],
) -> None:
    toml = CLINIC.replace('booked = "bool"', 'json = "bool"\nmodel_config = "string"')
    task = analysis_task(clinic(toml))
    assert task is not None

    wanted = {key: value for key, value in ANALYSIS.items() if key != "booked"}
    answer = task.parse(reply({**wanted, "json": True, "model_config": "x"}))

    assert (answer["json"], answer["model_config"]) == (True, "x")


def test_qc_asks_for_every_criterion(clinic: Callable[..., CompiledBot]) -> None:
    task = qc_task(clinic())
    assert task is not None
    scores = dict(QC["scores"])
    scores.pop("accuracy")

    with pytest.raises(InvalidReply, match=r"`scores\.accuracy` is missing"):
        task.parse(reply({**QC, "scores": scores}))


# -- validation of the post-call tables --------------------------------------------------


def test_post_call_llm_tables_are_validated(
    bot_dir: Callable[..., Path], scripted_registry: Registry
) -> None:
    toml = (
        CLINIC.replace("{analysis_timeout}", "1m")
        .replace('script = "analysis"', 'script = "analysis"\nscirpt_name = "x"')
        .replace('provider = "scripted"\nscript = "qc"', 'provider = "scripted-llm"')
        .replace('accuracy = "gives', '"not a name" = "gives')
    )

    snapshot = load_catalog(bot_dir("clinic", toml), scripted_registry)

    problems = [f"{p.key}: {p.message}" for p in snapshot.problems]
    assert problems == [
        "qc.rubric: 'not a name' is not a valid criterion name (letters, digits, _)"
    ]
    snapshot = load_catalog(
        bot_dir("clinic", toml.replace('"not a name"', "accuracy")), scripted_registry
    )
    problems = [f"{p.key}: {p.message}" for p in snapshot.problems]
    assert problems == [
        "analysis.llm.scirpt_name: unknown key",
        "qc.llm.provider: unknown LLM provider 'scripted-llm'",
    ]


async def test_variables_of_any_toml_type_reach_the_provider(
    clinic: Callable[..., CompiledBot], scripted: ScriptedLLMPlugin, scripted_registry: Registry
) -> None:
    bot = clinic(
        CLINIC.replace('customer_name = "Ann"', 'customer_name = "Ann"\nvisit = 2026-03-02')
    )
    analysis = scripted.script("analysis", reply(ANALYSIS))
    scripted.script("qc", reply(QC))

    record = await run_post_call(
        ended_call(bot, variables={"customer_name": "Ann", "visit": dt.date(2026, 3, 2)}),
        bot,
        scripted_registry,
    )

    assert record.analysis_error is None
    assert analysis.contexts[0].variables["visit"] == dt.date(2026, 3, 2)
