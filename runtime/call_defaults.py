"""What every call of one bot version starts from, worked out on the version's first call.

A call without overrides uses the bot's own providers, tools, variable defaults and the
ending lines that are plain text; none of that changes between calls of a version, so
`plan_call` should not look it up, validate it or render it again each time. The result
lives on the (immutable) `CompiledBot`, so a reload simply starts a new one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runtime.compiler import CompiledBot
from runtime.registry import PROVIDER_KINDS, ProviderEntry, Registry, ToolEntry
from runtime.schema import OpeningHours, opening_hours
from runtime.templates import PromptTemplate

# a bot without an [stt], [tts] or [vad] table is heard and speaks offline
OFFLINE_DEFAULTS = {"stt": "faster_whisper", "tts": "piper", "vad": "silero"}
# the ending lines every call may need (the watchdogs'), by their key in the bot file
WATCHDOG_LINES = ("limits.max_duration_message", "limits.error_message")


@dataclass(frozen=True)
class ResolvedProvider:
    entry: ProviderEntry
    options: BaseModel


@dataclass(frozen=True)
class ResolvedTool:
    name: str
    entry: ToolEntry
    options: BaseModel
    # captured values its result sets: (name, compiled Jinja expression over `result`)
    captures: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class EndingLines:
    """What the bot says when a watchdog ends the call, rendered for this call at set-up
    (so a template error fails the set-up, not the hang-up). Empty: end without a word."""

    silence_reminders: tuple[str, ...] = ()
    timeout: str = ""
    apology: str = ""
    closed: str = ""
    voicemail: str = ""
    rejected: str = ""  # said when per-call config refused the call (CallRejected)


NO_LINES = EndingLines()


@dataclass(frozen=True)
class CallDefaults:
    registry: Registry  # the registry these entries came from
    required: tuple[str, ...]  # variables every call must pass
    variables: Mapping[str, Any]  # the defaults of the others
    info: Mapping[str, Any]  # `bot` in templates
    providers: Mapping[str, ResolvedProvider]  # before any per-call override
    tools: tuple[ResolvedTool, ...]
    # silence reminders and watchdog lines: their text when it is plain (no Jinja), else
    # their template, rendered per call
    reminders: tuple[str | PromptTemplate, ...]
    watchdog_lines: Mapping[str, str | PromptTemplate]
    plain_lines: EndingLines | None  # all of those as text, when none is a template
    opening_hours: OpeningHours | None  # None: the bot answers at any hour


def call_defaults(bot: CompiledBot, registry: Registry) -> CallDefaults:
    """The bot version's call defaults against ``registry``, computed once."""
    defaults = bot.derived("call_defaults", lambda bot: _work_out(bot, registry))
    if defaults.registry is not registry:  # a registry other than the catalog's (tests)
        return _work_out(bot, registry)
    return defaults


def _work_out(bot: CompiledBot, registry: Registry) -> CallDefaults:
    spec = bot.bot
    providers: dict[str, ResolvedProvider] = {}
    for kind in PROVIDER_KINDS:
        config = getattr(spec, kind)
        if config is not None:
            providers[kind] = ResolvedProvider(
                registry.provider(kind, config.provider), bot.provider_options[kind]
            )
        elif (kind, OFFLINE_DEFAULTS.get(kind)) in registry.providers:
            entry = registry.providers[(kind, OFFLINE_DEFAULTS[kind])]
            providers[kind] = ResolvedProvider(entry, default_options(entry))
    if spec.voicemail is not None and spec.voicemail.llm is not None:
        providers["voicemail.llm"] = ResolvedProvider(
            registry.provider("llm", spec.voicemail.llm.provider),
            bot.provider_options["voicemail.llm"],
        )
    reminders = tuple(
        _plain_or_template(bot, f"limits.silence_reminders[{i}]")
        for i in range(len(spec.limits.silence_reminders))
    )
    watchdog_lines = {key: _plain_or_template(bot, key) for key in WATCHDOG_LINES}
    texts = [*reminders, *watchdog_lines.values()]
    plain_lines = None
    if all(isinstance(text, str) for text in texts):
        plain_lines = EndingLines(
            silence_reminders=tuple(str(text) for text in reminders),
            timeout=str(watchdog_lines["limits.max_duration_message"]),
            apology=str(watchdog_lines["limits.error_message"]),
        )
    schedule = spec.schedule
    return CallDefaults(
        registry=registry,
        required=tuple(spec.required_variables()),
        variables=spec.defaults(),
        info=bot.bot_info(),
        providers=providers,
        tools=tuple(
            ResolvedTool(tool.name, registry.tool(tool.binding.use), tool.options, tool.captures)
            for tool in bot.tools
        ),
        reminders=reminders,
        watchdog_lines=watchdog_lines,
        plain_lines=plain_lines,
        opening_hours=(
            opening_hours(schedule.timezone, tuple(schedule.hours.items()))
            if schedule is not None and schedule.hours
            else None
        ),
    )


def _plain_or_template(bot: CompiledBot, key: str) -> str | PromptTemplate:
    template = bot.templates.get(key)
    if template is None:
        return ""
    return template.source.strip() if template.is_plain else template


@functools.lru_cache(maxsize=64)
def default_options(entry: ProviderEntry) -> BaseModel:
    """A default provider's options, validated once, not on every call."""
    return entry.options.model_validate({})
