"""Warming the voices before the first call: each local provider a loaded bot uses is
built once and its `warm()` run (in a worker thread); a reload warms only what is new;
a provider that fails to warm is reported, never fatal."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from runtime import CallContext, RegisterProvider, hookimpl
from runtime.catalog import load_catalog
from runtime.registry import load_registry
from runtime.warmup import VoiceWarmer


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    level: int = 1


class WarmableTTS:
    """Stands in for a provider's instance: only `warm` and `aclose` matter here."""

    def __init__(self, plugin: WarmablePlugin, options: Level) -> None:
        self.plugin, self.options = plugin, options

    def warm(self) -> None:
        self.plugin.warmed.append((self.options.level, threading.current_thread().name))
        if self.options.level < 0:
            raise OSError("model file missing")

    async def aclose(self) -> None:
        self.plugin.closed += 1


class WarmablePlugin:
    def __init__(self) -> None:
        self.warmed: list[tuple[int, str]] = []
        self.closed = 0

    @hookimpl
    def register_providers(self, register: RegisterProvider) -> None:
        register(kind="tts", name="warmable", factory=self.create, options=Level)

    def create(self, options: Level, call: CallContext) -> Any:
        assert call.bot.id and call.request.transport == "idle"
        return WarmableTTS(self, options)


def bot(level: int) -> str:
    return (
        '[prompt]\nsystem = "x"\n[llm]\nprovider = "rules"\n'
        f'[tts]\nprovider = "warmable"\nlevel = {level}\n[vad]\nprovider = "energy"\n'
        '[stt]\nprovider = "pocketsphinx"\n'
    )


async def test_each_voice_is_warmed_once_and_reloads_warm_only_whats_new(
    bot_dir: Callable[..., Path],
) -> None:
    plugin = WarmablePlugin()
    registry = load_registry(extra_plugins=[("warmable", plugin)])
    bot_dir("a", bot(1))
    bots = bot_dir("b", bot(1))  # the same voice and options: warmed once
    warmer = VoiceWarmer(registry)
    first = await warmer.warm(load_catalog(bots, registry).bots.values())
    assert sorted((w.kind, w.provider, w.error) for w in first) == [
        ("stt", "pocketsphinx", None),
        ("tts", "warmable", None),
        ("vad", "energy", None),
    ]
    assert [level for level, _ in plugin.warmed] == [1] and plugin.closed == 1
    assert plugin.warmed[0][1] != threading.main_thread().name  # off the event loop

    bot_dir("c", bot(2))  # a reload brings a new voice
    again = await warmer.warm(load_catalog(bots, registry).bots.values())
    assert [(w.provider, w.error) for w in again] == [("warmable", None)]
    assert [level for level, _ in plugin.warmed] == [1, 2]


async def test_a_voice_that_cannot_warm_is_reported_not_fatal(
    bot_dir: Callable[..., Path],
) -> None:
    plugin = WarmablePlugin()
    registry = load_registry(extra_plugins=[("warmable", plugin)])
    bots = bot_dir("a", bot(-1))
    warmed = await VoiceWarmer(registry).warm(load_catalog(bots, registry).bots.values())
    failed = next(w for w in warmed if w.provider == "warmable")
    assert failed.error == "OSError: model file missing"
    assert failed.line() == "tts warmable: could not warm (OSError: model file missing)"
