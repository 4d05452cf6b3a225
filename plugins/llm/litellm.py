"""The ``litellm`` LLM provider: any model litellm knows (OpenAI, Anthropic, Gemini, Groq,
a local OpenAI-compatible server ...) behind one ``[llm]`` table.

```toml
[llm]
provider = "litellm"
model = "openai/gpt-4o-mini"
fallback = ["anthropic/claude-haiku-4-5"]
api_key = "${env:OPENAI_API_KEY}"
```

This module only registers the provider and declares its options, so validating bots never
imports livekit or litellm; the implementation (`plugins.llm.litellm_llm`) is imported
when a call builds its LLM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

import runtime
from runtime.durations import Duration

if TYPE_CHECKING:
    from livekit.agents import llm

# acompletion arguments this provider sets itself; `extra` may not replace them (nor carry
# a plain-text api_key past the "${env:NAME}" rule)
RESERVED_EXTRA = frozenset(
    {"model", "messages", "stream", "stream_options", "tools", "api_key", "api_base", "base_url"}
)


class LiteLLMOptions(BaseModel):
    """Options of the ``litellm`` provider (the keys of the bot's ``[llm]`` table)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        description='litellm model name with its provider prefix, e.g. "openai/gpt-4o-mini" '
        'or "anthropic/claude-haiku-4-5"',
    )
    fallback: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="models tried in order when the primary model fails; `api_key` and "
        "`api_base` apply to the ones of the primary's provider, the others read their "
        "provider's usual environment variable (e.g. ANTHROPIC_API_KEY)",
    )
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature")
    max_tokens: int | None = Field(None, gt=0, description="upper bound of tokens per reply")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass")
    api_key: runtime.SecretRef | None = Field(
        None,
        description='API key, only as "${env:NAME}"; by default litellm reads the '
        "provider's usual environment variable",
    )
    api_base: str | None = Field(
        None, description="base URL of the API, e.g. a proxy or a local OpenAI-compatible server"
    )
    timeout: Duration = Field(30.0, description="give up on one request after this long")
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="more keyword arguments for litellm.acompletion (e.g. reasoning_effort)",
    )

    @field_validator("extra")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_EXTRA & set(value))
        if reserved:
            raise ValueError(
                f"`extra` cannot set {', '.join(reserved)}: the provider sets the request "
                'itself; use the `model`, `api_base` and `api_key` ("${env:NAME}") options'
            )
        return value


@runtime.hookimpl
def register_providers(register: runtime.RegisterProvider) -> None:
    register(
        kind="llm",
        name="litellm",
        factory=create_llm,
        options=LiteLLMOptions,
        description="any model litellm supports (OpenAI, Anthropic, Gemini, local servers ...)"
        ", with fallbacks, prompt caching and cost tracking",
    )


def create_llm(options: LiteLLMOptions, call: runtime.CallContext) -> llm.LLM:
    """One LLM for this call: the primary model, or livekit's FallbackAdapter over the
    primary and its fallbacks."""
    # deferred: importing litellm and livekit takes seconds, validating a bot must not
    from plugins.llm.litellm_llm import LiteLLM, LiteLLMFallbackAdapter, fallback_options

    # every call of a bot version shares the static prompt, hence one cache per version
    cache_key = f"{call.bot_id}:{call.bot_version}"
    models = [
        LiteLLM(model_options, cache_key=cache_key, static_prompt=call.prompt.static)
        for model_options in [options, *fallback_options(options)]
    ]
    if len(models) == 1:
        return models[0]
    return LiteLLMFallbackAdapter(models, attempt_timeout=options.timeout)
