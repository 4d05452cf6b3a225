"""The ``espeak`` TTS provider: eSpeak NG, a light formant synthesizer, as an offline
fallback. Robotic, but tiny and instant; ``libespeak-ng`` and its data ship in the
``espeakng-loader`` package and are driven through ctypes.

    [tts]
    provider = "espeak"
    voice = "en-us"        # en-us, en (British), de, fr ...; "en-us+f3" picks a variant
    rate = 175             # words per minute
    pitch = 50             # 0-99
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime import CallContext, RegisterProvider, hookimpl
from runtime.errors import suggest


@functools.cache
def data_path() -> Path | None:
    """``espeak-ng-data`` of the installed ``espeakng-loader``, found without importing it."""
    spec = importlib.util.find_spec("espeakng_loader")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "espeak-ng-data"


@functools.cache
def known_voices() -> tuple[frozenset[str], frozenset[str]]:
    """(languages, variants) eSpeak NG has data for, lowercased."""
    data = data_path()
    if data is None or not data.is_dir():
        return frozenset(), frozenset()
    languages = frozenset(p.name.lower() for p in (data / "lang").rglob("*") if p.is_file())
    variants = frozenset(p.name.lower() for p in (data / "voices" / "!v").glob("*") if p.is_file())
    return languages, variants


class EspeakOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    voice: str = Field(
        "en-us",
        description='an eSpeak NG voice such as "en-us", "en" (British) or "de", optionally '
        'with a variant: "en-us+f3"',
    )
    rate: int = Field(175, ge=80, le=450, description="speaking rate in words per minute")
    pitch: int = Field(50, ge=0, le=99, description="base pitch, 0-99")

    @field_validator("voice")
    @classmethod
    def _known_voice(cls, value: str) -> str:
        languages, variants = known_voices()
        if not languages:
            return value  # espeakng-loader is missing; the factory says so
        language, _, variant = value.lower().partition("+")
        if language not in languages:
            raise ValueError(
                f"eSpeak NG has no voice {language!r}; "
                + suggest(language, sorted(languages), what="voices")
            )
        if variant and variant not in variants:
            raise ValueError(
                f"eSpeak NG has no voice variant {variant!r}; "
                + suggest(variant, sorted(variants), what="variants")
            )
        return value


def create_tts(options: EspeakOptions, call: CallContext) -> Any:
    from plugins.tts.espeak_tts import EspeakTTS

    return EspeakTTS(options)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="tts",
        name="espeak",
        factory=create_tts,
        options=EspeakOptions,
        description="offline formant speech, eSpeak NG (light fallback, many languages)",
    )
