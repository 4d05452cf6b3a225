"""Post-call analysis and QC with real providers: the shipped bots end to end with the
offline `rules` LLM, and the litellm provider's prompt-caching hints against a local fake
OpenAI server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from plugins.llm.litellm_llm import build_completion_kwargs
from runtime.analysis import analysis_task
from runtime.call import CallOverrides, CallRequest
from runtime.catalog import load_catalog
from runtime.compiler import CompiledBot
from runtime.postcall import build_llm, run_post_call
from runtime.record import CallRecord, DisconnectedBy
from runtime.registry import Registry
from runtime.resolve import plan_call
from runtime.session import build_call_session

from ..conftest import REPO
from ..plugins.llm.test_litellm import (  # the local OpenAI-compatible server
    KEY_ENV,
    FakeOpenAI,
    fake_openai,  # noqa: F401
    text_reply,
)
from .test_postcall import ended_call

# -- the shipped bots, offline -----------------------------------------------------------


async def run_text_call(
    registry: Registry, bot_id: str, lines: list[str], **variables: str
) -> tuple[CallRecord, CompiledBot]:
    snapshot = load_catalog(REPO / "bots", registry)
    # the receptionist keeps opening hours; these tests must not depend on the clock
    request = CallRequest(
        bot=bot_id, variables=variables, overrides=CallOverrides(ignore_schedule=True)
    )
    plan = plan_call(snapshot, request, registry)
    call_session = build_call_session(plan)
    await call_session.start()
    for line in lines:
        await call_session.say_text(line)
        if call_session.call.end_request is not None:
            break
    record = await call_session.close(DisconnectedBy.CUSTOMER)
    return record, snapshot.get(bot_id)


async def test_the_receptionist_analyses_and_reviews_its_calls_offline(
    registry: Registry,
) -> None:
    ended, bot = await run_text_call(
        registry, "receptionist", ["I'd like to book a cleaning", "bye"]
    )

    record = await run_post_call(ended, bot, registry)

    assert (record.analysis_error, record.qc_error) == (None, None)
    assert record.post_call_analysis == {
        "appointment_requested": True,
        "sentiment": "positive",
        "summary": "The caller asked for an appointment: I'd like to book a cleaning",
    }
    assert record.qc is not None and set(record.qc["scores"]) == {
        "understood",
        "helpful",
        "courteous",
    }
    assert record.qc["overall"] == pytest.approx(14 / 3, abs=0.01)
    assert record.disposition is None  # a typed call is never "short"


async def test_the_receptionist_notes_a_misunderstanding(registry: Registry) -> None:
    ended, bot = await run_text_call(
        registry, "receptionist", ["blah blah", "what are your hours", "bye"]
    )

    record = await run_post_call(ended, bot, registry)

    assert record.post_call_analysis is not None
    assert record.post_call_analysis["appointment_requested"] is False
    assert record.qc is not None and record.qc["scores"]["understood"]["score"] == 2


@pytest.mark.parametrize(
    ("lines", "outcome"),
    [
        (["Yes, I'll be there"], "confirmed"),
        (["No, I can't make it", "nothing else, bye"], "reschedule"),
        (["Sorry, wrong number", "bye"], "wrong_number"),
        (["Hmm", "bye"], "unclear"),
    ],
)
async def test_the_reminder_classifies_its_calls_offline(
    registry: Registry, lines: list[str], outcome: str
) -> None:
    ended, bot = await run_text_call(
        registry, "reminder", lines, customer_name="Ann", appointment_time="Tuesday at 3 pm"
    )

    record = await run_post_call(ended, bot, registry)

    assert record.analysis_error is None
    assert record.post_call_analysis == {"outcome": outcome}


async def test_a_call_where_nobody_spoke_is_not_analysed(registry: Registry) -> None:
    ended, bot = await run_text_call(registry, "receptionist", [])

    record = await run_post_call(ended, bot, registry)

    assert record.disposition == "no_customer_message"
    assert record.post_call_analysis is None and record.analysis_error is None


# -- prompt caching with the litellm provider --------------------------------------------

LITELLM_BOT = """
[prompt]
system = "You are the front desk."
[llm]
provider = "rules"
[analysis]
prompt = "Did the caller book?"
fields = {{ booked = "bool" }}
[analysis.llm]
provider = "litellm"
model = "{model}"
api_key = "${{env:{key_env}}}"
api_base = "{api_base}"
"""


@pytest.mark.filterwarnings(
    # litellm's response types use typing.ReadOnly, which pydantic warns about
    "ignore:Item '.*' on TypedDict class '.*' is using the `ReadOnly` qualifier:UserWarning",
)
async def test_litellm_gets_the_cache_hints_for_the_static_prompt(
    bot_dir: Callable[..., Path],
    registry: Registry,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    """OpenAI: a `prompt_cache_key` of the bot version and the task, with the instructions
    as the whole system message; Anthropic: the same text marked `cache_control`."""
    toml = LITELLM_BOT.format(
        model="openai/gpt-4o-mini", key_env=KEY_ENV, api_base=fake_openai.base_url
    )
    snapshot = load_catalog(bot_dir("clinic", toml), registry)
    assert not snapshot.problems, [str(p) for p in snapshot.problems]
    bot = snapshot.get("clinic")
    fake_openai.replies["gpt-4o-mini"] = text_reply('{"booked": ', "true}")

    first = await run_post_call(ended_call(bot), bot, registry)
    await run_post_call(ended_call(bot, session_id="call-8"), bot, registry)

    assert first.post_call_analysis == {"booked": True}
    assert first.analysis_error is None
    [usage] = first.usage
    assert (usage.model, usage.prompt_tokens, usage.cached_tokens) == (
        "openai/gpt-4o-mini",
        1200,
        1024,
    )
    assert usage.cost_usd is not None and usage.cost_usd > 0
    task = analysis_task(bot)
    assert task is not None
    for body in fake_openai.requests:
        assert body["prompt_cache_key"] == f"clinic:{bot.version}:analysis"
        assert body["messages"][0] == {"role": "system", "content": task.instructions}
        assert body["messages"][1]["role"] == "user"
        assert "\ncustomer: Can I book a cleaning?\n" in body["messages"][1]["content"]

    anthropic = task.llm_options.model_copy(update={"model": "anthropic/claude-haiku-4-5"})
    model = build_llm(replace(task, llm_options=anthropic), ended_call(bot), bot, registry)
    kwargs = build_completion_kwargs(
        model.options,
        messages=[
            {"role": "system", "content": task.instructions},
            {"role": "user", "content": "Did the caller book?"},
        ],
        static_prompt=model.static_prompt,
        cache_key=model.cache_key,
    )
    assert kwargs["messages"][0]["content"] == [
        {"type": "text", "text": task.instructions, "cache_control": {"type": "ephemeral"}}
    ]
