"""Resolve a call: which bot version, which variables, which providers and options, which
tools, and the rendered prompts. Pure Python and fast; nothing here touches livekit."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from pydantic import BaseModel, ValidationError

from runtime.call import CallContext, CallRequest, RenderedPrompt
from runtime.catalog import CatalogSnapshot
from runtime.compiler import CompiledBot, validate_provider_options
from runtime.errors import CallSetupError, Problem
from runtime.registry import PROVIDER_KINDS, ProviderEntry, Registry, ToolEntry
from runtime.templates import PromptTemplate, TemplateFailure

# a bot without an [stt], [tts] or [vad] table is heard and speaks offline
OFFLINE_DEFAULTS = {"stt": "pocketsphinx", "tts": "piper", "vad": "silero"}


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
class EndingLines:
    """What the bot says when a watchdog ends the call, rendered for this call at set-up
    (so a template error fails the set-up, not the hang-up). Empty: end without a word."""

    silence_reminders: tuple[str, ...] = ()
    timeout: str = ""
    apology: str = ""
    closed: str = ""
    voicemail: str = ""
    rejected: str = ""  # said when per-call config refused the call (CallRejected)


@dataclass(frozen=True)
class CallPlan:
    """Everything needed to build one call's pipeline, decided before any I/O."""

    request: CallRequest
    bot: CompiledBot
    variables: Mapping[str, Any]
    prompt: RenderedPrompt
    greeting_mode: str
    providers: Mapping[str, ResolvedProvider]
    tools: tuple[ResolvedTool, ...]
    lines: EndingLines = EndingLines()
    outside_hours: str | None = None  # set: why the bot's schedule is closed right now
    rejected: str | None = None  # set: why per-call config refused the call

    def new_context(self) -> CallContext:
        return CallContext(
            request=self.request,
            bot=self.bot,
            variables=dict(self.variables),
            prompt=self.prompt,
            provider_kinds=frozenset(self.providers),
        )


async def resolve_request(request: CallRequest, registry: Registry) -> CallRequest:
    """Ask the ``resolve_call`` plugins for this call's settings. A plugin may answer with
    an awaitable (one that asks an HTTP endpoint): awaited here, on the caller's loop."""
    resolved = registry.hook.resolve_call(request=request)
    if inspect.isawaitable(resolved):
        resolved = await resolved
    return request if resolved is None else resolved


def plan_call(
    snapshot: CatalogSnapshot,
    request: CallRequest,
    registry: Registry,
    *,
    resolved: bool = False,
) -> CallPlan:
    """Decide everything about a call before any I/O. ``resolved``: the request already went
    through `resolve_request` (async callers); otherwise plugins are asked here, and one
    that needs to await cannot be served from this synchronous path."""
    if not resolved:
        answer = registry.hook.resolve_call(request=request)
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()
            raise CallSetupError(
                "a resolve_call plugin answers asynchronously (e.g. a config endpoint); "
                "this command resolves calls synchronously: run the call through a server"
            )
        if answer is not None:
            request = answer
    bot = snapshot.get(request.bot)
    variables = _variables(bot, request)
    providers = _providers(bot, request, registry)
    tools = tuple(
        ResolvedTool(tool.name, registry.tool(tool.binding.use), tool.options) for tool in bot.tools
    )
    context = _template_context(bot, request, variables)
    prompt = _render(bot, request, context, snapshot)
    greeting_mode = (request.overrides.prompt and request.overrides.prompt.greeting_mode) or (
        bot.bot.prompt.greeting_mode
    )
    return CallPlan(
        request,
        bot,
        variables,
        prompt,
        greeting_mode,
        providers,
        tools,
        lines=_ending_lines(bot, context),
        outside_hours=None if request.overrides.ignore_schedule else _closed_now(bot),
    )


def _ending_lines(bot: CompiledBot, context: Mapping[str, Any]) -> EndingLines:
    def line(key: str) -> str:
        template = bot.templates.get(key)
        return _render_one(key, template, context).strip() if template is not None else ""

    reminders = len(bot.bot.limits.silence_reminders)
    return EndingLines(
        silence_reminders=tuple(line(f"limits.silence_reminders[{i}]") for i in range(reminders)),
        timeout=line("limits.max_duration_message"),
        apology=line("limits.error_message"),
        closed=line("schedule.closed_message"),
        voicemail=line("voicemail.message"),
    )


def _closed_now(bot: CompiledBot) -> str | None:
    schedule = bot.bot.schedule
    now = dt.datetime.now(dt.timezone.utc)
    if schedule is None or schedule.is_open(now):
        return None
    local = now.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    return f"outside opening hours ({local:%a %H:%M} {schedule.timezone})"


def _variables(bot: CompiledBot, request: CallRequest) -> dict[str, Any]:
    missing = [name for name in bot.bot.required_variables() if name not in request.variables]
    if missing:
        raise CallSetupError(
            f"bot {bot.id!r} needs the variable(s) {', '.join(missing)} for every call "
            f"(pass them as call variables, e.g. --var {missing[0]}=...)"
        )
    return {**bot.bot.defaults(), **request.variables}


@functools.lru_cache(maxsize=64)
def _default_options(entry: ProviderEntry) -> BaseModel:
    """A default provider's options, validated once, not on every call."""
    return entry.options.model_validate({})


def _providers(
    bot: CompiledBot, request: CallRequest, registry: Registry
) -> dict[str, ResolvedProvider]:
    providers: dict[str, ResolvedProvider] = {}
    problems: list[Problem] = []
    for kind in PROVIDER_KINDS:
        config = getattr(bot.bot, kind)
        override = getattr(request.overrides, kind)
        if override is None:
            if config is not None:
                providers[kind] = ResolvedProvider(
                    registry.provider(kind, config.provider), bot.provider_options[kind]
                )
            elif (kind, OFFLINE_DEFAULTS.get(kind)) in registry.providers:
                entry = registry.providers[(kind, OFFLINE_DEFAULTS[kind])]
                providers[kind] = ResolvedProvider(entry, _default_options(entry))
            continue
        override = dict(override)
        name = override.pop("provider", None) or (config.provider if config else None)
        if name is None:
            problems.append(
                Problem(
                    None,
                    f"an override needs `provider` (the bot has no [{kind}] table)",
                    key=f"overrides.{kind}",
                )
            )
            continue
        options = (
            override
            if (config is None or name != config.provider)
            else {**config.options(), **override}
        )
        validated = validate_provider_options(
            registry, kind, name, options, None, problems, key_prefix="overrides."
        )
        if validated is not None:
            providers[kind] = ResolvedProvider(registry.provider(kind, name), validated)
    voicemail = bot.bot.voicemail
    if voicemail is not None and voicemail.llm is not None:
        providers["voicemail.llm"] = ResolvedProvider(
            registry.provider("llm", voicemail.llm.provider),
            bot.provider_options["voicemail.llm"],
        )
    if problems:
        raise CallSetupError(
            "invalid per-call overrides:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return providers


def _template_context(
    bot: CompiledBot, request: CallRequest, variables: Mapping[str, Any]
) -> dict[str, Any]:
    call = {
        "session_id": request.session_id,
        "transport": request.transport,
        "caller": request.caller,
        "callee": request.callee,
        "now": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return {**variables, "bot": bot.bot_info(), "call": call}


def _render(
    bot: CompiledBot,
    request: CallRequest,
    context: Mapping[str, Any],
    snapshot: CatalogSnapshot,
) -> RenderedPrompt:
    info = bot.bot_info()
    prompt_overrides = request.overrides.prompt
    static = bot.static_prompt
    per_call_template, greeting_template = bot.context, bot.greeting
    if prompt_overrides is not None:
        if prompt_overrides.system is not None:
            static = _render_one(
                "overrides.prompt.system",
                _compile_override(snapshot, prompt_overrides.system),
                {"bot": info},
            )
        if prompt_overrides.context is not None:
            per_call_template = _compile_override(snapshot, prompt_overrides.context)
        if prompt_overrides.greeting is not None:
            greeting_template = _compile_override(snapshot, prompt_overrides.greeting)
    return RenderedPrompt(
        static=static,
        per_call=_render_one("prompt.context", per_call_template, context).strip(),
        greeting=_render_one("prompt.greeting", greeting_template, context).strip(),
    )


def _compile_override(snapshot: CatalogSnapshot, text: str) -> PromptTemplate:
    if snapshot.environment is None:
        raise CallSetupError("prompt overrides need a catalog loaded from a directory")
    try:
        return snapshot.environment.load_inline(text)
    except TemplateFailure as failure:
        raise CallSetupError(f"prompt override: {failure.message}") from None


def _render_one(key: str, template: PromptTemplate, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        raise CallSetupError(f"{key}: {exc.message}; pass it as a call variable") from None
    except (jinja2.TemplateError, ValidationError) as exc:
        raise CallSetupError(f"{key}: cannot render: {exc}") from None
