"""Warm the voices before the first call: load every local model a loaded bot uses.

Offline providers load their models on first use (a Piper voice about two seconds, a
pocketsphinx decoder about one), so the first call after a start waited seconds for its
greeting, and a caller who spoke early could be missed. A server warms them before it
listens, and again after a reload that brings in a provider it has not warmed.

A provider instance takes part by having a ``warm()`` method (blocking; run in a worker
thread) that loads what its first call would otherwise wait for, into the process-wide
caches its calls share. Cloud providers have none: warming them would mean network calls
before any caller exists, so they are left alone.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.call import CallContext, CallRequest, RenderedPrompt
from runtime.call_defaults import ResolvedProvider, call_defaults
from runtime.compiler import CompiledBot
from runtime.registry import Registry

log = logging.getLogger("dialplan.warmup")

VOICE_KINDS = ("stt", "tts", "vad")


@dataclass(frozen=True)
class Warmed:
    kind: str
    provider: str
    seconds: float
    error: str | None = None

    def line(self) -> str:
        if self.error is not None:
            return f"{self.kind} {self.provider}: could not warm ({self.error})"
        return f"{self.kind} {self.provider} {self.seconds:.1f} s"


class VoiceWarmer:
    """Remembers what it warmed, so a reload only warms what is new."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._done: set[tuple[str, str, str]] = set()

    async def warm(self, bots: Iterable[CompiledBot]) -> list[Warmed]:
        """Warm each local provider these bots use that is not warm yet, one at a time
        (they compete for the same cores)."""
        warmed: list[Warmed] = []
        for key, bot, resolved in self._pending(bots):
            self._done.add(key)
            warmed.append(await _warm_one(bot, key[0], resolved))
        return warmed

    def _pending(
        self, bots: Iterable[CompiledBot]
    ) -> list[tuple[tuple[str, str, str], CompiledBot, ResolvedProvider]]:
        found: dict[tuple[str, str, str], tuple[CompiledBot, ResolvedProvider]] = {}
        for bot in bots:
            defaults = call_defaults(bot, self.registry)
            for kind in VOICE_KINDS:
                resolved = defaults.providers.get(kind)
                if resolved is None:
                    continue
                key = (kind, resolved.entry.name, resolved.options.model_dump_json())
                if key not in self._done and key not in found:
                    found[key] = (bot, resolved)
        return [(key, bot, resolved) for key, (bot, resolved) in found.items()]


async def _warm_one(bot: CompiledBot, kind: str, resolved: ResolvedProvider) -> Warmed:
    """The provider is built on the event loop, as a call builds it (livekit plugins
    register on the main thread), and warmed in a worker thread."""
    started = time.perf_counter()
    name = resolved.entry.name
    try:
        instance = resolved.entry.factory(resolved.options, idle_call(bot))
        warm = getattr(instance, "warm", None)
        if callable(warm):
            await asyncio.to_thread(warm)
        close = getattr(instance, "aclose", None)
        if close is not None and inspect.iscoroutine(result := close()):
            await result
    except Exception as exc:  # a provider that fails here fails its calls too, with a record
        log.warning("could not warm %s %s: %s", kind, name, exc)
        return Warmed(kind, name, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    return Warmed(kind, name, time.perf_counter() - started)


def idle_call(bot: CompiledBot) -> CallContext:
    """A call of this bot that never rings: what a provider or tool factory is given when
    it is built outside any call (warming, checking a tool's arguments)."""
    return CallContext(
        request=CallRequest(bot=bot.id, transport="idle"),
        bot=bot,
        variables=dict(bot.bot.defaults()),
        prompt=RenderedPrompt(static="", per_call="", greeting=""),
        provider_kinds=frozenset(VOICE_KINDS),
    )
