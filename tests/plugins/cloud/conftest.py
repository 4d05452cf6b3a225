"""Shared by the cloud provider tests: fake API keys, a real CallContext in a given
language, and closing what a test built. Nothing here opens a network connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

import runtime
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call

from ...conftest import MINIMAL_BOT

# the variables the vendors' own SDKs read; the providers default to them
KEYS = {
    "DEEPGRAM_API_KEY": "dg-test-not-a-real-key",
    "OPENAI_API_KEY": "sk-test-not-a-real-key",
    "CARTESIA_API_KEY": "sk_car_test-not-a-real-key",
    "ELEVEN_API_KEY": "sk_el-test-not-a-real-key",
}


class Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Closable)


@pytest.fixture
def fake_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the openai SDK reads it
    return KEYS


@pytest.fixture
def make_call(
    registry: Registry, bot_dir: Callable[..., Path]
) -> Callable[..., runtime.CallContext]:
    """A CallContext as a call gets it, of a minimal bot speaking ``language``."""

    def make(language: str = "en") -> runtime.CallContext:
        name = f"bot-{language.lower()}"
        bots = bot_dir(name, f'language = "{language}"\n{MINIMAL_BOT}')
        snapshot = load_catalog(bots, registry)
        assert not snapshot.problems, snapshot.problems
        return plan_call(snapshot, runtime.CallRequest(bot=name), registry).new_context()

    return make


@pytest.fixture
def receptionist_call(registry: Registry) -> runtime.CallContext:
    """A call of the shipped receptionist: a bot with words to expect (its rules)."""
    from tests.conftest import REPO

    snapshot = load_catalog(REPO / "bots", registry, prompts_dir=REPO / "prompts")
    request = runtime.CallRequest(
        bot="receptionist", overrides=runtime.CallOverrides(ignore_schedule=True)
    )
    return plan_call(snapshot, request, registry).new_context()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """``closing(x)`` returns x and closes it when the test ends."""
    built: list[Closable] = []

    def keep(thing: C) -> C:
        built.append(thing)
        return thing

    yield keep
    for thing in built:
        await thing.aclose()
