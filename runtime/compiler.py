"""Compile one bot file: parse TOML, validate the schema, the providers' and tools' options,
the templates and the disposition expressions, and compute the bot version.

Every problem found is collected (not just the first), each naming the file, the key path,
what is wrong and how to fix it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from pydantic import BaseModel, ValidationError

from runtime import toml_parser
from runtime.dispositions import BUILTIN_NAMES, CompiledRule, rule_order
from runtime.errors import CallSetupError, Problem, UnknownName, suggest
from runtime.flow.captures import CAPTURED
from runtime.flow.compile import (
    REMEMBER_TOOL,
    STEP,
    CompiledFlow,
    checked_expression,
    compile_flow,
)
from runtime.record import RECORD_FIELDS
from runtime.registry import PROVIDER_KINDS, Registry
from runtime.schema import Bot, ToolBinding
from runtime.templates import PromptEnvironment, PromptTemplate, TemplateFailure
from runtime.toml_problems import located_problem, toml_problem, with_positions

T = TypeVar("T")
# names every per-call template may use besides the bot's variables
CALL_NAMES = frozenset({"bot", "call", CAPTURED, STEP})


@dataclass(frozen=True)
class CompiledTool:
    binding: ToolBinding
    name: str  # the name the LLM sees
    options: BaseModel
    key: str = ""  # where it is bound: "tools[2]"
    # captured values its result sets: (name, compiled Jinja expression over `result`)
    captures: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class CompiledBot:
    """A validated bot with its templates compiled: immutable, shared by every call of
    this version."""

    id: str
    path: Path
    bot: Bot
    version: str
    system: PromptTemplate
    context: PromptTemplate
    greeting: PromptTemplate
    # by provider kind ("llm"), plus "analysis.llm" / "qc.llm" when the bot has those tables
    provider_options: Mapping[str, BaseModel]
    tools: tuple[CompiledTool, ...]
    dispositions: tuple[CompiledRule, ...]  # the bot's rules, then the built-ins, in order
    templates: Mapping[str, PromptTemplate] = field(default_factory=dict)  # key path -> template
    dependencies: frozenset[Path] = frozenset()  # template files this version was built from
    flow: CompiledFlow | None = None  # None: the whole call is one step, as without [flow]

    def bot_info(self) -> dict[str, Any]:
        return {"id": self.id, "description": self.bot.description, "language": self.bot.language}

    def derived(self, key: str, compute: Callable[[CompiledBot], T]) -> T:
        """A value worked out from this version once, on first use: a cache beside the
        frozen fields (as `functools.cached_property` keeps one), so a reload, which makes
        a new CompiledBot, starts afresh. Two threads computing it at once both get an
        equal value; the first stored wins."""
        cache: dict[str, Any] = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache.setdefault(key, compute(self))
        value: T = cache[key]
        return value

    @functools.cached_property
    def static_prompt(self) -> str:
        """The static system prompt, rendered once per bot version on first use."""
        try:
            return render_static(self.system, self.bot_info())
        except jinja2.TemplateError as exc:
            raise CallSetupError(f"{self.path}: prompt.system: cannot render: {exc}") from None


class BotCompiler:
    """Compiles bot files against one registry and one prompts/ environment."""

    def __init__(
        self,
        registry: Registry,
        prompts: PromptEnvironment,
        *,
        eager: bool = False,
        parsed: dict[Path, tuple[bytes, Bot]] | None = None,
    ) -> None:
        """``eager`` also renders the static prompt and generates every template's code now
        (what `dialplan validate` wants); otherwise that happens on a bot's first call.
        ``parsed`` remembers each file's parsed `Bot` with its exact bytes, so a reloading
        catalog recompiling a bot for a template change skips TOML and schema work."""
        self.registry = registry
        self.prompts = prompts
        self.eager = eager
        self.parsed = parsed

    def compile_file(self, path: Path) -> CompiledBot | list[Problem]:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return [Problem(path, f"cannot read the file: {exc.strerror}")]
        return self.compile_source(path, raw)

    def compile_source(self, path: Path, raw: bytes) -> CompiledBot | list[Problem]:
        result = self._compile_source(path, raw)
        if isinstance(result, list):  # located at their keys' lines (the parser keeps none)
            return with_positions(result, raw.decode("utf-8", errors="replace"), path)
        return result

    def _compile_source(self, path: Path, raw: bytes) -> CompiledBot | list[Problem]:
        known = self.parsed.get(path) if self.parsed is not None else None
        if known is not None and known[0] == raw:  # frozen models: safe to share
            return _BotCheck(self, path, raw, known[1]).run()
        try:
            data = toml_parser.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return [Problem(path, "the file is not UTF-8 text")]
        except toml_parser.TOMLDecodeError as exc:
            return [toml_problem(path, exc)]
        data.setdefault("id", path.stem)
        try:
            bot = Bot.model_validate(data)
        except ValidationError as exc:
            return [located_problem(path, "", Bot, error) for error in exc.errors()]
        if self.parsed is not None:
            self.parsed[path] = (raw, bot)
        return _BotCheck(self, path, raw, bot).run()


class _BotCheck:
    """The checks that need the registry and the templates, for one parsed bot."""

    def __init__(self, compiler: BotCompiler, path: Path, raw: bytes, bot: Bot) -> None:
        self.registry = compiler.registry
        self.prompts = compiler.prompts
        self.eager = compiler.eager
        self.path = path
        self.raw = raw
        self.bot = bot
        self.problems: list[Problem] = []
        self.templates: dict[str, PromptTemplate] = {}

    def problem(self, key: str, message: str, fix: str = "", **where: Any) -> None:
        file = where.pop("file", None) or self.path
        self.problems.append(Problem(file, message, key=key, fix=fix, **where))

    def run(self) -> CompiledBot | list[Problem]:
        bot = self.bot
        assert bot.id is not None
        provider_options = self.check_providers()
        provider_options.update(self.check_post_call_llms())
        tools = self.check_tools()
        self.check_tool_references(provider_options, tools)
        self.check_step_references(provider_options)
        flow = compile_flow(
            self, {tool.name: frozenset(n for n, _ in tool.captures) for tool in tools}
        )
        self.check_variables_used(provider_options, tools)
        variable_names = set(bot.variables)
        system = self.template("prompt.system", bot.prompt.system, allowed=frozenset({"bot"}))
        context = self.template("prompt.context", bot.prompt.context, allowed=variable_names)
        greeting = self.template("prompt.greeting", bot.prompt.greeting, allowed=variable_names)
        for index, reminder in enumerate(bot.limits.silence_reminders):
            self.template(f"limits.silence_reminders[{index}]", reminder, allowed=variable_names)
        for key in ("max_duration_message", "error_message"):
            self.template(f"limits.{key}", getattr(bot.limits, key), allowed=variable_names)
        if bot.schedule and bot.schedule.closed_message:
            self.template("schedule.closed_message", bot.schedule.closed_message, variable_names)
        if bot.voicemail and bot.voicemail.message:
            self.template("voicemail.message", bot.voicemail.message, variable_names)
        record_names = variable_names | RECORD_FIELDS | {"record", "fields", "rubric"}
        if bot.analysis:
            self.template("analysis.prompt", bot.analysis.prompt, allowed=record_names)
        if bot.qc:
            self.template("qc.prompt", bot.qc.prompt, allowed=record_names)
        dispositions = self.check_dispositions()
        if self.eager and not self.problems:
            self.compile_now(system)
        if self.problems:
            return self.problems
        assert system and context and greeting
        dependencies = frozenset(p for t in self.templates.values() for p in t.dependencies)
        return CompiledBot(
            id=bot.id,
            path=self.path,
            bot=bot,
            version=self.version(dependencies),
            system=system,
            context=context,
            greeting=greeting,
            provider_options=provider_options,
            tools=tools,
            dispositions=dispositions,
            templates=self.templates,
            dependencies=dependencies,
            flow=flow,
        )

    def check_providers(self) -> dict[str, BaseModel]:
        validated: dict[str, BaseModel] = {}
        for kind in PROVIDER_KINDS:
            config = getattr(self.bot, kind)
            if config is None:
                continue
            options = validate_provider_options(
                self.registry, kind, config.provider, config.options(), self.path, self.problems
            )
            if options is not None:
                validated[kind] = options
        return validated

    def check_tools(self) -> tuple[CompiledTool, ...]:
        tools: list[CompiledTool] = []
        seen: dict[str, int] = {}
        for index, binding in enumerate(self.bot.tools):
            key = f"tools[{index}]"
            try:
                entry = self.registry.tool(binding.use)
            except UnknownName as exc:
                self.problem(f"{key}.use", f"unknown tool {binding.use!r}", exc.fix)
                continue
            try:
                options = entry.options.model_validate(binding.options())
            except ValidationError as exc:
                for error in exc.errors():
                    self.problems.append(located_problem(self.path, key, entry.options, error))
                continue
            name = str(getattr(options, "name", None) or binding.use)
            if name in seen:
                self.problem(
                    f"{key}.name",
                    f"tool name {name!r} is already used by tools[{seen[name]}]",
                    "give each tool a distinct `name`",
                )
                continue
            seen[name] = index
            captures = self.tool_captures(key, binding)
            tools.append(CompiledTool(binding, name, options, key, captures))
        return tuple(tools)

    def tool_captures(self, key: str, binding: ToolBinding) -> tuple[tuple[str, Any], ...]:
        """A tool's `capture`: Jinja expressions over its `result` (and the call's values),
        their code generated on first use unless `eager` (see `checked_expression`)."""
        readable = set(self.bot.variables) | {"result", CAPTURED, STEP}
        captures: list[tuple[str, Any]] = []
        for name, text in binding.capture.items():
            expression = checked_expression(
                self,
                f"{key}.capture.{name}",
                text,
                readable,
                what="capture expression",
                hint="write a Jinja expression over the tool's answer `result`, "
                "e.g. result.reference",
                names_hint="read the tool's answer as `result`, e.g. result.reference",
            )
            if expression is not None:
                captures.append((name, expression))
        return tuple(captures)

    def check_tool_references(
        self, provider_options: dict[str, BaseModel], tools: tuple[CompiledTool, ...]
    ) -> None:
        """Providers that call tools by name (like `rules`) must name tools the bot binds."""
        # every binding counts, even one that failed (its own problem is reported already)
        names = sorted(
            str(binding.options().get("name") or binding.use) for binding in self.bot.tools
        )
        if any(step.capture for step in self.bot.steps.values()):
            names.append(REMEMBER_TOOL)  # a flow tool: offered where a step captures
        for kind, options in provider_options.items():
            referenced = getattr(options, "referenced_tools", None)
            if not callable(referenced):
                continue
            for key, name in referenced().items():
                if name not in names:
                    self.problem(
                        f"{kind}.{key}",
                        f"calls tool {name!r}, which this bot does not bind",
                        "add it under [[tools]]; " + suggest(name, names, what="bound tools"),
                    )

    def check_step_references(self, provider_options: dict[str, BaseModel]) -> None:
        """Providers that script a flow (the `rules` LLM's `steps` and `goto`) must name
        steps the bot has, and a `goto` must be a `when` transition of the steps it is
        active in."""
        steps = self.bot.steps
        for kind, options in provider_options.items():
            referenced = getattr(options, "referenced_steps", None)
            if not callable(referenced):
                continue
            for key, (scope, goto) in referenced().items():
                named = [(f"{key}.steps[{i}]", name) for i, name in enumerate(scope)]
                if goto is not None:
                    named.append((f"{key}.goto", goto))
                for name_key, name in named:
                    if name not in steps:
                        self.problem(
                            f"{kind}.{name_key}",
                            f"names step {name!r}, which this bot does not have",
                            suggest(name, list(steps), what="steps")
                            if steps
                            else "declare the flow's steps as [steps.<name>] tables",
                        )
                if goto is None or goto not in steps:
                    continue
                sources = [s for s in (scope or list(steps)) if s in steps]
                with_way = [
                    s
                    for s in sources
                    if any(t.to == goto and t.when is not None for t in steps[s].next)
                ]
                # unknown steps in the scope are reported above
                lacking = [s for s in sources if s not in with_way] if scope else []
                if lacking or not with_way:
                    if not lacking:
                        where = "no step has a"
                    elif len(lacking) == 1:
                        where = f"step {lacking[0]!r} has no"
                    else:
                        where = f"steps {', '.join(map(repr, lacking))} have no"
                    self.problem(
                        f"{kind}.{key}.goto",
                        f"goes to step {goto!r}, but {where} `when` transition to it",
                        f"add [[steps.<step>.next]] with to = {goto!r} and `when`"
                        + (", or take those steps out of the rule's `steps`" if lacking else ""),
                    )

    def check_variables_used(
        self, provider_options: dict[str, BaseModel], tools: tuple[CompiledTool, ...]
    ) -> None:
        """Options whose templates read call variables (an HTTP tool's URL, a rules reply)
        may only read variables the bot declares. Plugins opt in with a
        ``variables_used() -> {option key: names}`` method on their options model."""
        declared = set(self.bot.variables)
        owners: list[tuple[str, BaseModel]] = [*provider_options.items()]
        owners += [(tool.key, tool.options) for tool in tools]
        for prefix, options in owners:
            used = getattr(options, "variables_used", None)
            if not callable(used):
                continue
            for key, names in used().items():
                for name in sorted(set(names) - declared - CALL_NAMES):
                    self.problem(
                        f"{prefix}.{key}",
                        f"uses undefined variable `{name}`",
                        "declare it under [variables]; "
                        + suggest(name, sorted(declared), what="declared"),
                    )

    def template(
        self, key: str, value: str, allowed: frozenset[str] | set[str]
    ) -> PromptTemplate | None:
        try:
            template = self.prompts.load(value)
        except TemplateFailure as failure:
            self.problem(key, failure.message, failure.fix, file=failure.file, line=failure.line)
            return None
        static = key == "prompt.system"
        env_globals = self.prompts.env.globals
        unknown = [  # a template reads few names: test them, not build a set of all known
            name
            for name in template.names
            if name not in allowed
            and (static or name not in CALL_NAMES)
            and name not in env_globals
        ]
        for name in sorted(unknown):
            if static:
                self.problem(
                    key,
                    f"uses `{name}`, but the static system prompt may only use "
                    "`bot.*` (it is identical for every call so providers can cache it)",
                    "move per-call details to `prompt.context`",
                )
            else:
                self.problem(
                    key,
                    f"uses undefined variable `{name}`",
                    "declare it under [variables]; "
                    + suggest(name, sorted(allowed - CALL_NAMES), what="declared"),
                )
        self.templates[key] = template
        return template

    def compile_now(self, system: PromptTemplate | None) -> None:
        assert self.bot.id is not None
        info = {
            "id": self.bot.id,
            "description": self.bot.description,
            "language": self.bot.language,
        }
        for key, template in self.templates.items():
            try:
                if key == "prompt.system":
                    render_static(template, info)
                else:
                    self.prompts.check_compiles(template)
            except jinja2.TemplateError as exc:
                self.problem(key, f"cannot compile: {exc}")

    def check_post_call_llms(self) -> dict[str, BaseModel]:
        """`[analysis.llm]` and `[qc.llm]`: validated like `[llm]`, keyed by their table."""
        validated: dict[str, BaseModel] = {}
        for section in ("analysis", "qc", "voicemail"):
            config = getattr(self.bot, section)
            if config is None or config.llm is None:
                continue
            options = validate_provider_options(
                self.registry,
                "llm",
                config.llm.provider,
                config.llm.options(),
                self.path,
                self.problems,
                key_prefix=f"{section}.",
            )
            if options is not None:
                validated[f"{section}.llm"] = options
        return validated

    def check_dispositions(self) -> tuple[CompiledRule, ...]:
        """The bot's rules and the built-ins it keeps, compiled in evaluation order."""
        known = RECORD_FIELDS | set(self.bot.variables) | {"variables", "record"}
        position = {rule.name: index for index, rule in enumerate(self.bot.dispositions)}
        for rule in self.bot.dispositions:
            if not rule.enabled and rule.when is None and rule.name not in BUILTIN_NAMES:
                self.problem(
                    f"dispositions[{position[rule.name]}].name",
                    f"there is no built-in rule {rule.name!r} to disable",
                    suggest(rule.name, list(BUILTIN_NAMES), what="built-in rules"),
                )
        compiled: list[CompiledRule] = []
        for rule in rule_order(self.bot.dispositions):
            assert rule.when is not None  # enabled rules have one (schema)
            index = position.get(rule.name)
            if index is None:  # a built-in: known good
                expression, _ = self.prompts.expression(rule.when)
                compiled.append(CompiledRule(rule.name, expression, rule.skip_analysis, {}, True))
                continue
            key = f"dispositions[{index}]"
            try:
                expression, names = self.prompts.expression(rule.when)
            except jinja2.TemplateSyntaxError as exc:
                self.problem(f"{key}.when", f"invalid expression {rule.when!r}: {exc.message}")
                continue
            for name in sorted(names - known):
                self.problem(
                    f"{key}.when",
                    f"unknown name `{name}` in {rule.when!r}",
                    suggest(name, sorted(RECORD_FIELDS), what="call record fields"),
                )
            values = self.disposition_values(key, rule.set, known)
            compiled.append(CompiledRule(rule.name, expression, rule.skip_analysis, values))
        return tuple(compiled)

    def disposition_values(
        self, key: str, values: Mapping[str, Any], known: frozenset[str]
    ) -> dict[str, Any]:
        """A rule's `set`: string values become templates over the record."""
        compiled: dict[str, Any] = {}
        for name, value in values.items():
            if not isinstance(value, str):
                compiled[name] = value
                continue
            value_key = f"{key}.set.{name}"
            try:
                template = self.prompts.load_inline(value)
            except TemplateFailure as failure:
                self.problem(value_key, failure.message, failure.fix, line=failure.line)
                continue
            for unknown in sorted(template.names - known - set(self.prompts.env.globals)):
                self.problem(
                    value_key,
                    f"unknown name `{unknown}` in {value!r}",
                    suggest(unknown, sorted(RECORD_FIELDS), what="call record fields"),
                )
            self.templates[value_key] = template
            compiled[name] = template
        return compiled

    def version(self, dependencies: frozenset[Path]) -> str:
        digest = hashlib.sha256(self.raw)
        for path in sorted(dependencies):
            digest.update(str(path.name).encode())
            digest.update(self.prompts.file_digests.get(path, "").encode())
        return digest.hexdigest()[:12]


def render_static(system: PromptTemplate, bot_info: dict[str, Any]) -> str:
    return system.render({"bot": bot_info}).strip()


def validate_provider_options(
    registry: Registry,
    kind: str,
    provider: str,
    options: dict[str, Any],
    path: Path | None,
    problems: list[Problem],
    key_prefix: str = "",
) -> BaseModel | None:
    """Validate a provider table against its plugin's options model (also used for
    per-call overrides)."""
    key = f"{key_prefix}{kind}"
    try:
        entry = registry.provider(kind, provider)
    except UnknownName as exc:
        problems.append(
            Problem(
                path,
                f"unknown {kind.upper()} provider {provider!r}",
                key=f"{key}.provider",
                fix=exc.fix,
            )
        )
        return None
    try:
        return entry.options.model_validate(options)
    except ValidationError as exc:
        problems.extend(located_problem(path, key, entry.options, e) for e in exc.errors())
        return None
