"""The livekit-agents side of the ``litellm`` provider: an `llm.LLM` that streams
``litellm.acompletion``, with prompt-caching hints, usage and cost totals, and litellm's
errors mapped to livekit's so its retries and `FallbackAdapter` work.

Imported only when a call builds its LLM (see `plugins.llm.litellm`).
"""

from __future__ import annotations

import os

# litellm fetches its model cost map from GitHub at import unless told otherwise; calls
# must never wait on (or fail for) the network just to price tokens.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import importlib.util
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import litellm
import openai
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    llm,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

from plugins.llm.litellm import LiteLLMOptions

# litellm prints provider lists and "give feedback" banners to stdout on errors
litellm.suppress_debug_info = True

CacheStyle = Literal["openai", "anthropic"]

# litellm (1.106 at least) sends every request that has tools through its MCP-gateway
# check, which imports the optional `mcp` package and fails without it. Our tools are plain
# functions, never MCP servers, so skip that check (litellm strips the flag from the request).
_SKIP_MCP: dict[str, Any] = (
    {"_skip_mcp_handler": True} if importlib.util.find_spec("mcp") is None else {}
)


@dataclass
class LiteLLMUsage:
    """Running totals for one model over one call; the fields match the call record's
    `ProviderUsage`. ``cost_usd`` stays None while litellm's cost map does not know the
    model."""

    model: str
    provider: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None

    def add(self, usage: llm.CompletionUsage, cost_usd: float | None) -> None:
        self.requests += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cached_tokens += usage.prompt_cached_tokens
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost_usd

    def merge(self, other: LiteLLMUsage) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd


# -- construction ------------------------------------------------------------------------


def fallback_options(options: LiteLLMOptions) -> list[LiteLLMOptions]:
    """Options for each fallback model. The key and base URL belong to the primary's
    provider: sending an OpenAI key to Anthropic would fail, so a fallback of another
    provider uses litellm's defaults (its provider's usual environment variable)."""
    primary = litellm_provider(options.model)
    derived: list[LiteLLMOptions] = []
    for model in options.fallback:
        update: dict[str, Any] = {"model": model, "fallback": []}
        if litellm_provider(model) != primary:
            update.update(api_key=None, api_base=None)
        derived.append(options.model_copy(update=update))
    return derived


def litellm_provider(model: str) -> str:
    """litellm's provider for a model name ("openai" for "gpt-4o-mini")."""
    try:
        return str(litellm.get_llm_provider(model)[1])
    except Exception:  # litellm raises BadRequestError for names it cannot place
        return model.split("/", 1)[0] if "/" in model else "unknown"


class LiteLLMFallbackAdapter(llm.FallbackAdapter):
    """livekit's FallbackAdapter, plus the usage of the models it wraps."""

    def __init__(self, models: list[LiteLLM], **kwargs: Any) -> None:
        super().__init__(list(models), **kwargs)
        self.models = tuple(models)

    @property
    def usages(self) -> list[LiteLLMUsage]:
        """Usage of every model that served at least one request."""
        return [model.usage for model in self.models if model.usage.requests]

    @property
    def usage(self) -> LiteLLMUsage:
        """All models together, under the primary's name (per model: `usages`)."""
        primary = self.models[0]
        total = LiteLLMUsage(model=primary.model, provider=primary.provider)
        for part in self.usages:
            total.merge(part)
        return total


# -- the LLM -----------------------------------------------------------------------------


class LiteLLM(llm.LLM):
    """One litellm model as a livekit-agents LLM. Usage and cost accumulate in `usage`."""

    def __init__(
        self, options: LiteLLMOptions, *, cache_key: str | None = None, static_prompt: str = ""
    ) -> None:
        super().__init__()
        self.options = options
        self.cache_key = cache_key
        self.static_prompt = static_prompt
        self._provider = litellm_provider(options.model)
        self.usage = LiteLLMUsage(model=options.model, provider=self._provider)
        if options.api_key is not None:
            options.api_key.get()  # fail while the call is built, not on the first turn

    @property
    def model(self) -> str:
        return self.options.model

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def usages(self) -> list[LiteLLMUsage]:
        return [self.usage] if self.usage.requests else []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> LiteLLMStream:
        request: dict[str, Any] = dict(extra_kwargs) if is_given(extra_kwargs) else {}
        if is_given(parallel_tool_calls) and tools:
            request["parallel_tool_calls"] = parallel_tool_calls
        if is_given(tool_choice) and tools:
            request["tool_choice"] = tool_choice
        return LiteLLMStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            request=request,
        )

    def record_usage(self, usage: llm.CompletionUsage, cost_usd: float | None) -> None:
        self.usage.add(usage, cost_usd)


class LiteLLMStream(llm.LLMStream):
    def __init__(
        self,
        model: LiteLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        request: dict[str, Any],
    ) -> None:
        super().__init__(model, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._model = model
        self._request = request

    async def _run(self) -> None:
        kwargs = self._completion_kwargs()
        # A retry starts from scratch: tool-call fragments of a failed attempt are dropped.
        calls = _ToolCallAccumulator()
        response_id = ""
        final_usage: Any = None
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                response_id = chunk.id or response_id
                final_usage = getattr(chunk, "usage", None) or final_usage
                for choice in chunk.choices:
                    self._forward_choice(response_id, choice, calls)
        except Exception as exc:
            raise to_api_error(exc, self._model.model) from exc
        if calls:
            self._send(response_id, tool_calls=calls.finish())
        if final_usage is not None:
            self._account(response_id, final_usage)

    def _completion_kwargs(self) -> dict[str, Any]:
        model = self._model
        messages, _ = self._chat_ctx.to_provider_format("openai")
        api_key = model.options.api_key.get() if model.options.api_key is not None else None
        return build_completion_kwargs(
            model.options,
            messages=messages,
            tools=openai_tools(self._tools),
            static_prompt=model.static_prompt,
            cache_key=model.cache_key,
            provider=model.provider,
            api_key=api_key,
            request=self._request,
        )

    def _forward_choice(self, response_id: str, choice: Any, calls: _ToolCallAccumulator) -> None:
        delta = getattr(choice, "delta", None)
        if delta is None:
            return
        for fragment in getattr(delta, "tool_calls", None) or []:
            calls.add(fragment)
        content = getattr(delta, "content", None)
        if content:
            self._send(response_id, content=content)

    def _send(
        self,
        response_id: str,
        *,
        content: str | None = None,
        tool_calls: list[llm.FunctionToolCall] | None = None,
    ) -> None:
        delta = llm.ChoiceDelta(role="assistant", content=content, tool_calls=tool_calls or [])
        self._event_ch.send_nowait(llm.ChatChunk(id=response_id, delta=delta))

    def _account(self, response_id: str, raw_usage: Any) -> None:
        usage = completion_usage(raw_usage)
        self._model.record_usage(
            usage, estimate_cost(self._model.model, self._model.provider, raw_usage)
        )
        self._event_ch.send_nowait(llm.ChatChunk(id=response_id, usage=usage))


class _ToolCallAccumulator:
    """Streamed tool calls arrive as fragments keyed by index: the id and name first, the
    JSON arguments in pieces after."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragment: Any) -> None:
        index = getattr(fragment, "index", None)
        if index is None:
            index = len(self._calls)
        call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        if getattr(fragment, "id", None):
            call["id"] = fragment.id
        function = getattr(fragment, "function", None)
        if function is not None:
            if getattr(function, "name", None):
                call["name"] = function.name
            if getattr(function, "arguments", None):
                call["arguments"] += function.arguments

    def finish(self) -> list[llm.FunctionToolCall]:
        return [
            llm.FunctionToolCall(
                name=call["name"],
                arguments=call["arguments"] or "{}",
                call_id=call["id"] or f"call_{uuid.uuid4().hex[:12]}",
            )
            for _, call in sorted(self._calls.items())
            if call["name"]
        ]


# -- pure helpers ------------------------------------------------------------------------


def build_completion_kwargs(
    options: LiteLLMOptions,
    *,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    static_prompt: str = "",
    cache_key: str | None = None,
    provider: str | None = None,
    api_key: str | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``litellm.acompletion``: streaming with usage, the
    sampling options that are set, and the prompt-caching hint the model's provider
    understands. ``messages`` are in OpenAI format and are not modified."""
    kwargs: dict[str, Any] = {
        "model": options.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "timeout": options.timeout,
        # livekit retries and falls back; retries inside the OpenAI SDK would only delay that
        "max_retries": 0,
    }
    for name in ("temperature", "max_tokens", "top_p", "api_base"):
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    if api_key is not None:
        kwargs["api_key"] = api_key
    if tools:
        kwargs["tools"] = tools
        kwargs.update(_SKIP_MCP)
    style = cache_style(options.model, provider)
    if style == "openai" and cache_key:
        kwargs["prompt_cache_key"] = cache_key
    elif style == "anthropic" and static_prompt:
        kwargs["messages"] = mark_static_prompt(messages, static_prompt)
    kwargs.update(options.extra)
    kwargs.update(request or {})
    return kwargs


def cache_style(model: str, provider: str | None = None) -> CacheStyle | None:
    """Which prompt-caching hint a model takes: OpenAI routes requests with the same
    ``prompt_cache_key`` to the same cache; Anthropic caches up to a ``cache_control``
    marker."""
    name = model.split("/", 1)[1] if "/" in model else model
    if provider == "openai" or model.startswith("openai/") or name.startswith("gpt-"):
        return "openai"
    if provider == "anthropic" or model.startswith("anthropic/") or name.startswith("claude-"):
        return "anthropic"
    return None


def mark_static_prompt(messages: list[dict[str, Any]], static_prompt: str) -> list[dict[str, Any]]:
    """Split the system message into the static prompt (marked cacheable) and the rest,
    when it starts with the static prompt. Returns a new list."""
    marked = list(messages)
    for position, message in enumerate(marked):
        if message.get("role") not in ("system", "developer"):
            continue
        content = message.get("content")
        if isinstance(content, str) and content.startswith(static_prompt):
            blocks: list[dict[str, Any]] = [
                {"type": "text", "text": static_prompt, "cache_control": {"type": "ephemeral"}}
            ]
            rest = content[len(static_prompt) :]
            if rest.strip():  # Anthropic rejects empty text blocks
                blocks.append({"type": "text", "text": rest})
            marked[position] = {**message, "content": blocks}
        break  # only the first system message carries the instructions
    return marked


def openai_tools(tools: list[llm.Tool]) -> list[dict[str, Any]]:
    """livekit function tools as OpenAI chat-completions tools. Non-strict schemas:
    litellm translates them for every provider, strict ones only OpenAI accepts."""
    if not tools:
        return []
    return llm.ToolContext(tools).parse_function_tools("openai", strict=False)


def completion_usage(usage: Any) -> llm.CompletionUsage:
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) or int(
        getattr(usage, "cache_read_input_tokens", 0) or 0
    )
    return llm.CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_cached_tokens=cached,
        cache_read_tokens=cached,
        cache_creation_tokens=int(getattr(usage, "cache_creation_input_tokens", 0) or 0),
        total_tokens=int(getattr(usage, "total_tokens", 0) or prompt_tokens + completion_tokens),
    )


def estimate_cost(model: str, provider: str, usage: Any) -> float | None:
    """USD for one completion from litellm's local cost map; None for a model it does not
    price (a local server, a new model), which is not an error."""
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, custom_llm_provider=provider, usage_object=usage
        )
    except Exception:
        return None
    return float(prompt_cost) + float(completion_cost)


def to_api_error(exc: BaseException, model: str) -> APIError:
    """livekit's error for a litellm one: timeouts and connection failures are retryable,
    HTTP errors are retryable for 408/429/5xx (livekit's APIStatusError decides), anything
    else is not. Messages never carry the API key (litellm and the SDK mask it)."""
    if isinstance(exc, APIError):
        return exc
    message = f"{model}: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
        return APITimeoutError(message)
    if isinstance(exc, openai.APIConnectionError):
        return APIConnectionError(message)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return APIStatusError(
            message,
            status_code=status,
            request_id=_request_id(exc),
            body=getattr(exc, "body", None),
            retryable=status in (408, 429) or status >= 500,
        )
    return APIConnectionError(message, retryable=False)


def _request_id(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    try:
        return headers.get("x-request-id") if headers is not None else None
    except Exception:
        return None


__all__ = [
    "LiteLLM",
    "LiteLLMFallbackAdapter",
    "LiteLLMStream",
    "LiteLLMUsage",
    "build_completion_kwargs",
    "fallback_options",
]
