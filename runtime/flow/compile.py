"""A flow checked as a graph and prepared once per bot version.

Every mistake is a located `Problem` with a fix: unknown or unreachable steps, no start,
dead ends, tools the bot does not bind, conditions that do not parse, captures declared
with two types, and templates that read a captured value some path into their step does
not provide. Cycles are fine: a caller may go back to an earlier step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jinja2

from runtime.errors import suggest
from runtime.flow.captures import (
    CAPTURED,
    NO_READS,
    CapturedReads,
    LazyExpression,
    compiled_expression,
    conjunction_reads,
    expression_facts,
    generated_alike,
    mark_generated,
    template_reads,
)
from runtime.flow.schema import ANY_TOOL, CaptureSpec, ContextMode, Step, TransitionKind
from runtime.schema import Bot
from runtime.templates import PromptEnvironment, PromptTemplate

# tools that end the call or hand it over: a step offering one is no dead end
ENDING_TOOLS = frozenset({"end_call", "transfer_call"})
REMEMBER_TOOL = "remember"  # the tool that records a step's own `capture`
STEP = "step"  # templates may read the current step's name


@dataclass(frozen=True)
class CompiledTransition:
    key: str  # where it is written: "steps.triage.next[0]"
    source: str  # the step it leaves
    to: str
    kind: TransitionKind
    tool: str | None  # llm: the tool the LLM calls; after/error: the bound tool watched
    description: str  # the LLM's `when`, or the condition, for people and the graph
    condition: Any | None = None  # a compiled Jinja expression
    condition_text: str | None = None
    captures: Mapping[str, CaptureSpec] = field(default_factory=dict)
    context: ContextMode = "keep"  # what the next step remembers


@dataclass(frozen=True)
class CompiledStep:
    name: str
    instructions: PromptTemplate | None
    say: PromptTemplate | None
    then: str | None
    then_is_step: bool
    tools: tuple[str, ...]  # bound tools offered: the step's own, then the global ones
    captures: Mapping[str, CaptureSpec]  # recorded with the `remember` tool
    transitions: tuple[CompiledTransition, ...]
    context: ContextMode = "keep"  # what it remembers when entered by `then`

    @property
    def speaks_only(self) -> bool:
        """A fixed line and a next move: the LLM is never asked in this step."""
        return self.then is not None

    def taken(self, kind: TransitionKind) -> tuple[CompiledTransition, ...]:
        return tuple(t for t in self.transitions if t.kind == kind)


@dataclass(frozen=True)
class CompiledFlow:
    start: str
    steps: Mapping[str, CompiledStep]
    summary: PromptTemplate | None
    captures: Mapping[str, CaptureSpec]  # every capture declared, by name
    defaults: Mapping[str, Any]  # captured values a call starts with
    # values only a tool's `capture` sets (declared by no step or transition)
    tool_captures: frozenset[str] = frozenset()

    def conditions_context(self, captured: Mapping[str, Any]) -> dict[str, Any]:
        """`captured` as conditions see it: a value the flow declares or a tool captures,
        not captured yet, is None, so `captured.name and captured.day` is simply false
        until both are known."""
        return {**dict.fromkeys(self.captures), **dict.fromkeys(self.tool_captures), **captured}


@dataclass(frozen=True)
class Edge:
    """A way from one step to another, and the captured values taking it guarantees."""

    source: str
    to: str
    key: str  # where it is written: "steps.triage.next[0]", "steps.emergency.then"
    gives: frozenset[str]


class FlowChecker(Protocol):
    """What the bot compiler lends the flow checks (see `runtime.compiler._BotCheck`)."""

    bot: Bot
    prompts: PromptEnvironment
    eager: bool  # generate code now (`dialplan validate`), not on first use

    def problem(self, key: str, message: str, fix: str = "", **where: Any) -> None: ...

    def template(
        self, key: str, value: str, allowed: frozenset[str] | set[str]
    ) -> PromptTemplate | None: ...


def compile_flow(
    check: FlowChecker, tool_captures: Mapping[str, frozenset[str]]
) -> CompiledFlow | None:
    """The bot's flow, or None when it has none (or problems were reported).
    ``tool_captures``: the values each bound tool sets from its result, by tool name."""
    bot = check.bot
    if bot.flow is None:
        return None
    return _FlowCompiler(check, tool_captures).run()


def _type_key(spec: CaptureSpec) -> Any:
    """A capture's type, comparable: allowed values in any order are one type."""
    return frozenset(spec.type) if isinstance(spec.type, list) else spec.type


def checked_expression(
    check: FlowChecker,
    key: str,
    text: str,
    names: set[str],
    *,
    what: str,
    hint: str = "write a Jinja expression",
    names_hint: str = "",
) -> Any | None:
    """A condition or a tool's `capture` expression, checked against the ``names`` it may
    read: its syntax, filters and tests now; its code too when ``check.eager``, else on
    its first evaluation (`LazyExpression`). None (and a problem reported) if it is bad.
    ``hint`` is the fix of a syntax error, ``names_hint`` starts that of an unknown name."""
    env = check.prompts.env
    try:
        facts = expression_facts(env, text)
    except jinja2.TemplateSyntaxError as exc:
        check.problem(key, f"invalid {what} {text!r}: {exc.message}", hint)
        return None
    bad = False
    used = (("filter", facts.filters, env.filters), ("test", facts.tests, env.tests))
    for kind, names_used, known in used:
        for name in names_used:
            if name not in known:
                bad = True
                check.problem(
                    key,
                    f"invalid {what} {text!r}: no {kind} named {name!r}",
                    suggest(name, sorted(known), what=f"available {kind}s"),
                )
    for name in sorted(n for n in facts.names - names if n not in env.globals):
        bad = True
        check.problem(
            key,
            f"unknown name `{name}` in {text!r}",
            (f"{names_hint}; " if names_hint else "")
            + suggest(name, sorted(names), what=f"names a {what} can read"),
        )
    if bad:
        return None
    if not check.eager or generated_alike(env, facts):
        # a text of the same shape (numbers aside) already generated its code: this one
        # generates the same, so validating needs not (it runs on first use)
        return LazyExpression(env, text)
    try:
        compiled = compiled_expression(env, text)
    except jinja2.TemplateError as exc:  # what only generating its code finds
        check.problem(key, f"invalid {what} {text!r}: {exc}", hint)
        return None
    mark_generated(env, facts)
    return compiled


class _FlowCompiler:
    def __init__(self, check: FlowChecker, tool_captures: Mapping[str, frozenset[str]]) -> None:
        self.check = check
        self.bot = check.bot
        assert self.bot.flow is not None
        self.flow = self.bot.flow
        self.env = check.prompts.env
        self.tool_captures = tool_captures
        self.bound = sorted(self._bound_names())
        self.bound_set = frozenset(self.bound)
        # what a condition may read: alone, and `after` a tool (its `result` too)
        self.condition_names = set(self.bot.variables) | {CAPTURED, STEP}
        self.after_names = self.condition_names | {"result"}
        self.ending = {
            str(b.options().get("name") or b.use) for b in self.bot.tools if b.use in ENDING_TOOLS
        }
        self.failed = False

    def problem(self, key: str, message: str, fix: str = "") -> None:
        self.failed = True
        self.check.problem(key, message, fix)

    def _bound_names(self) -> set[str]:
        return {str(binding.options().get("name") or binding.use) for binding in self.bot.tools}

    def run(self) -> CompiledFlow | None:
        steps = self.bot.steps
        names = list(steps)
        if self.flow.start not in steps:
            self.problem(
                "flow.start",
                f"no step named {self.flow.start!r} to start in",
                suggest(self.flow.start, names, what="steps"),
            )
        self.check_tools("flow.global_tools", self.flow.global_tools)
        captures = self.declared_captures()
        defaults = {n: s.default for n, s in captures.items() if s.default is not None}
        allowed = set(self.bot.variables) | {CAPTURED, STEP}
        compiled: dict[str, CompiledStep] = {}
        reads: dict[str, dict[str, CapturedReads]] = {}
        for name, step in steps.items():
            compiled[name], reads[name] = self.compile_step(name, step, allowed)
        summary = None
        if self.flow.summary:
            summary = self.check.template("flow.summary", self.flow.summary, allowed)
        if self.failed:
            return None
        edges = self.edges(compiled)
        reachable = self.check_reachable(compiled, edges)
        self.check_dead_ends(compiled, reachable)
        self.check_reads(compiled, edges, reads, reachable, captures, defaults)
        if self.failed:
            return None
        tool_only = frozenset(self.tool_captures_all() - set(captures))
        return CompiledFlow(self.flow.start, compiled, summary, captures, defaults, tool_only)

    def check_tools(self, key: str, tools: list[str]) -> None:
        for index, tool in enumerate(tools):
            if tool not in self.bound_set:
                self.problem(
                    f"{key}[{index}]",
                    f"names tool {tool!r}, which this bot does not bind",
                    "add it under [[tools]]; " + suggest(tool, self.bound, what="bound tools"),
                )

    def declared_captures(self) -> dict[str, CaptureSpec]:
        """Every capture declared in the flow; one name declared twice must agree on its
        type (the record and dispositions read one value)."""
        found: dict[str, tuple[str, CaptureSpec]] = {}
        for step_name, step in self.bot.steps.items():
            declared = [(f"steps.{step_name}.capture", step.capture)]
            declared += [
                (f"steps.{step_name}.next[{i}].capture", t.capture) for i, t in enumerate(step.next)
            ]
            for key, specs in declared:
                for name, spec in specs.items():
                    first = found.get(name)
                    if first is None:
                        found[name] = (key, spec)
                    elif _type_key(first[1]) != _type_key(spec):
                        self.problem(
                            f"{key}.{name}",
                            f"captures {name!r} as {spec.type!r}, but {first[0]}.{name} "
                            f"captures it as {first[1].type!r}",
                            "give one value one type (or rename one of them)",
                        )
        return {name: spec for name, (_key, spec) in found.items()}

    def compile_step(
        self, name: str, step: Step, allowed: set[str]
    ) -> tuple[CompiledStep, dict[str, CapturedReads]]:
        key = f"steps.{name}"
        self.check_tools(f"{key}.tools", step.tools)
        tools = tuple(dict.fromkeys([*step.tools, *self.flow.global_tools]))
        reads: dict[str, CapturedReads] = {}
        instructions = say = None
        if step.instructions:
            instructions = self.check.template(f"{key}.instructions", step.instructions, allowed)
            reads[f"{key}.instructions"] = self.reads(instructions)
        if step.say:
            say = self.check.template(f"{key}.say", step.say, allowed)
            reads[f"{key}.say"] = self.reads(say)
        then_is_step = False
        if step.then is not None:
            then_is_step = step.then in self.bot.steps
            if not then_is_step and step.then not in self.bound_set:
                self.problem(
                    f"{key}.then",
                    f"{step.then!r} is neither a step nor a tool this bot binds",
                    suggest(step.then, [*self.bot.steps, *self.bound], what="steps and tools"),
                )
        if step.capture and REMEMBER_TOOL in tools:
            self.problem(
                f"{key}.capture",
                f"a step that captures values offers a tool named {REMEMBER_TOOL!r}, and "
                "so does a bound tool",
                f"rename the bound tool (its `name`) to something other than {REMEMBER_TOOL!r}",
            )
        llm_tools: dict[str, int] = {}  # the `when` transitions' tool names, first index
        transitions = tuple(
            self.compile_transition(name, step, index, tools, llm_tools)
            for index in range(len(step.next))
        )
        return (
            CompiledStep(
                name,
                instructions,
                say,
                step.then,
                then_is_step,
                tools,
                step.capture,
                transitions,
                step.context or self.flow.context,
            ),
            reads,
        )

    def compile_transition(
        self,
        source: str,
        step: Step,
        index: int,
        tools: tuple[str, ...],
        llm_tools: dict[str, int],
    ) -> CompiledTransition:
        transition = step.next[index]
        key = f"steps.{source}.next[{index}]"
        if transition.to not in self.bot.steps:
            self.problem(
                f"{key}.to",
                f"no step named {transition.to!r}",
                suggest(transition.to, list(self.bot.steps), what="steps"),
            )
        kind = transition.kind
        tool: str | None = None
        description = ""
        if kind == "llm":
            tool = transition.tool_name()
            description = transition.when or ""
            clash = llm_tools.setdefault(tool, index)
            user = None
            if clash != index:
                user = f"steps.{source}.next[{clash}]"
            elif tool in tools:
                user = f"the bound tool {tool!r}"
            elif tool == REMEMBER_TOOL and step.capture:
                user = f"the {REMEMBER_TOOL!r} tool of steps.{source}.capture"
            if user is not None:
                self.problem(
                    f"{key}.name" if transition.name else f"{key}.to",
                    f"the tool name {tool!r} is already used in step {source!r} by {user}",
                    "give this transition a distinct `name`, the tool the LLM calls to take it",
                )
        elif kind in ("after", "error"):
            tool = transition.after if kind == "after" else transition.on_error
            assert tool is not None
            field_name = "after" if kind == "after" else "on_error"
            if tool != ANY_TOOL or kind == "after":
                offered = (*tools, step.then) if step.then else tools
                self.check_watched_tool(f"{key}.{field_name}", tool, offered, source)
        condition = None
        if transition.condition is not None:
            names = self.after_names if kind == "after" else self.condition_names
            condition = self.condition(f"{key}.if", transition.condition, names)
            description = (
                f"after {tool}, if {transition.condition}"
                if kind == "after"
                else transition.condition
            )
        elif kind == "after":
            description = f"after {tool}"
        elif kind == "error":
            description = f"{tool} fails" if tool != ANY_TOOL else "a tool fails"
        target = self.bot.steps.get(transition.to)
        context = (
            transition.context
            or (target.context if target is not None else None)
            or self.flow.context
        )
        return CompiledTransition(
            key,
            source,
            transition.to,
            kind,
            tool,
            description,
            condition,
            transition.condition,
            transition.capture,
            context,
        )

    def check_watched_tool(
        self, key: str, tool: str, tools: tuple[str | None, ...], step: str
    ) -> None:
        if tool not in self.bound_set:
            self.problem(
                key,
                f"watches tool {tool!r}, which this bot does not bind",
                "add it under [[tools]]; " + suggest(tool, self.bound, what="bound tools"),
            )
        elif tool not in tools:
            self.problem(
                key,
                f"watches tool {tool!r}, which step {step!r} neither offers nor runs",
                f"add {tool!r} to steps.{step}.tools (or to flow.global_tools)",
            )

    def condition(self, key: str, text: str, names: set[str]) -> Any | None:
        compiled = checked_expression(self.check, key, text, names, what="condition")
        if compiled is None:
            self.failed = True
        return compiled

    def reads(self, template: PromptTemplate | None) -> CapturedReads:
        return NO_READS if template is None else template_reads(self.env, template)

    def edges(self, steps: Mapping[str, CompiledStep]) -> list[Edge]:
        """Every way between steps, with the captures taking it guarantees."""
        found: list[Edge] = []
        for step in steps.values():
            if step.then is not None and step.then_is_step:
                found.append(Edge(step.name, step.then, f"steps.{step.name}.then", frozenset()))
            for t in step.transitions:
                gives: frozenset[str] = frozenset()
                if t.kind == "llm":
                    gives = frozenset(n for n, s in t.captures.items() if s.required)
                elif t.kind == "after":
                    gives = self.tool_captures.get(t.tool or "", frozenset())
                if t.condition_text is not None and t.condition is not None:
                    # taken only when it holds: what its `and` chain reads is there
                    gives |= conjunction_reads(self.env, t.condition_text)
                found.append(Edge(step.name, t.to, t.key, gives))
        return found

    def check_reachable(self, steps: Mapping[str, CompiledStep], edges: list[Edge]) -> set[str]:
        following: dict[str, list[str]] = {}
        for edge in edges:
            following.setdefault(edge.source, []).append(edge.to)
        reachable = {self.flow.start}
        frontier = [self.flow.start]
        while frontier:
            for target in following.get(frontier.pop(), ()):
                if target not in reachable:
                    reachable.add(target)
                    frontier.append(target)
        for name in steps:
            if name not in reachable:
                self.problem(
                    f"steps.{name}",
                    f"step {name!r} is unreachable from the start step {self.flow.start!r}",
                    "add a transition to it (`to = " + repr(name) + "`) or remove the step",
                )
        return reachable

    def check_dead_ends(self, steps: Mapping[str, CompiledStep], reachable: set[str]) -> None:
        for name in steps:
            if name not in reachable:
                continue
            step = steps[name]
            # an `on_error` way is taken only when a tool fails: no way out when none does
            if step.then is not None or any(t.kind != "error" for t in step.transitions):
                continue
            if any(tool in self.ending for tool in step.tools):
                continue
            cause = (
                "its only transitions are taken when a tool fails"
                if step.transitions
                else "no transition"
            )
            self.problem(
                f"steps.{name}",
                f"step {name!r} has no way out: {cause}, and it can neither end nor "
                "transfer the call",
                "add a [[steps." + name + ".next]] transition, or offer end_call (in its "
                "`tools` or in flow.global_tools)",
            )

    def check_reads(
        self,
        steps: Mapping[str, CompiledStep],
        edges: list[Edge],
        reads: Mapping[str, Mapping[str, CapturedReads]],
        reachable: set[str],
        captures: Mapping[str, CaptureSpec],
        defaults: Mapping[str, Any],
    ) -> None:
        set_anywhere = set(captures) | self.tool_captures_all()
        checked = [
            (step_name, key, found)
            for step_name in steps
            if step_name in reachable
            for key, found in reads[step_name].items()
            if found.all
        ]
        # only values some template reads unguarded (and no default provides) are followed
        wanted = {n for _s, _k, found in checked for n in found.unguarded} & set_anywhere
        wanted -= set(defaults)
        guaranteed, witness = self.guaranteed(edges, reachable, wanted)
        for step_name, key, found in checked:
            for name in sorted(found.all - set_anywhere):
                self.problem(
                    key,
                    f"reads captured.{name}, which no transition, step or tool captures",
                    suggest(name, sorted(set_anywhere), what="captured values")
                    + "; declare it in a `capture` table",
                )
            for name in sorted(found.unguarded & wanted):
                if name not in guaranteed(step_name):
                    self.problem(
                        key,
                        f"reads captured.{name}, which is not captured on every path into "
                        f"step {step_name!r} ({witness(step_name, name)})",
                        "capture it (required) on the way in, give it a `default`, "
                        f"or write `captured.{name} | default('')`",
                    )

    def guaranteed(
        self, edges: list[Edge], reachable: set[str], wanted: set[str]
    ) -> tuple[Callable[[str], frozenset[str]], Callable[[str, str], str]]:
        """Which of the ``wanted`` captures are there on every path into a step (a
        must-analysis: the intersection over incoming ways, solved with a worklist over
        bit sets), and a function naming a path that lacks one."""
        start = self.flow.start
        names = sorted(wanted)
        bits = {name: 1 << index for index, name in enumerate(names)}
        everything = (1 << len(names)) - 1
        incoming: dict[str, list[tuple[str, int]]] = {}
        following: dict[str, list[str]] = {}
        if names:
            for edge in edges:
                if edge.source in reachable:
                    gives = 0
                    for name in edge.gives:
                        gives |= bits.get(name, 0)
                    incoming.setdefault(edge.to, []).append((edge.source, gives))
                    following.setdefault(edge.source, []).append(edge.to)
        # a call starts with none of them (defaults are not wanted), whatever leads back
        facts = dict.fromkeys(reachable, everything)
        facts[start] = 0
        pending = [name for name in reachable if name != start] if names else []
        queued = set(pending)
        while pending:
            name = pending.pop()
            queued.discard(name)
            new = everything
            for source, gives in incoming.get(name, ()):
                new &= facts[source] | gives
            if new != facts[name]:
                facts[name] = new
                for target in following.get(name, ()):
                    if target != start and target not in queued:
                        queued.add(target)
                        pending.append(target)

        def present(step: str) -> frozenset[str]:
            known = facts.get(step, 0)
            return frozenset(name for name in names if known & bits[name])

        def witness(step: str, capture: str) -> str:
            """A path from the start on which no way captures ``capture``."""
            if step == start:
                return "a call starts there"
            came_by: dict[str, Edge] = {}
            frontier = [start]
            while frontier and step not in came_by:
                following_frontier: list[str] = []
                for name in frontier:
                    for edge in edges:
                        if (
                            edge.source == name
                            and capture not in edge.gives
                            and edge.to != start
                            and edge.to not in came_by
                        ):
                            came_by[edge.to] = edge
                            following_frontier.append(edge.to)
                frontier = following_frontier
            if step not in came_by:
                return "on some path"
            path: list[Edge] = []
            current = step
            while current != start:
                path.append(came_by[current])
                current = came_by[current].source
            hops = " -> ".join(f"{e.to} (by {e.key})" for e in reversed(path))
            return f"e.g. {start} -> {hops}"

        return present, witness

    def tool_captures_all(self) -> set[str]:
        return {name for names in self.tool_captures.values() for name in names}
