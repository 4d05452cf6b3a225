"""The `deepgram` STT provider: options checked at load, livekit's Deepgram STT built
per call with them. No request ever leaves the machine."""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Callable
from typing import Any

import pytest
from livekit.plugins import deepgram
from livekit.plugins.deepgram.models import DeepgramModels
from pydantic import ValidationError

import runtime
from plugins.stt.deepgram import MODELS, DeepgramSTTOptions, create_stt

from .conftest import KEYS


def options(**table: Any) -> DeepgramSTTOptions:
    return DeepgramSTTOptions.model_validate(table)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"modle": "nova-3"}, "modle\n  Extra inputs are not permitted"),
        (
            {"model": "nova-33"},
            "unknown Deepgram model 'nova-33'; did you mean `nova-3`? Deepgram models: ",
        ),
        ({"model": "flux-general-en"}, "runs on Deepgram's v2 (Flux) API"),
        (
            {"model": "nova-2-phonecall", "keyterm": ["Okafor"]},
            "`keyterm` works with nova-3 models only, not 'nova-2-phonecall'",
        ),
        (
            {"model": "nova-2-phonecall", "bot_vocabulary": True},
            "`bot_vocabulary` works with nova-3 models only, not 'nova-2-phonecall'",
        ),
        ({"keyterm": [""]}, "at least 1 character"),
        ({"language": ""}, "at least 1 character"),
        ({"endpointing_ms": -1}, "greater than or equal to 0"),
        ({"sample_rate": 4000}, "greater than or equal to 8000"),
        ({"base_url": "api.deepgram.com"}, "should match pattern"),
        ({"api_key": "dg-plain-text-key"}, "secrets are read from the environment only"),
    ],
)
def test_invalid_options(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        options(**table)


@pytest.mark.parametrize("model", ["nova-2", "nova-3", "nova-2-phonecall", "nova-3-ivr"])
def test_models_deepgram_accepts_are_accepted(model: str) -> None:
    """A bare family is Deepgram's general model; new options of a known family pass too,
    since this list can only lag behind Deepgram's."""
    assert options(model=model).model == model


def test_defaults() -> None:
    defaults = options()
    assert (defaults.model, defaults.language, defaults.keyterm) == ("nova-3", None, [])
    assert defaults.api_key == runtime.SecretRef("DEEPGRAM_API_KEY")


def test_known_models_are_livekits_minus_flux() -> None:
    livekit_models = set(typing.get_args(DeepgramModels))
    assert set(MODELS) == {m for m in livekit_models if not m.startswith("flux-")}


async def test_builds_livekits_deepgram_stt_with_the_options(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    chosen = options(
        model="nova-3-medical",
        keyterm=["Okafor", "Bright Smile"],
        smart_format=True,
        interim_results=False,
        endpointing_ms=300,
        filler_words=False,
        numerals=True,
        sample_rate=8000,
        mip_opt_out=True,
    )
    stt = closing(create_stt(chosen, make_call("de")))

    assert isinstance(stt, deepgram.STT)
    opts = stt._opts
    assert (opts.model, opts.language) == ("nova-3-medical", "de")  # the bot's language
    assert opts.keyterm == ["Okafor", "Bright Smile"]
    assert (opts.smart_format, opts.interim_results, opts.filler_words) == (True, False, False)
    assert (opts.endpointing_ms, opts.numerals, opts.sample_rate) == (300, True, 8000)
    assert opts.mip_opt_out is True
    assert opts.endpoint_url == "https://api.deepgram.com/v1/listen"
    assert stt._api_key == KEYS["DEEPGRAM_API_KEY"]
    assert stt._session is None  # no HTTP session, no connection yet


async def test_an_explicit_language_beats_the_bots(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    stt = closing(create_stt(options(language="multi"), make_call("de")))
    assert stt._opts.language == "multi"


async def test_the_key_comes_from_the_variable_the_bot_names(
    monkeypatch: pytest.MonkeyPatch,
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    monkeypatch.setenv("CLINIC_DEEPGRAM_KEY", "dg-clinic-key")
    stt = closing(create_stt(options(api_key="${env:CLINIC_DEEPGRAM_KEY}"), make_call()))
    assert stt._api_key == "dg-clinic-key"


def test_a_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, make_call: Callable[..., runtime.CallContext]
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(runtime.CallSetupError, match="environment variable DEEPGRAM_API_KEY"):
        create_stt(options(), make_call())


def test_a_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
) -> None:
    monkeypatch.setitem(sys.modules, "livekit.plugins.deepgram", None)
    with pytest.raises(runtime.MissingExtra) as caught:
        create_stt(options(), make_call())
    assert "'livekit-plugins-deepgram'" in str(caught.value)
    assert "pip install 'dialplan[deepgram]'" in str(caught.value)


async def test_the_words_the_bot_expects_become_key_terms(
    fake_keys: dict[str, str],
    receptionist_call: runtime.CallContext,
    closing: Callable[[Any], Any],
) -> None:
    chosen = options(model="nova-3", keyterm=["Okafor"], bot_vocabulary=True)
    stt = closing(create_stt(chosen, receptionist_call))

    terms = stt._opts.keyterm
    assert terms[0] == "Okafor"  # the file's own first
    assert {"appointment", "check up", "that's all", "Bright Smile Dental"} <= set(terms)
    assert all(len(term.split()) <= 3 for term in terms) and len(terms) <= 51
    # off by default: nothing but the file's terms leaves for Deepgram
    plain = closing(create_stt(options(model="nova-3", keyterm=["Okafor"]), receptionist_call))
    assert plain._opts.keyterm == ["Okafor"]
