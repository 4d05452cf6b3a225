"""Resolve a call: which bot version, which variables, which providers and options, which
tools, and the rendered prompts. Pure Python and fast; nothing here touches livekit."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from pydantic import ValidationError

from runtime.call import CallContext, CallRequest, RenderedPrompt
from runtime.call_defaults import (
    NO_LINES,
    CallDefaults,
    EndingLines,
    ResolvedProvider,
    ResolvedTool,
    call_defaults,
)
from runtime.catalog import CatalogSnapshot
from runtime.compiler import CompiledBot, validate_provider_options
from runtime.errors import CallSetupError, Problem
from runtime.registry import PROVIDER_KINDS, Registry
from runtime.templates import PromptTemplate, TemplateFailure

__all__ = ["CallPlan", "EndingLines", "ResolvedProvider", "ResolvedTool", "plan_call"]


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
    lines: EndingLines = NO_LINES
    outside_hours: str | None = None  # set: why the bot's schedule is closed right now
    # what this call's templates read (variables, `bot`, `call`): flow steps render with it
    template_context: Mapping[str, Any] = field(default_factory=dict)
    rejected: str | None = None  # set: why per-call config refused the call

    def new_context(self) -> CallContext:
        return CallContext(
            request=self.request,
            bot=self.bot,
            variables=dict(self.variables),
            prompt=self.prompt,
            provider_kinds=frozenset(self.providers),
            captured=dict(self.bot.flow.defaults) if self.bot.flow is not None else {},
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
    if not resolved and registry.hook.resolve_call.get_hookimpls():
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
    defaults = call_defaults(bot, registry)
    variables = _variables(bot, defaults, request)
    overrides = request.overrides
    providers = _providers(bot, defaults, request, registry)
    now = dt.datetime.now(dt.timezone.utc)
    context = _template_context(defaults, request, variables, now)
    prompt = _render(bot, request, context, snapshot)
    greeting_mode = (overrides.prompt and overrides.prompt.greeting_mode) or (
        bot.bot.prompt.greeting_mode
    )
    outside_hours = None if overrides.ignore_schedule else _closed_at(bot, defaults, now)
    return CallPlan(
        request,
        bot,
        variables,
        prompt,
        greeting_mode,
        providers,
        defaults.tools,
        lines=_ending_lines(bot, defaults, context, request, closed=outside_hours is not None),
        outside_hours=outside_hours,
        template_context=context,
    )


def _ending_lines(
    bot: CompiledBot,
    defaults: CallDefaults,
    context: Mapping[str, Any],
    request: CallRequest,
    *,
    closed: bool,
) -> EndingLines:
    """The lines this call may say. Plain text comes from the version's defaults; a line
    only one kind of call says (closed, voicemail) is rendered only for that kind."""
    voicemail = bot.bot.voicemail
    leaves_message = request.direction == "outbound" and voicemail is not None
    if defaults.plain_lines is not None and not (closed or leaves_message):
        return defaults.plain_lines  # nothing to render: the version's own lines

    def line(key: str, text: str | PromptTemplate | None) -> str:
        if text is None or isinstance(text, str):
            return text or ""
        return _render_one(key, text, context).strip()

    def watchdog_line(key: str) -> str:
        return line(key, defaults.watchdog_lines[key])

    def template_line(key: str) -> str:
        return line(key, bot.templates.get(key))

    return EndingLines(
        silence_reminders=tuple(
            line(f"limits.silence_reminders[{i}]", reminder)
            for i, reminder in enumerate(defaults.reminders)
        ),
        timeout=watchdog_line("limits.max_duration_message"),
        apology=watchdog_line("limits.error_message"),
        closed=template_line("schedule.closed_message") if closed else "",
        voicemail=template_line("voicemail.message") if leaves_message else "",
    )


def _closed_at(bot: CompiledBot, defaults: CallDefaults, now: dt.datetime) -> str | None:
    hours = defaults.opening_hours
    if hours is None:
        return None
    local = now.astimezone(hours.zone)
    if hours.open_at(local):
        return None
    return f"outside opening hours ({local:%a %H:%M} {hours.zone.key})"


def _variables(bot: CompiledBot, defaults: CallDefaults, request: CallRequest) -> dict[str, Any]:
    missing = [name for name in defaults.required if name not in request.variables]
    if missing:
        raise CallSetupError(
            f"bot {bot.id!r} needs the variable(s) {', '.join(missing)} for every call "
            f"(pass them as call variables, e.g. --var {missing[0]}=...)"
        )
    return {**defaults.variables, **request.variables}


def _providers(
    bot: CompiledBot, defaults: CallDefaults, request: CallRequest, registry: Registry
) -> Mapping[str, ResolvedProvider]:
    """The bot's providers with this call's overrides applied (each one validated)."""
    overridden = [kind for kind in PROVIDER_KINDS if getattr(request.overrides, kind) is not None]
    if not overridden:
        return defaults.providers
    providers = dict(defaults.providers)
    problems: list[Problem] = []
    for kind in overridden:
        config = getattr(bot.bot, kind)
        override = dict(getattr(request.overrides, kind))
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
    if problems:
        raise CallSetupError(
            "invalid per-call overrides:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return providers


def _template_context(
    defaults: CallDefaults, request: CallRequest, variables: Mapping[str, Any], now: dt.datetime
) -> dict[str, Any]:
    call = {
        "session_id": request.session_id,
        "transport": request.transport,
        "caller": request.caller,
        "callee": request.callee,
        "now": now.isoformat(timespec="seconds"),
    }
    # a copy: the sandbox lets a template call dict methods, and `info` is shared
    return {**variables, "bot": dict(defaults.info), "call": call}


def _render(
    bot: CompiledBot,
    request: CallRequest,
    context: Mapping[str, Any],
    snapshot: CatalogSnapshot,
) -> RenderedPrompt:
    prompt_overrides = request.overrides.prompt
    static = bot.static_prompt
    per_call_template, greeting_template = bot.context, bot.greeting
    if prompt_overrides is not None:
        if prompt_overrides.system is not None:
            static = _render_one(
                "overrides.prompt.system",
                _compile_override(snapshot, prompt_overrides.system),
                {"bot": bot.bot_info()},
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
