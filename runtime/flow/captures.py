"""Captured values: checked against their declared types, described to the LLM as a JSON
schema, and found in templates (`captured.patient_name`) so validation can tell a read
that some path into a step does not provide.

Checking is hand-written rather than a pydantic model per transition: a fleet's catalog
holds tens of thousands of transitions, and building a model costs a millisecond each.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, TemplateSyntaxError, nodes
from jinja2.parser import Parser

from runtime.flow.schema import CaptureSpec

if TYPE_CHECKING:
    from runtime.templates import PromptTemplate

CAPTURED = "captured"  # the name templates read captured values under
# names a template may call on `captured` without reading one value
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
# filters and tests that make a missing value safe to read
_GUARDS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined"})


def json_schema(specs: Mapping[str, CaptureSpec]) -> dict[str, Any]:
    """The parameters of the tool that captures ``specs`` (a transition, `remember`)."""
    properties: dict[str, Any] = {}
    for name, spec in specs.items():
        prop: dict[str, Any]
        if isinstance(spec.type, list):
            prop = {"type": "string", "enum": list(spec.type)}
        elif spec.type == "list":
            prop = {"type": "array", "items": {"type": "string"}}
        elif spec.type == "bool":
            prop = {"type": "boolean"}
        else:
            prop = {"type": spec.type}
        if spec.description:
            prop["description"] = spec.description
        properties[name] = prop
    required = [name for name, spec in specs.items() if spec.required]
    return {"type": "object", "properties": properties, "required": required}


@dataclass(frozen=True)
class CaptureError(Exception):
    """Arguments that do not fit the declared captures, phrased for the LLM to correct."""

    problems: tuple[str, ...]

    def __str__(self) -> str:
        return "; ".join(self.problems)


def check_values(specs: Mapping[str, CaptureSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``given`` that ``specs`` declare, checked (numbers given as text are
    read as numbers); raises `CaptureError` naming each bad or missing one."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name in sorted(set(given) - set(specs)):
        problems.append(f"{name}: not a value this step captures ({', '.join(specs) or 'none'})")
    for name, spec in specs.items():
        value = given.get(name)
        if value is None or value == "":
            if spec.required:
                problems.append(f"{name}: required ({spec.description or _type_name(spec)})")
            continue
        checked = _check(spec, value)
        if checked is _INVALID:
            problems.append(f"{name}: expected {_type_name(spec)}, got {value!r}")
        else:
            values[name] = checked
    if problems:
        raise CaptureError(tuple(problems))
    return values


_INVALID = object()


def _check(spec: CaptureSpec, value: Any) -> Any:
    kind = spec.type
    if isinstance(kind, list):
        text = str(value).strip()
        for allowed in kind:  # the LLM may change case; the record keeps the declared value
            if allowed.lower() == text.lower():
                return allowed
        return _INVALID
    if kind == "string":
        return value.strip() if isinstance(value, str) else _INVALID
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return {"true": True, "yes": True, "false": False, "no": False}.get(text, _INVALID)
    if kind == "number":
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, int | float):
            return value
        try:
            number = float(str(value).strip())
        except ValueError:
            return _INVALID
        return int(number) if number.is_integer() else number
    if kind == "list":
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        return _INVALID
    return _INVALID


def _type_name(spec: CaptureSpec) -> str:
    if isinstance(spec.type, list):
        return "one of " + ", ".join(repr(v) for v in spec.type)
    return {"list": "a list of strings", "bool": "true or false"}.get(spec.type, f"a {spec.type}")


@dataclass(frozen=True)
class CapturedReads:
    """The captured values a template reads: ``unguarded`` ones fail when missing (read
    at least once without a guard); ``guarded`` ones are only ever read under
    `| default(...)`, an `is defined` test or `captured.get`."""

    unguarded: frozenset[str]
    guarded: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.unguarded | self.guarded


NO_READS = CapturedReads(frozenset(), frozenset())


def captured_reads(env: Environment, sources: Iterable[tuple[str, Path | None]]) -> CapturedReads:
    """The `captured.*` reads of a template and the files it includes (each given as its
    source). Only templates that read `captured` at all are looked at, each text once
    per environment (see `_source_reads`)."""
    unguarded: set[str] = set()
    guarded: set[str] = set()
    for source, _file in sources:
        if CAPTURED not in source:
            continue
        found = _source_reads(env, source)
        unguarded |= found.unguarded
        guarded |= found.guarded
    return CapturedReads(frozenset(unguarded), frozenset(guarded - unguarded))


def template_reads(env: Environment, template: PromptTemplate) -> CapturedReads:
    """`captured_reads` of a checked template and every file it includes; a template
    object (a prompts/ file many bots name, or one inline text) is looked at once."""
    if CAPTURED not in template.names:
        return NO_READS
    cache = _parsed(env).templates
    found = cache.get(template)
    if found is None:
        sources = [(template.source, template.file)]
        for path in template.dependencies:
            if path != template.file:
                sources.append((path.read_text(encoding="utf-8"), path))
        found = cache[template] = captured_reads(env, sources)
    return found


@dataclass
class _Parsed:
    """What was found in texts already looked at with one environment."""

    reads: dict[str, CapturedReads] = field(default_factory=dict)  # by template source
    # by the texts of the source's tags (see `_tags`)
    shapes: dict[tuple[str, ...], CapturedReads] = field(default_factory=dict)
    templates: dict[PromptTemplate, CapturedReads] = field(default_factory=dict)
    expressions: dict[str, ExpressionFacts] = field(default_factory=dict)  # by text
    compiled: dict[str, Callable[..., Any]] = field(default_factory=dict)  # by text
    # ids of the (cached, so living) facts whose shape has generated code once
    generated: set[int] = field(default_factory=set)
    # by tokens, numbers left out (see `expression_facts`)
    expression_shapes: dict[tuple[tuple[str, str | None], ...], ExpressionFacts] = field(
        default_factory=dict
    )


_PARSED: weakref.WeakKeyDictionary[Environment, _Parsed] = weakref.WeakKeyDictionary()
_last: tuple[weakref.ReferenceType[Environment], _Parsed] | None = None


def _parsed(env: Environment) -> _Parsed:
    global _last
    last = _last  # one read: another thread may replace it
    if last is not None and last[0]() is env:  # one catalog build asks thousands of times
        return last[1]
    found = _PARSED.get(env)
    if found is None:
        found = _PARSED[env] = _Parsed()
    _last = (weakref.ref(env), found)
    return found


def _source_reads(env: Environment, source: str) -> CapturedReads:
    """The reads of one text. A fleet's bots are clones that differ in literal text, and
    the literal text between tags never changes what a template reads: besides the exact
    text, reads are remembered by the template's tags (`_tags`), so a text whose tags
    were all seen before costs one scan, not a parse."""
    parsed = _parsed(env)
    found = parsed.reads.get(source)
    if found is not None:
        return found
    tags = _tags(env, source)
    found = parsed.shapes.get(tags) if tags is not None else None
    if found is None:
        found = _reads_of(env.parse(source))
        if tags is not None:
            parsed.shapes[tags] = found
    parsed.reads[source] = found
    return found


def _reads_of(tree: nodes.Node) -> CapturedReads:
    unguarded: set[str] = set()
    guarded: set[str] = set()
    _walk(tree, unguarded, guarded)
    return CapturedReads(frozenset(unguarded), frozenset(guarded - unguarded))


# where a tag may start, and what matters inside one: string literals (Jinja's own
# pattern), the closing delimiters, brackets, and a quote that opens no literal
_TAG_START = re.compile(r"\{\{|\{%|\{#")
_IN_TAG = re.compile(
    r"""'([^'\\]*(?:\\.[^'\\]*)*)'|"([^"\\]*(?:\\.[^"\\]*)*)"|\}\}|%\}|['"(\[{)\]}]""",
    re.S,
)
_COMMENT_END = re.compile(r"#\}")
_RAW = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}")
_DELIMITERS = ("{%", "%}", "{{", "}}", "{#", "#}")


def _tags(env: Environment, source: str) -> tuple[str, ...] | None:
    """The texts of a template's `{{ }}` and `{% %}` tags, in order: all Jinja's parser
    builds a template from but the literal text between them (which only becomes
    TemplateData, never read here). Found as Jinja's lexer finds them: a tag ends at the
    first closing delimiter outside string literals and brackets. None when unsure
    (`{% raw %}`, delimiters or extensions of the environment's own, an unclosed tag):
    the text is then only remembered as it is."""
    delimiters = (
        env.block_start_string,
        env.block_end_string,
        env.variable_start_string,
        env.variable_end_string,
        env.comment_start_string,
        env.comment_end_string,
    )
    if (
        env.extensions
        or env.line_statement_prefix is not None
        or env.line_comment_prefix is not None
        or delimiters != _DELIMITERS
        or _RAW.search(source)
    ):
        return None
    tags: list[str] = []
    position = 0
    while True:
        start = _TAG_START.search(source, position)
        if start is None:
            return tuple(tags)
        kind = start.group()
        if kind == "{#":  # a comment: no part of the template
            end = _COMMENT_END.search(source, start.end())
            if end is None:
                return None
            position = end.end()
            continue
        closing = "}}" if kind == "{{" else "%}"
        depth = 0
        scan = start.end()
        while True:
            found = _IN_TAG.search(source, scan)
            if found is None:
                return None
            token = found.group()
            if token == closing and depth == 0:
                break
            if token in ("}}", "%}"):  # not this tag's end: a `}` closing a bracket, or `%`
                scan = found.start() + 1
                continue
            if token in ("'", '"'):
                return None  # a quote that opens no string literal
            if token in "([{":
                depth += 1
            elif token in ")]}":
                depth -= 1
                if depth < 0:
                    return None
            scan = found.end()
        position = found.end()
        tags.append(source[start.start() : position])


def expression_reads(env: Environment, expression: str) -> CapturedReads:
    return captured_reads(env, [("{{ " + expression + " }}", None)])


def _walk(tree: nodes.Node, unguarded: set[str], guarded: set[str]) -> None:
    """Sort the reads of ``tree``: a read is guarded when it is the very value a
    `default` filter or a `defined` test is given (`captured.x | default('')`), inside an
    `{% if captured.x is defined %}` (or `x if captured.x is defined else y`), or a
    `captured.get('x')`. A guard over anything else (`captured.x.y | default('')`,
    `captured.x | upper | default('')`) does not keep the missing value from failing."""
    # (node, whether it is the direct operand of a guard, names known defined there)
    stack: list[tuple[nodes.Node, bool, frozenset[str]]] = [(tree, False, frozenset())]
    while stack:
        node, safe, defined = stack.pop()
        name = _captured_name(node)
        if name is not None:
            (guarded if safe or name in defined else unguarded).add(name)
            continue
        got = _captured_get(node)
        if got is not None:
            guarded.add(got)
        guard = (isinstance(node, nodes.Filter) and node.name in _GUARDS) or (
            isinstance(node, nodes.Test) and node.name in _GUARD_TESTS
        )
        operand = getattr(node, "node", None) if guard else None
        within: list[nodes.Node] | None = None  # the children run only when a test holds
        if isinstance(node, nodes.If):
            within, test = list(node.body), node.test
        elif isinstance(node, nodes.CondExpr):
            within, test = [node.expr1], node.test
        if within is not None:
            inner = defined | _defined_by(test)
            stack.extend((child, False, inner) for child in within)
            stack.extend(
                (child, False, defined)
                for child in node.iter_child_nodes()
                if not any(child is w for w in within)
            )
            continue
        stack.extend((child, child is operand, defined) for child in node.iter_child_nodes())


def _defined_by(test: nodes.Node) -> frozenset[str]:
    """Captured values a template's `if` test makes sure are there when it holds: besides
    what a condition's `and` chain needs (`captured.x`, `captured.x | default(none)`,
    `captured.x == 'a'`), `captured.x is defined` and `'x' in captured`."""
    return _holding(test, templates=True)


def _captured_name(node: nodes.Node) -> str | None:
    """`captured.x` or `captured["x"]` read as a value."""
    if isinstance(node, nodes.Getattr):
        target, key = node.node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        target, key = node.node, node.arg.value
    else:
        return None
    if not (isinstance(target, nodes.Name) and target.name == CAPTURED and isinstance(key, str)):
        return None
    return None if key in _MAPPING_METHODS else key


def _captured_get(node: nodes.Node) -> str | None:
    """`captured.get("x")`: a read that is None (or the given default) when missing."""
    if not (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr == "get"
        and isinstance(node.node.node, nodes.Name)
        and node.node.node.name == CAPTURED
        and node.args
        and isinstance(node.args[0], nodes.Const)
        and isinstance(node.args[0].value, str)
    ):
        return None
    return node.args[0].value


# comparisons that cannot hold while their left side is None (not captured yet), when
# their right side is a constant other than None
_SURE_OPS = frozenset({"eq", "gt", "gteq", "lt", "lteq", "in"})


@dataclass(frozen=True)
class ExpressionFacts:
    """What checking a Jinja expression (a condition, a tool's `capture`) needs to know,
    found from its syntax tree alone: generating its code costs a millisecond, so that
    waits for its first evaluation (see `LazyExpression`)."""

    names: frozenset[str]  # variables it reads
    filters: tuple[str, ...]  # filters and tests it uses (their code would fail without)
    tests: tuple[str, ...]
    holding: frozenset[str]  # captured values there whenever it holds (`conjunction_reads`)


def expression_facts(env: Environment, text: str) -> ExpressionFacts:
    """The facts of one expression, parsed as `Environment.compile_expression` parses it
    (so it raises the same `TemplateSyntaxError`). Each text is parsed once per
    environment, and texts that differ only in their numbers (`result.score > 0.7`,
    `> 0.8`: the parser never looks at a number's value, and the facts only at whether
    it is zero) share one parse."""
    parsed = _parsed(env)
    found = parsed.expressions.get(text)
    if found is not None:
        return found
    shape = None
    if not env.extensions:  # an extension may rewrite the tokens: no shortcut
        shape = tuple(
            (kind, _number_key(value) if kind in _NUMBERS else value)
            for _line, kind, value in env.lexer.tokeniter(text, None, state="variable")
        )
        found = parsed.expression_shapes.get(shape)
    if found is None:
        found = _expression_facts(env, text)
        if shape is not None:
            parsed.expression_shapes[shape] = found
    parsed.expressions[text] = found
    return found


_NUMBERS = frozenset({"integer", "float"})


def _number_key(text: str) -> str | None:
    """A number as `expression_facts` tells shapes apart: only whether it is zero
    matters (`captured.n | default(0)` may be false, `default(1)` may not)."""
    try:
        value = float(text.replace("_", "")) if "." in text or "e" in text.lower() else None
        if value is None:
            value = int(text.replace("_", ""), 0)
    except ValueError:
        return text
    return None if value else "0"


def _expression_facts(env: Environment, text: str) -> ExpressionFacts:
    parser = Parser(env, text, state="variable")
    tree = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError(
            "chunk after expression", parser.stream.current.lineno, None, None
        )
    names: set[str] = set()
    filters: list[str] = []
    tests: list[str] = []
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Name) and node.ctx == "load":
            names.add(node.name)
        elif isinstance(node, nodes.Filter):
            filters.append(node.name)
        elif isinstance(node, nodes.Test):
            tests.append(node.name)
        stack.extend(node.iter_child_nodes())
    return ExpressionFacts(
        frozenset(names),
        tuple(dict.fromkeys(filters)),
        tuple(dict.fromkeys(tests)),
        _holding(tree, templates=False),
    )


class LazyExpression:
    """A checked expression whose code is generated on its first evaluation, once per
    bot version (as templates are): loading a fleet whose bots' conditions differ only in
    a constant (`result.score > 0.7`) would otherwise generate code for each. Called like
    the compiled expression it stands for."""

    __slots__ = ("_compiled", "_env", "text")

    def __init__(self, env: Environment, text: str) -> None:
        self.text = text
        self._env = env
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, **context: Any) -> Any:
        compiled = self._compiled
        if compiled is None:  # two threads at once: both compile, the same code
            compiled = self._compiled = compiled_expression(self._env, self.text)
        return compiled(**context)

    def __repr__(self) -> str:
        return f"LazyExpression({self.text!r})"


def generated_alike(env: Environment, facts: ExpressionFacts) -> bool:
    """Whether an expression of the shape these facts belong to has generated its code
    (texts sharing a shape differ only in numbers: their code generates alike)."""
    return id(facts) in _parsed(env).generated


def mark_generated(env: Environment, facts: ExpressionFacts) -> None:
    _parsed(env).generated.add(id(facts))


def compiled_expression(env: Environment, text: str) -> Callable[..., Any]:
    """An expression's code (undefined values stay undefined, so a strict environment
    fails on them), generated once per environment and text."""
    cache = _parsed(env).compiled
    compiled = cache.get(text)
    if compiled is None:
        compiled = cache[text] = env.compile_expression(text, undefined_to_none=False)
    return compiled


def conjunction_reads(env: Environment, expression: str) -> frozenset[str]:
    """Captured values a condition needs to hold: those read in its top-level `and` chain
    (`captured.name and captured.day`, `captured.count > 2`, `captured.x is not none`), so
    a step entered through it can count on them. A comparison that holds for a missing
    value (`captured.x != 'a'`, `captured.x == none`) counts for nothing."""
    return expression_facts(env, expression).holding


def _holding(test: nodes.Node, *, templates: bool) -> frozenset[str]:
    """Captured values that are there whenever ``test`` holds: those its top-level `and`
    chain reads as truthy (`captured.x`, `captured.get('x')`, `captured.x | default('')`),
    compares to a constant that is not None, or tests `is not none`. ``templates``: a
    template's `captured` lacks what is not captured yet (a condition's has it as None),
    so `captured.x is defined` and `'x' in captured` count there too."""
    found: set[str] = set()
    stack = [test]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.And):
            stack.extend((node.left, node.right))
            continue
        if isinstance(node, nodes.Compare):
            if templates and _in_captured(node):
                assert isinstance(node.expr, nodes.Const)
                found.add(node.expr.value)
                continue
            if not _sure_comparison(node):
                continue
            node = node.expr
        elif isinstance(node, nodes.Not) and isinstance(node.node, nodes.Test):
            if node.node.name != "none":
                continue
            node = node.node.node
        elif isinstance(node, nodes.Test):
            if not (templates and node.name == "defined"):
                continue
            node = node.node
        elif isinstance(node, nodes.Filter) and node.name in _GUARDS and node.node is not None:
            if node.args and not _falsy_constant(node.args[0]):
                continue  # `captured.x | default('none given')` holds without x
            node = node.node
        name = _captured_name(node)
        if name is None:
            name = _captured_get(node)
            if name is not None:
                assert isinstance(node, nodes.Call)
                if len(node.args) > 1 and not _falsy_constant(node.args[1]):
                    continue
        if name is not None:
            found.add(name)
    return frozenset(found)


def _in_captured(node: nodes.Compare) -> bool:
    """`'x' in captured`."""
    return (
        isinstance(node.expr, nodes.Const)
        and isinstance(node.expr.value, str)
        and len(node.ops) == 1
        and node.ops[0].op == "in"
        and isinstance(node.ops[0].expr, nodes.Name)
        and node.ops[0].expr.name == CAPTURED
    )


def _falsy_constant(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and not node.value


def _sure_comparison(node: nodes.Compare) -> bool:
    if len(node.ops) != 1 or node.ops[0].op not in _SURE_OPS:
        return False
    other = node.ops[0].expr
    if isinstance(other, nodes.List | nodes.Tuple):
        return all(isinstance(i, nodes.Const) and i.value is not None for i in other.items)
    return isinstance(other, nodes.Const) and other.value is not None
