"""The litellm provider against a local OpenAI-compatible server: real litellm, real
livekit streams and sessions, real SSE over HTTP on 127.0.0.1. No cloud endpoint is ever
called."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit.agents import Agent, AgentSession, APIConnectOptions, APIStatusError, llm
from livekit.agents import function_tool as livekit_function_tool
from pydantic import ValidationError

import runtime
from plugins.llm.litellm import LiteLLMOptions, create_llm
from plugins.llm.litellm_llm import LiteLLM, LiteLLMFallbackAdapter, build_completion_kwargs
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call

pytestmark = pytest.mark.filterwarnings(
    # litellm's own response types (ChatCompletionReasoningItem) use typing.ReadOnly, which
    # pydantic warns about while building their schema on the first streamed chunk
    "ignore:Item '.*' on TypedDict class '.*' is using the `ReadOnly` qualifier:UserWarning",
)

KEY_ENV = "DIALPLAN_TEST_LITELLM_KEY"
FAKE_KEY = "sk-test-not-a-real-key"
STATIC_PROMPT = "You are the front desk of the Test Clinic. Be brief."


# -- a fake OpenAI-compatible server -----------------------------------------------------


@dataclass
class Reply:
    """What the server answers for one model: SSE deltas, or an HTTP error status."""

    deltas: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    usage: dict[str, Any] = field(
        default_factory=lambda: {
            "prompt_tokens": 1200,
            "completion_tokens": 40,
            "total_tokens": 1240,
            "prompt_tokens_details": {"cached_tokens": 1024},
        }
    )


def text_reply(*pieces: str) -> Reply:
    return Reply(deltas=[{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces])


@dataclass
class FakeOpenAI:
    """POST /v1/chat/completions, streamed the way OpenAI streams; replies by model."""

    base_url: str = ""
    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def bodies_for(self, model: str) -> list[dict[str, Any]]:
        return [body for body in self.requests if body["model"] == model]

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        reply = self.replies.get(body["model"]) or text_reply("Hello", " from", " the fake.")
        if reply.status != 200:
            error = {"message": "the fake is down", "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=reply.status)
        return await _stream(request, body, reply)


async def _stream(request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1}
    base["model"] = body["model"]

    async def send(payload: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps({**base, **payload})}\n\n".encode())

    for delta in reply.deltas:
        await send({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    finish = "tool_calls" if any("tool_calls" in delta for delta in reply.deltas) else "stop"
    await send({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if body.get("stream_options", {}).get("include_usage"):
        await send({"choices": [], "usage": reply.usage})
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@pytest.fixture
async def fake_openai(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    server = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat_completions)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        server.base_url = f"http://{host}:{port}/v1"
        yield server
    finally:
        await runner.cleanup()


# -- building the LLM the way a call does ------------------------------------------------


@dataclass
class BuiltCall:
    call: runtime.CallContext
    model: llm.LLM


@pytest.fixture
def build_call(
    registry: Registry, bot_dir: Callable[..., Path], fake_openai: FakeOpenAI
) -> Callable[..., BuiltCall]:
    """Load a bot through the real registry (entry points), catalog and call planner, then
    call the registered factory with the planned options, as a call does."""

    def build(**llm_table: Any) -> BuiltCall:
        table = {
            "provider": "litellm",
            "model": "openai/gpt-4o-mini",
            "api_key": f"${{env:{KEY_ENV}}}",
            "api_base": fake_openai.base_url,
            **llm_table,
        }
        toml = [
            "[prompt]",
            f"system = {json.dumps(STATIC_PROMPT)}",
            'context = "The caller is {{ name }}."',
            "[variables]",
            'name = "Ann"',
            "[llm]",
            *(f"{key} = {json.dumps(value)}" for key, value in table.items()),
        ]
        snapshot = load_catalog(bot_dir("clinic", "\n".join(toml)), registry)
        assert not snapshot.problems, snapshot.problems
        plan = plan_call(snapshot, runtime.CallRequest(bot="clinic"), registry)
        provider = plan.providers["llm"]
        assert provider.entry.factory is create_llm  # found through the entry point
        call = plan.new_context()
        return BuiltCall(call, provider.entry.factory(provider.options, call))

    return build


def chat_context(call: runtime.CallContext, user_text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content=call.prompt.instructions)
    ctx.add_message(role="user", content=user_text)
    return ctx


async def run_session(model: llm.LLM, call: runtime.CallContext, user_text: str) -> Any:
    async with AgentSession(llm=model, vad=None) as session:
        await session.start(Agent(instructions=call.prompt.instructions))
        return await session.run(user_input=user_text)


# -- streaming ---------------------------------------------------------------------------


async def test_text_streams_through_chat(
    build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies["gpt-4o-mini"] = text_reply("Good", " morning", ", Ann.")
    built = build_call()
    assert isinstance(built.model, LiteLLM)

    pieces: list[str] = []
    async with built.model.chat(chat_ctx=chat_context(built.call, "hi")) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                pieces.append(chunk.delta.content)

    assert pieces == ["Good", " morning", ", Ann."]  # forwarded as they arrive
    assert (built.model.model, built.model.provider) == ("openai/gpt-4o-mini", "openai")


async def test_text_reply_in_an_agent_session(
    build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies["gpt-4o-mini"] = text_reply("We open", " at nine.")
    built = build_call()

    result = await run_session(built.model, built.call, "When do you open?")

    result.expect.next_event().is_message(role="assistant")
    body = fake_openai.requests[-1]
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"] == f"{STATIC_PROMPT}\n\nThe caller is Ann."
    assert body["messages"][-1] == {"role": "user", "content": "When do you open?"}


async def test_tool_call_split_across_deltas(
    build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI
) -> None:
    first = {"index": 0, "id": "call_42", "type": "function", "function": {"name": "book"}}
    fake_openai.replies["gpt-4o-mini"] = Reply(
        deltas=[
            {"role": "assistant", "tool_calls": [{**first, "function": {"name": "book"}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"day": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"monday", '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"time": "09:00"}'}}]},
        ]
    )
    built = build_call()

    response = await built.model.chat(chat_ctx=chat_context(built.call, "book me")).collect()

    assert response.text == ""
    assert len(response.tool_calls) == 1
    tool_call = response.tool_calls[0]
    assert isinstance(tool_call, llm.FunctionToolCall)
    assert (tool_call.name, tool_call.call_id) == ("book", "call_42")
    assert json.loads(tool_call.arguments) == {"day": "monday", "time": "09:00"}


# -- what the server receives ------------------------------------------------------------


@livekit_function_tool
async def book(day: str, time: str) -> str:
    """Book an appointment.

    Args:
        day: weekday of the appointment
        time: time of day, HH:MM
    """
    return f"booked {day} {time}"


async def test_request_body(build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI) -> None:
    built = build_call(temperature=0.3)

    await built.model.chat(chat_ctx=chat_context(built.call, "hi"), tools=[book]).collect()

    body = fake_openai.requests[-1]
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert built.call.bot_version  # the compiled bot's content hash
    assert body["prompt_cache_key"] == f"clinic:{built.call.bot_version}"
    assert body["temperature"] == 0.3
    assert not [key for key in body if key.startswith("_")]  # litellm-internal flags stay home
    [tool] = body["tools"]  # OpenAI chat-completions format
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "book"
    assert tool["function"]["description"].strip() == "Book an appointment."
    parameters = tool["function"]["parameters"]
    assert parameters["type"] == "object"
    assert parameters["required"] == ["day", "time"]
    assert parameters["properties"]["day"]["type"] == "string"
    assert parameters["properties"]["day"]["description"] == "weekday of the appointment"
    assert fake_openai.headers[-1]["Authorization"] == f"Bearer {FAKE_KEY}"


# -- usage and cost ----------------------------------------------------------------------


async def test_usage_and_cost_accumulate(build_call: Callable[..., BuiltCall]) -> None:
    built = build_call()
    assert isinstance(built.model, LiteLLM)

    first = await built.model.chat(chat_ctx=chat_context(built.call, "one")).collect()
    await built.model.chat(chat_ctx=chat_context(built.call, "two")).collect()

    assert first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (1200, 40)
    assert first.usage.prompt_cached_tokens == 1024
    usage = built.model.usage
    assert (usage.model, usage.provider, usage.requests) == ("openai/gpt-4o-mini", "openai", 2)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (2400, 80, 2048)
    assert usage.cost_usd is not None
    assert 0 < usage.cost_usd < 0.01  # gpt-4o-mini: cents per million tokens
    assert built.model.usages == [usage]


async def test_an_unpriced_model_has_no_cost(
    build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies["house-model-7b"] = text_reply("hi")
    built = build_call(model="openai/house-model-7b")
    assert isinstance(built.model, LiteLLM)

    response = await built.model.chat(chat_ctx=chat_context(built.call, "hi")).collect()

    assert response.text == "hi"
    assert built.model.usage.prompt_tokens == 1200
    assert built.model.usage.cost_usd is None


# -- failures ----------------------------------------------------------------------------


async def test_fallback_answers_when_the_primary_fails(
    build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI
) -> None:
    fake_openai.replies["gpt-4o-mini"] = Reply(status=500)
    fake_openai.replies["gpt-4o"] = text_reply("The fallback", " answered.")
    built = build_call(fallback=["openai/gpt-4o"])
    assert isinstance(built.model, LiteLLMFallbackAdapter)

    result = await run_session(built.model, built.call, "anyone there?")

    result.expect.next_event().is_message(role="assistant")
    assert fake_openai.requests[0]["model"] == "gpt-4o-mini"  # the primary was tried first
    assert fake_openai.bodies_for("gpt-4o")[0]["prompt_cache_key"].startswith("clinic:")
    assert [usage.model for usage in built.model.usages] == ["openai/gpt-4o"]
    assert built.model.usage.cost_usd is not None and built.model.usage.cost_usd > 0


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (400, False)])
async def test_http_errors_become_livekit_errors(
    build_call: Callable[..., BuiltCall], fake_openai: FakeOpenAI, status: int, retryable: bool
) -> None:
    fake_openai.replies["gpt-4o-mini"] = Reply(status=status)
    built = build_call()

    stream = built.model.chat(
        chat_ctx=chat_context(built.call, "hi"), conn_options=APIConnectOptions(max_retry=0)
    )
    with pytest.raises(APIStatusError) as raised:
        await stream.collect()

    assert raised.value.status_code == status
    assert raised.value.retryable is retryable
    assert len(fake_openai.requests) == 1  # livekit decides about retries, not the OpenAI SDK
    assert FAKE_KEY not in str(raised.value)


# -- request building (pure) -------------------------------------------------------------


def test_anthropic_static_prompt_is_marked_cacheable() -> None:
    options = LiteLLMOptions(model="anthropic/claude-haiku-4-5")
    messages = [
        {"role": "system", "content": f"{STATIC_PROMPT}\n\nThe caller is Ann."},
        {"role": "user", "content": "hi"},
    ]

    kwargs = build_completion_kwargs(
        options, messages=messages, static_prompt=STATIC_PROMPT, cache_key="clinic:abc"
    )

    assert kwargs["messages"][0]["content"] == [
        {"type": "text", "text": STATIC_PROMPT, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "\n\nThe caller is Ann."},
    ]
    assert kwargs["messages"][1] == messages[1]
    assert "prompt_cache_key" not in kwargs  # that hint is OpenAI's
    assert messages[0]["content"] == f"{STATIC_PROMPT}\n\nThe caller is Ann."  # input untouched


def test_litellm_keeps_the_cache_marker_in_the_anthropic_request() -> None:
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    messages = [
        {"role": "system", "content": f"{STATIC_PROMPT}\n\nThe caller is Ann."},
        {"role": "user", "content": "hi"},
    ]
    kwargs = build_completion_kwargs(
        LiteLLMOptions(model="anthropic/claude-haiku-4-5"),
        messages=messages,
        static_prompt=STATIC_PROMPT,
    )

    request = AnthropicConfig().transform_request(
        model="claude-haiku-4-5",
        messages=kwargs["messages"],
        optional_params={"max_tokens": 64},
        litellm_params={},
        headers={},
    )

    assert request["system"][0] == {
        "type": "text",
        "text": STATIC_PROMPT,
        "cache_control": {"type": "ephemeral"},
    }


def test_anthropic_prompt_without_a_per_call_part_is_one_block() -> None:
    options = LiteLLMOptions(model="claude-haiku-4-5")
    messages = [{"role": "system", "content": STATIC_PROMPT}]

    kwargs = build_completion_kwargs(options, messages=messages, static_prompt=STATIC_PROMPT)

    assert kwargs["messages"][0]["content"] == [
        {"type": "text", "text": STATIC_PROMPT, "cache_control": {"type": "ephemeral"}}
    ]


def test_a_prompt_not_starting_with_the_static_part_is_left_alone() -> None:
    options = LiteLLMOptions(model="anthropic/claude-haiku-4-5")
    messages = [{"role": "system", "content": "Something else entirely."}]

    kwargs = build_completion_kwargs(options, messages=messages, static_prompt=STATIC_PROMPT)

    assert kwargs["messages"] == messages


def test_openai_gets_a_cache_key_and_plain_messages() -> None:
    options = LiteLLMOptions(model="gpt-4o-mini", max_tokens=200, extra={"seed": 7})
    messages = [{"role": "system", "content": STATIC_PROMPT}]

    kwargs = build_completion_kwargs(
        options,
        messages=messages,
        static_prompt=STATIC_PROMPT,
        cache_key="clinic:abc",
        api_key="k",
    )

    assert kwargs["prompt_cache_key"] == "clinic:abc"
    assert kwargs["messages"] == messages
    assert (kwargs["max_tokens"], kwargs["seed"], kwargs["api_key"]) == (200, 7, "k")
    assert "temperature" not in kwargs and "tools" not in kwargs


def test_other_providers_get_no_cache_hints() -> None:
    options = LiteLLMOptions(model="gemini/gemini-2.0-flash")
    messages = [{"role": "system", "content": STATIC_PROMPT}]

    kwargs = build_completion_kwargs(
        options, messages=messages, static_prompt=STATIC_PROMPT, cache_key="clinic:abc"
    )

    assert "prompt_cache_key" not in kwargs
    assert kwargs["messages"] == messages


# -- options and the factory -------------------------------------------------------------


def test_options_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="temprature"):
        LiteLLMOptions.model_validate({"model": "openai/gpt-4o-mini", "temprature": 0.2})


def test_options_reject_a_plain_text_api_key() -> None:
    with pytest.raises(ValidationError, match=r"\$\{env:NAME\}"):
        LiteLLMOptions.model_validate({"model": "openai/gpt-4o-mini", "api_key": "sk-123"})
    with pytest.raises(ValidationError, match="api_key"):
        LiteLLMOptions.model_validate(
            {"model": "openai/gpt-4o-mini", "extra": {"api_key": "sk-123"}}
        )


def test_options_parse_durations_and_secrets() -> None:
    options = LiteLLMOptions.model_validate(
        {"model": "openai/gpt-4o-mini", "timeout": "1m", "api_key": "${env:OPENAI_API_KEY}"}
    )
    assert options.timeout == 60.0
    assert options.api_key == runtime.SecretRef("OPENAI_API_KEY")
    assert options.model_dump(mode="json")["api_key"] == "${env:OPENAI_API_KEY}"


def test_validating_options_imports_neither_litellm_nor_livekit() -> None:
    code = (
        "import sys\n"
        "from plugins.llm.litellm import LiteLLMOptions\n"
        "LiteLLMOptions(model='openai/gpt-4o-mini')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'livekit'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@dataclass
class _CallStandIn:
    """Only what `create_llm` reads from a CallContext."""

    bot_id: str = "clinic"
    bot_version: str = "v1"
    prompt: runtime.RenderedPrompt = field(
        default_factory=lambda: runtime.RenderedPrompt(STATIC_PROMPT, "", "")
    )


def test_a_fallback_of_another_provider_does_not_get_the_primary_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    options = LiteLLMOptions.model_validate(
        {
            "model": "openai/gpt-4o-mini",
            "api_key": f"${{env:{KEY_ENV}}}",
            "api_base": "http://127.0.0.1:9/v1",
            "fallback": ["openai/gpt-4o", "anthropic/claude-haiku-4-5"],
        }
    )

    adapter = create_llm(options, _CallStandIn())  # type: ignore[arg-type]

    assert isinstance(adapter, LiteLLMFallbackAdapter)
    assert [model.provider for model in adapter.models] == ["openai", "openai", "anthropic"]
    same, other = adapter.models[1].options, adapter.models[2].options
    assert (same.api_key, same.api_base) == (options.api_key, options.api_base)
    assert (other.api_key, other.api_base) == (None, None)
    assert {model.cache_key for model in adapter.models} == {"clinic:v1"}


def test_a_missing_key_fails_when_the_call_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    options = LiteLLMOptions.model_validate(
        {"model": "openai/gpt-4o-mini", "api_key": f"${{env:{KEY_ENV}}}"}
    )

    with pytest.raises(runtime.CallSetupError, match=KEY_ENV):
        create_llm(options, _CallStandIn())  # type: ignore[arg-type]


# -- the call record ---------------------------------------------------------------------


async def test_call_record_carries_usage_and_cost(
    registry: Registry, bot_dir: Callable[..., Path], fake_openai: FakeOpenAI
) -> None:
    from runtime.session import build_call_session

    fake_openai.replies["gpt-4o-mini"] = text_reply("We open at nine.")
    toml = f"""
[prompt]
system = "static"
[llm]
provider = "litellm"
model = "openai/gpt-4o-mini"
api_key = "${{env:{KEY_ENV}}}"
api_base = "{fake_openai.base_url}"
"""
    snapshot = load_catalog(bot_dir("clinic", toml), registry)
    plan = plan_call(snapshot, runtime.CallRequest(bot="clinic"), registry)
    call_session = build_call_session(plan)
    await call_session.start()
    await call_session.say_text("when do you open?")
    record = await call_session.close()
    assert record.transcript[-1].text == "We open at nine."
    (usage,) = record.usage
    assert (usage.model, usage.prompt_tokens, usage.completion_tokens) == (
        "openai/gpt-4o-mini",
        1200,
        40,
    )
    assert usage.cost_usd is not None and usage.cost_usd > 0
    assert FAKE_KEY not in record.model_dump_json()
