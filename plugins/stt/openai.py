"""The ``openai`` STT provider: OpenAI's transcription models (or any OpenAI-compatible
server) through the official ``livekit-plugins-openai`` (``pip install 'dialplan[openai]'``).

```toml
[stt]
provider = "openai"
model = "gpt-4o-mini-transcribe"
prompt = "A caller booking a dental appointment."
api_key = "${env:OPENAI_API_KEY}"       # the default
```

This module only registers the provider and declares its options; livekit is imported
when a call builds its STT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import runtime
from plugins.cloud_support import CloudProvider, check_known

if TYPE_CHECKING:
    from livekit.agents import stt

OPENAI_STT = CloudProvider(
    kind="stt",
    name="openai",
    label="OpenAI",
    module="livekit.plugins.openai",
    package="livekit-plugins-openai",
    extra="openai",
    key_env="OPENAI_API_KEY",
)

# `STTModels` of livekit-plugins-openai 1.8 (the openai SDK's `AudioModel` + realtime ones)
MODELS = (
    "whisper-1",
    "gpt-transcribe",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
    "gpt-live-transcribe",
    "gpt-realtime-whisper",
)
# served only over the Realtime API
REALTIME_ONLY = ("gpt-realtime-whisper", "gpt-live-transcribe")
# the models that take `keywords`
KEYWORD_MODELS = ("gpt-transcribe", "gpt-live-transcribe")

NonEmpty = Annotated[str, Field(min_length=1)]


class OpenAISTTOptions(BaseModel):
    """Options of the ``openai`` STT provider (the keys of the bot's ``[stt]`` table)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "gpt-4o-mini-transcribe",
        description='transcription model, e.g. "gpt-4o-mini-transcribe", "gpt-4o-transcribe" '
        'or "whisper-1"',
        examples=list(MODELS),
    )
    language: NonEmpty | None = Field(
        None, description='language of the audio, e.g. "en"; default: the bot\'s `language`'
    )
    detect_language: bool = Field(
        False, description="let the model detect the language instead of `language`"
    )
    prompt: NonEmpty | None = Field(
        None,
        description="free-form description of the audio (topic, setting, names) to guide "
        "the transcription",
    )
    keywords: list[NonEmpty] = Field(
        default_factory=list,
        description="terms to expect, e.g. product names (gpt-transcribe and "
        "gpt-live-transcribe only)",
    )
    bot_vocabulary: bool = Field(
        False,
        description="without a `prompt`: prompt with what the bot expects to hear (its "
        "rules' words, its first step's choices, names in its variables, its greeting), "
        "sent to OpenAI with the audio",
    )
    temperature: float | None = Field(
        None, ge=0, le=1, description="sampling temperature (not with the Realtime API)"
    )
    noise_reduction_type: Literal["near_field", "far_field"] | None = Field(
        None, description="noise reduction of the Realtime API, for a close or a far microphone"
    )
    use_realtime: bool | None = Field(
        None,
        description="stream audio over the Realtime API (with interim results); default: "
        "only for the models served only there (gpt-realtime-whisper, gpt-live-transcribe)",
    )
    base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="base URL of an OpenAI-compatible server; default: OpenAI's API",
    )
    api_key: runtime.SecretRef = OPENAI_STT.api_key_field()

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_known(value, MODELS, what="OpenAI transcription model")

    @model_validator(mode="after")
    def _model_supports_options(self) -> OpenAISTTOptions:
        if self.keywords and not self.model.startswith(KEYWORD_MODELS):
            raise ValueError(
                f"`keywords` works with {' and '.join(KEYWORD_MODELS)} only, not "
                f"{self.model!r} (use `prompt` to mention names and terms instead)"
            )
        realtime = self.model.startswith(REALTIME_ONLY)
        if realtime and self.use_realtime is False:
            raise ValueError(f"{self.model!r} is served only over the Realtime API")
        if self.temperature is not None and (realtime or self.use_realtime):
            raise ValueError("`temperature` does not apply to the Realtime API")
        return self


@runtime.hookimpl
def register_providers(register: runtime.RegisterProvider) -> None:
    register(
        kind="stt",
        name="openai",
        factory=create_stt,
        options=OpenAISTTOptions,
        description="OpenAI transcription (gpt-4o-transcribe, whisper-1 ...; cloud; extra "
        "`openai`)",
    )


def create_stt(options: OpenAISTTOptions, call: runtime.CallContext) -> stt.STT:
    """OpenAI's livekit STT for this call, in the bot's language unless set."""
    OPENAI_STT.require()
    from livekit.agents.types import NOT_GIVEN
    from livekit.plugins import openai

    return openai.STT(
        model=options.model,
        language=options.language or call.bot.bot.language,
        detect_language=options.detect_language,
        prompt=_prompt(options, call) or NOT_GIVEN,
        keywords=options.keywords or NOT_GIVEN,
        temperature=options.temperature if options.temperature is not None else NOT_GIVEN,
        noise_reduction_type=options.noise_reduction_type or NOT_GIVEN,
        use_realtime=options.use_realtime if options.use_realtime is not None else NOT_GIVEN,
        base_url=options.base_url or NOT_GIVEN,
        api_key=OPENAI_STT.api_key(options.api_key),
    )


def _prompt(options: OpenAISTTOptions, call: runtime.CallContext) -> str | None:
    if options.prompt is not None or not options.bot_vocabulary:
        return options.prompt
    # a call's STT is built once: the context as the call starts (the greeting last)
    return call.speech_context().as_prompt(call.bot.bot.description) or None
