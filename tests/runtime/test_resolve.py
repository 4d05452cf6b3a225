from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from runtime.call import CallOverrides, CallRequest
from runtime.catalog import CatalogSnapshot, load_catalog
from runtime.errors import CallSetupError
from runtime.registry import Registry
from runtime.resolve import plan_call

from ..conftest import REPO

BOT = """
[prompt]
system = "You are {{ bot.id }}, static."
context = "Customer: {{ name }}. Plan: {{ plan }}."
greeting = "Hi {{ name }}!"
[variables]
name = { required = true }
plan = "basic"
[llm]
provider = "rules"
default = "default reply"
"""


@pytest.fixture
def snapshot(bot_dir: Callable[..., Path], registry: Registry) -> CatalogSnapshot:
    return load_catalog(bot_dir("a", BOT), registry)


def test_variables_merge_defaults_and_call_values(
    snapshot: CatalogSnapshot, registry: Registry
) -> None:
    plan = plan_call(snapshot, CallRequest(bot="a", variables={"name": "Ann"}), registry)
    assert plan.variables == {"plan": "basic", "name": "Ann"}
    assert plan.prompt.static == "You are a, static."
    assert plan.prompt.per_call == "Customer: Ann. Plan: basic."
    assert plan.prompt.greeting == "Hi Ann!"
    assert plan.prompt.instructions.startswith(plan.prompt.static)


def test_static_prompt_is_identical_bytes_for_every_call(
    snapshot: CatalogSnapshot, registry: Registry
) -> None:
    one = plan_call(snapshot, CallRequest(bot="a", variables={"name": "Ann"}), registry)
    two = plan_call(snapshot, CallRequest(bot="a", variables={"name": "Bob"}), registry)
    assert one.prompt.static is two.prompt.static
    assert one.prompt.per_call != two.prompt.per_call


def test_missing_required_variable_fails_setup(
    snapshot: CatalogSnapshot, registry: Registry
) -> None:
    with pytest.raises(CallSetupError, match=r"needs the variable\(s\) name .*--var name="):
        plan_call(snapshot, CallRequest(bot="a"), registry)


def test_variables_are_data(snapshot: CatalogSnapshot, registry: Registry) -> None:
    request = CallRequest(bot="a", variables={"name": "{{ 7*7 }}", "plan": "{{ ''.__class__ }}"})
    plan = plan_call(snapshot, request, registry)
    assert plan.prompt.per_call == "Customer: {{ 7*7 }}. Plan: {{ ''.__class__ }}."


def test_variables_must_be_json_values() -> None:
    with pytest.raises(ValidationError, match=r"variables\.name\n.*not a valid JSON value"):
        CallRequest(bot="a", variables={"name": object()})
    with pytest.raises(ValidationError, match="not a valid JSON value"):
        CallRequest(bot="a", variables={"nested": {"deep": [object()]}})
    assert CallRequest(bot="a", variables={"v": [1, {"k": None}]}).variables == {
        "v": [1, {"k": None}]
    }


def test_overrides_merge_options_for_the_same_provider(
    snapshot: CatalogSnapshot, registry: Registry
) -> None:
    request = CallRequest(
        bot="a",
        variables={"name": "Ann"},
        overrides=CallOverrides(llm={"default": "overridden"}),
    )
    plan = plan_call(snapshot, request, registry)
    assert plan.providers["llm"].options.default == "overridden"  # type: ignore[attr-defined]
    untouched = plan_call(snapshot, CallRequest(bot="a", variables={"name": "Ann"}), registry)
    assert untouched.providers["llm"].options.default == "default reply"  # type: ignore[attr-defined]


def test_overrides_replace_prompt_and_greeting(
    snapshot: CatalogSnapshot, registry: Registry
) -> None:
    overrides = CallOverrides.model_validate(
        {"prompt": {"greeting": "Yo {{ name }}", "context": "ctx", "greeting_mode": "wait"}}
    )
    plan = plan_call(
        snapshot, CallRequest(bot="a", variables={"name": "Ann"}, overrides=overrides), registry
    )
    assert plan.prompt.greeting == "Yo Ann"
    assert plan.prompt.per_call == "ctx"
    assert plan.greeting_mode == "wait"


def test_bad_overrides_are_clear(snapshot: CatalogSnapshot, registry: Registry) -> None:
    request = CallRequest(
        bot="a", variables={"name": "Ann"}, overrides=CallOverrides(llm={"defualt": "x"})
    )
    with pytest.raises(CallSetupError, match=r"overrides.llm.defualt: unknown key.*`default`"):
        plan_call(snapshot, request, registry)
    request = CallRequest(
        bot="a", variables={"name": "Ann"}, overrides=CallOverrides(llm={"provider": "gpt"})
    )
    with pytest.raises(CallSetupError, match="unknown LLM provider 'gpt'"):
        plan_call(snapshot, request, registry)


def test_undefined_variable_in_override_template(
    snapshot: CatalogSnapshot, registry: Registry
) -> None:
    overrides = CallOverrides.model_validate({"prompt": {"greeting": "Hi {{ nobody }}"}})
    with pytest.raises(CallSetupError, match=r"prompt.greeting: 'nobody' is undefined"):
        plan_call(
            snapshot, CallRequest(bot="a", variables={"name": "A"}, overrides=overrides), registry
        )


def test_shipped_reminder_needs_campaign_variables(registry: Registry) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    with pytest.raises(CallSetupError, match="customer_name, appointment_time"):
        plan_call(snapshot, CallRequest(bot="reminder"), registry)
    plan = plan_call(
        snapshot,
        CallRequest(
            bot="reminder",
            variables={"customer_name": "Ann", "appointment_time": "Tuesday at 3 pm"},
        ),
        registry,
    )
    assert "Ann" in plan.prompt.greeting and "Tuesday at 3 pm" in plan.prompt.per_call


def test_a_bot_without_voice_tables_is_heard_and_speaks_offline(registry, bot_dir) -> None:
    from runtime.call import CallRequest
    from runtime.catalog import load_catalog
    from runtime.resolve import plan_call

    toml = '[prompt]\nsystem = "x"\n[llm]\nprovider = "rules"\n[tts]\nprovider = "espeak"\n'
    snapshot = load_catalog(bot_dir("quiet", toml), registry)
    plan = plan_call(snapshot, CallRequest(bot="quiet"), registry)
    chosen = {kind: p.entry.name for kind, p in plan.providers.items()}
    assert chosen == {"stt": "faster_whisper", "llm": "rules", "tts": "espeak", "vad": "silero"}
