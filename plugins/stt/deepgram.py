"""The ``deepgram`` STT provider: Deepgram's streaming speech recognition through the
official ``livekit-plugins-deepgram`` (``pip install 'dialplan[deepgram]'``).

```toml
[stt]
provider = "deepgram"
model = "nova-3"
keyterm = ["Bright Smile", "Dr. Okafor"]
api_key = "${env:DEEPGRAM_API_KEY}"     # the default
```

This module only registers the provider and declares its options; livekit is imported
when a call builds its STT.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import runtime
from plugins.cloud_support import CloudProvider, check_known

if TYPE_CHECKING:
    from livekit.agents import stt

DEEPGRAM = CloudProvider(
    kind="stt",
    name="deepgram",
    label="Deepgram",
    module="livekit.plugins.deepgram",
    package="livekit-plugins-deepgram",
    extra="deepgram",
    key_env="DEEPGRAM_API_KEY",
)

# `DeepgramModels` of livekit-plugins-deepgram 1.8 without the `flux-*` models, which are
# served by Deepgram's v2 API (livekit's `STTv2`), not the one this provider streams to
MODELS = (
    "nova-general",
    "nova-phonecall",
    "nova-meeting",
    "nova-2-general",
    "nova-2-meeting",
    "nova-2-phonecall",
    "nova-2-finance",
    "nova-2-conversationalai",
    "nova-2-voicemail",
    "nova-2-video",
    "nova-2-medical",
    "nova-2-drivethru",
    "nova-2-automotive",
    "nova-2-atc",
    "nova-3",
    "nova-3-general",
    "nova-3-medical",
    "nova-3-multilingual",
    "enhanced-general",
    "enhanced-meeting",
    "enhanced-phonecall",
    "enhanced-finance",
    "base",
    "meeting",
    "phonecall",
    "finance",
    "conversationalai",
    "voicemail",
    "video",
    "whisper-tiny",
    "whisper-base",
    "whisper-small",
    "whisper-medium",
    "whisper-large",
)

# Deepgram names models `<family>[-<option>]` and takes a bare family (`nova-2`) as its
# general option; options are added over time, so a known family with any option passes
# (Deepgram itself answers for the rest) and only an unknown family is refused here
FAMILIES = ("nova", "nova-2", "nova-3", "enhanced", "base", "whisper")

_OPTION = re.compile(r"^[a-z][a-z0-9-]*$")

NonEmpty = Annotated[str, Field(min_length=1)]


def _family_model(value: str) -> bool:
    """A bare family (`nova-2`) or a family with a word option (`nova-2-ivr`)."""
    for family in sorted(FAMILIES, key=len, reverse=True):
        if value == family:
            return True
        if value.startswith(family + "-"):
            return bool(_OPTION.match(value[len(family) + 1 :]))
    return False


class DeepgramSTTOptions(BaseModel):
    """Options of the ``deepgram`` STT provider (the keys of the bot's ``[stt]`` table)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "nova-3",
        description='Deepgram model, e.g. "nova-3" or "nova-2-phonecall"',
        examples=list(MODELS),
    )
    language: NonEmpty | None = Field(
        None,
        description='language Deepgram transcribes, e.g. "en-US", or "multi" (nova-3: '
        "several languages in one call); default: the bot's `language`",
    )
    interim_results: bool = Field(
        True, description="stream partial transcripts while the caller speaks"
    )
    punctuate: bool = Field(True, description="add punctuation (helps turn detection)")
    smart_format: bool = Field(
        False, description="format numbers, dates, currency and the like as written text"
    )
    endpointing_ms: int = Field(
        25, ge=0, description="milliseconds of silence that end an utterance; 0 turns it off"
    )
    filler_words: bool = Field(True, description='keep "um" and "uh" (helps turn detection)')
    keyterm: list[NonEmpty] = Field(
        default_factory=list,
        description="words and phrases to recognize better, e.g. names (nova-3 models only)",
    )
    bot_vocabulary: bool = Field(
        False,
        description="also send what the bot expects to hear as key terms (its rules' words, "
        "its first step's choices, names in its variables; nova-3 models only)",
    )
    profanity_filter: bool = Field(False, description="mask profanity in transcripts")
    numerals: bool = Field(False, description='write numbers as digits ("nine" -> "9")')
    sample_rate: int = Field(
        16000, ge=8000, le=48000, description="sample rate in Hz of the audio sent to Deepgram"
    )
    mip_opt_out: bool = Field(False, description="opt out of Deepgram's Model Improvement Program")
    base_url: str = Field(
        "https://api.deepgram.com/v1/listen",
        pattern=r"^(https?|wss?)://",
        description="listen endpoint; change it for a self-hosted or regional Deepgram",
    )
    api_key: runtime.SecretRef = DEEPGRAM.api_key_field()

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value.startswith("flux-"):
            raise ValueError(
                f"{value!r} runs on Deepgram's v2 (Flux) API, which this provider does not "
                'use; pick a nova model, e.g. "nova-3"'
            )
        if value in MODELS or _family_model(value):
            return value
        return check_known(value, MODELS + FAMILIES, what="Deepgram model")

    @model_validator(mode="after")
    def _keyterm_needs_nova_3(self) -> DeepgramSTTOptions:
        used = "keyterm" if self.keyterm else "bot_vocabulary" if self.bot_vocabulary else None
        if used and not self.model.startswith("nova-3"):
            raise ValueError(
                f"`{used}` works with nova-3 models only, not {self.model!r} "
                f'(use model = "nova-3", or remove `{used}`)'
            )
        return self


@runtime.hookimpl
def register_providers(register: runtime.RegisterProvider) -> None:
    register(
        kind="stt",
        name="deepgram",
        factory=create_stt,
        options=DeepgramSTTOptions,
        description="Deepgram streaming speech recognition (cloud; extra `deepgram`)",
    )


def create_stt(options: DeepgramSTTOptions, call: runtime.CallContext) -> stt.STT:
    """Deepgram's livekit STT for this call, in the bot's language unless set."""
    DEEPGRAM.require()
    from livekit.agents.types import NOT_GIVEN
    from livekit.plugins import deepgram

    return deepgram.STT(
        model=options.model,
        language=options.language or call.bot.bot.language,
        interim_results=options.interim_results,
        punctuate=options.punctuate,
        smart_format=options.smart_format,
        endpointing_ms=options.endpointing_ms,
        filler_words=options.filler_words,
        keyterm=_keyterms(options, call) or NOT_GIVEN,
        profanity_filter=options.profanity_filter,
        numerals=options.numerals,
        sample_rate=options.sample_rate,
        mip_opt_out=options.mip_opt_out,
        api_key=DEEPGRAM.api_key(options.api_key),
        base_url=options.base_url,
    )


MAX_BOT_KEYTERMS = 50  # Deepgram caps key terms; the bot's own come after the file's
MAX_KEYTERM_WORDS = 3  # a term, not a sentence (a transition's `when` is no key term)


def _keyterms(options: DeepgramSTTOptions, call: runtime.CallContext) -> list[str]:
    terms = list(options.keyterm)
    if options.bot_vocabulary:
        expected = [
            phrase
            for phrase in call.speech_context().phrases
            if len(phrase.split()) <= MAX_KEYTERM_WORDS and phrase not in terms
        ]
        terms += expected[:MAX_BOT_KEYTERMS]
    return terms
