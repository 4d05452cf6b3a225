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
from runtime.templates import PromptTemplate

# a bot without an [stt], [tts] or [vad] table is heard and speaks offline
OFFLINE_DEFAULTS = {"stt": "pocketsphinx", "tts": "piper", "vad": "silero"}
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
    reminders = len(spec.limits.silence_reminders)
    return CallDefaults(
        registry=registry,
        required=tuple(spec.required_variables()),
        variables=spec.defaults(),
        info=bot.bot_info(),
        providers=providers,
        tools=tuple(
            ResolvedTool(tool.name, registry.tool(tool.binding.use), tool.options)
            for tool in bot.tools
        ),
        reminders=tuple(
            _plain_or_template(bot, f"limits.silence_reminders[{i}]") for i in range(reminders)
        ),
        watchdog_lines={key: _plain_or_template(bot, key) for key in WATCHDOG_LINES},
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
