"""The shared plumbing: a missing extra, a missing key, known names, cheap imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plugins.cloud_support import CloudProvider, check_known
from runtime.errors import CallSetupError, MissingExtra
from runtime.secrets import SecretRef

ACME = CloudProvider(
    kind="stt",
    name="acme",
    label="Acme",
    module="acme_livekit_plugin_for_tests",
    package="livekit-plugins-acme",
    extra="acme",
    key_env="ACME_TEST_API_KEY",
)


def test_an_uninstalled_plugin_is_a_missing_extra_with_the_install_commands() -> None:
    with pytest.raises(MissingExtra) as caught:
        ACME.require()
    assert str(caught.value) == (
        "provider 'acme' needs the 'livekit-plugins-acme' package: "
        "pip install 'dialplan[acme]' (with uv: `uv add 'dialplan[acme]'` in your project, "
        "or `uv sync --all-extras` in a dialplan checkout)"
    )


def test_an_installed_plugin_that_fails_to_import_is_not_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_livekit_plugin_for_tests.py").write_text("import acme_sdk_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="acme_sdk_not_installed") as caught:
        ACME.require()
    assert not isinstance(caught.value, MissingExtra)


def test_an_installed_plugin_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme_livekit_plugin_for_tests.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_livekit_plugin_for_tests", raising=False)
    ACME.require()
    assert "acme_livekit_plugin_for_tests" in sys.modules


def test_the_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_TEST_API_KEY", "k-123")
    assert ACME.api_key(SecretRef("ACME_TEST_API_KEY")) == "k-123"


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("ACME_TEST_API_KEY", raising=False)
    else:
        monkeypatch.setenv("ACME_TEST_API_KEY", value)
    with pytest.raises(CallSetupError) as caught:
        ACME.api_key(SecretRef("ACME_TEST_API_KEY"))
    assert str(caught.value) == (
        "STT provider 'acme' has no Acme API key: environment variable ACME_TEST_API_KEY is "
        'not set (export ACME_TEST_API_KEY, or point `api_key = "${env:NAME}"` in the bot\'s '
        "[stt] table at the variable that holds the key)"
    )


def test_the_api_key_option_defaults_to_the_vendor_variable() -> None:
    field = ACME.api_key_field()
    assert field.default == SecretRef("ACME_TEST_API_KEY")
    assert "ACME_TEST_API_KEY" in field.description


def test_check_known_accepts_known_names_and_dated_snapshots() -> None:
    known = ("sonic-2", "sonic-3")
    assert check_known("sonic-3", known, what="model") == "sonic-3"
    assert check_known("sonic-3-2025-10-27", known, what="model") == "sonic-3-2025-10-27"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sonic-33", "unknown model 'sonic-33'; did you mean `sonic-3`? models: sonic-2, sonic-3"),
        ("nova-3-2025-01-01", "unknown model 'nova-3-2025-01-01'; models: sonic-2, sonic-3"),
        (" ", "model must not be empty"),
    ],
)
def test_check_known_refuses_with_a_suggestion(value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_known(value, ("sonic-2", "sonic-3"), what="model")
    assert str(caught.value) == message


REGISTRATION_MODULES = (
    "plugins.cloud_support",
    "plugins.stt.deepgram",
    "plugins.stt.openai",
    "plugins.tts.openai",
    "plugins.tts.cartesia",
    "plugins.tts.elevenlabs",
)


def test_registration_modules_never_import_livekit_or_the_vendor_sdks() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {REGISTRATION_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = ('livekit', 'openai', 'httpx', 'aiohttp', 'deepgram', 'cartesia', 'elevenlabs')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
