"""Prompt templates: a sandboxed Jinja environment over ``prompts/`` with strict undefined.

Per-call variables are passed to templates as data. Jinja never evaluates data, so a
variable holding ``{{ 7*7 }}`` renders literally, and the sandbox refuses attribute tricks
like ``''.__class__`` inside templates themselves.

Loading a catalog only *checks* templates (syntax, variables read, files included); the
Python code for a template is generated on its first render, once per bot version. That
keeps a 1,000-bot catalog load cheap, because code generation is most of Jinja's cost.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.lexer import TokenStream
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from runtime.errors import suggest
from runtime.substitution import Substitution, parse_substitution

# A value like "dental/system.j2" is a file under prompts/; anything else is inline text.
_FILE_REFERENCE = re.compile(r"^[\w][\w./-]*\.(j2|jinja|jinja2|txt|md)$")
_JINJA_MARKERS = ("{{", "{%", "{#")
# `{{ name }}`, `{{ a.b }}`, `{{ name | upper }}`: valid Jinja whenever the filters exist,
# so such templates need no parse to be checked.
_SIMPLE_SUBSTITUTION = re.compile(
    r"\{\{-?\s*([A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*((?:\s*\|\s*[A-Za-z_]\w*)*)\s*-?\}\}"
)
MAX_CACHED_TEXTS = 50_000  # templates remembered by exact text (edits add old texts)
# a Jinja tag as its lexer reads one: strings (which may hold "}}" or "%}") skipped over
_STRING = r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"'
_TAG = re.compile(
    r"\{\{(?:[^'\"}]|" + _STRING + r"|\}(?!\}))*\}\}"
    r"|\{%(?:[^'\"%]|" + _STRING + r"|%(?!\}))*%\}"
    r"|\{#.*?#\}",
    re.DOTALL,
)
_RAW_BLOCK = re.compile(r"\{%-?\s*raw\b")
_STRINGS = re.compile(_STRING)
_BRACES = re.compile(r"[{}]")
# names Jinja itself defines inside templates
_TEMPLATE_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})


@dataclass(frozen=True)
class TemplateFailure(Exception):
    """A template that cannot be loaded or compiled, located for the bot author."""

    message: str
    file: Path | None = None
    line: int | None = None
    fix: str = ""


class PromptTemplate:
    """A checked template: its source, the files it depends on and the variables it reads.
    Compiled on first render, then reused by every call of the bot version."""

    __slots__ = (
        "_compiled",
        "_env",
        "_substitution",
        "dependencies",
        "file",
        "name",
        "names",
        "source",
    )

    def __init__(
        self,
        source: str,
        *,
        env: SandboxedEnvironment | None = None,
        file: Path | None = None,
        name: str | None = None,
        dependencies: tuple[Path, ...] = (),
        names: frozenset[str] = frozenset(),
    ) -> None:
        self.source = source
        self.file = file
        self.name = name  # the prompts/ name of a file template
        self.dependencies = dependencies  # this file and every file it includes/extends
        self.names = names  # variables it reads
        self._env = env  # None: plain text, nothing to render
        self._compiled: jinja2.Template | None = None
        self._substitution: Substitution | bool | None = False  # False: not looked at yet

    @property
    def is_plain(self) -> bool:
        return self._env is None

    @property
    def is_file(self) -> bool:
        return self.file is not None

    def compile(self) -> jinja2.Template | None:
        if self._compiled is None and self._env is not None:
            if self.name is not None:
                compiled = self._env.get_template(self.name)
            else:
                compiled = self._env.from_string(self.source)
            self._compiled = flatten_globals(compiled)
        return self._compiled

    def render(self, context: Mapping[str, Any]) -> str:
        if self._env is None:
            return self.source
        substitution = self._substitution
        if substitution is False:
            # Jinja drops a template's last newline unless told to keep it; the fast path
            # keeps text as it is, so it serves only environments that keep it too
            keeps_text = self._env.keep_trailing_newline
            substitution = self._substitution = (
                parse_substitution(self.source) if keeps_text else None
            )
        if isinstance(substitution, Substitution):
            text = substitution.render(context)
            if text is not None:
                return text
        compiled = self.compile()
        assert compiled is not None
        return compiled.render(context)


def flatten_globals(template: jinja2.Template) -> jinja2.Template:
    """Give a compiled template its globals as one plain dict.

    Jinja keeps them as a ChainMap over the environment's globals, so that globals added
    later still show, and copies that ChainMap (slowly, in Python) into every render's
    context: 5 of the 8 µs a short render takes. Environments here are complete (plugin
    filters and globals are added when they are made) before any template compiles."""
    template.globals = dict(template.globals)
    return template


def is_file_reference(value: str) -> bool:
    return bool(_FILE_REFERENCE.match(value.strip()))


class PromptEnvironment:
    """One sandboxed environment per catalog build; plugins add filters through
    ``prepare_jinja_environment``."""

    def __init__(
        self,
        prompts_dir: Path | None,
        prepare: Callable[[SandboxedEnvironment], None] | None = None,
        *,
        facts: FactsCache | None = None,
    ) -> None:
        """``facts`` shares template facts with earlier environments built with the same
        plugins (a reloading catalog): see `_facts`."""
        self.prompts_dir = prompts_dir.resolve() if prompts_dir else None
        loader = jinja2.FileSystemLoader(str(self.prompts_dir)) if self.prompts_dir else None
        self.env = SandboxedEnvironment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,  # an included file keeps its last line break
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,  # compiled file templates live as long as this catalog build
        )
        if prepare is not None:
            prepare(self.env)
        self.file_digests: dict[Path, str] = {}  # every file read, for bot versions
        self._file_cache: dict[str, PromptTemplate] = {}
        self._inline_cache: dict[str, PromptTemplate] = {}
        self._expression_cache: dict[str, tuple[Any, frozenset[str]]] = {}
        # facts (or the syntax error) per token shape: see `_facts`
        self._facts_cache = FactsCache() if facts is None else facts
        self._loading: list[str] = []  # the include chain being compiled, to catch cycles

    def load(self, value: str) -> PromptTemplate:
        """Check a template given as a prompts/ file reference or as inline text."""
        if is_file_reference(value):
            return self._load_file(value.strip())
        return self.load_inline(value)

    def expression(self, text: str) -> tuple[Any, frozenset[str]]:
        """A compiled Jinja expression and the names it reads; identical expressions
        across bots compile once."""
        cached = self._expression_cache.get(text)
        if cached is None:
            compiled = self.env.compile_expression(text, undefined_to_none=False)
            tree = self.env.parse("{{ " + text + " }}")
            cached = (compiled, frozenset(meta.find_undeclared_variables(tree)))
            self._expression_cache[text] = cached
        return cached

    def load_inline(self, text: str) -> PromptTemplate:
        cached = self._inline_cache.get(text)
        if cached is None:
            cached = self._check_inline(text)
            self._inline_cache[text] = cached
        return cached

    def _check_inline(self, text: str) -> PromptTemplate:
        if not any(marker in text for marker in _JINJA_MARKERS):
            return PromptTemplate(text)
        simple = self._simple_names(text)
        if simple is not None:
            return PromptTemplate(text, env=self.env, names=simple)
        try:
            facts = self._facts(text)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"template syntax error: {exc.message}", line=exc.lineno
            ) from None
        dependencies, names = self._closure(facts)
        return PromptTemplate(
            text, env=self.env, dependencies=tuple(dependencies), names=frozenset(names)
        )

    def _simple_names(self, text: str) -> frozenset[str] | None:
        """The names a template of plain substitutions reads, or None if it is more."""
        names: set[str] = set()
        for match in _SIMPLE_SUBSTITUTION.finditer(text):
            filters = [f.strip() for f in match.group(2).split("|")[1:]]
            if any(f not in self.env.filters for f in filters):
                return None  # let the parser report the unknown filter
            names.add(match.group(1))
        rest = _SIMPLE_SUBSTITUTION.sub("", text)
        if any(marker in rest for marker in _JINJA_MARKERS):
            return None
        return frozenset(names)

    def _load_file(self, name: str) -> PromptTemplate:
        cached = self._file_cache.get(name)
        if cached is not None:
            return cached
        if self.prompts_dir is None:
            raise TemplateFailure(
                f"template file {name!r} given but there is no prompts/ directory"
            )
        if name in self._loading:
            chain = " -> ".join([*self._loading, name])
            raise TemplateFailure(f"templates include each other in a cycle: {chain}")
        self._loading.append(name)
        try:
            template = self._check_file(name)
        finally:
            self._loading.pop()
        self._file_cache[name] = template
        return template

    def _check_file(self, name: str) -> PromptTemplate:
        assert self.prompts_dir is not None
        path = self.prompts_dir / name
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TemplateFailure(
                f"template file {name!r} not found",
                fix=f"create {path} or fix the file name",
            ) from None
        self.file_digests[path] = hashlib.sha256(source.encode()).hexdigest()
        try:
            facts = self._facts(source, name=name, filename=str(path))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"template syntax error: {exc.message}", file=path, line=exc.lineno
            ) from None
        dependencies, names = self._closure(facts, seen={name}, including=(name, path))
        return PromptTemplate(
            source,
            env=self.env,
            file=path,
            name=name,
            dependencies=(path, *dependencies),
            names=frozenset(names),
        )

    def _facts(
        self, source: str, name: str | None = None, filename: str | None = None
    ) -> TemplateFacts:
        """Parse and analyze a template, raising its syntax error.

        Parsing is most of a catalog's load time, and fleets are full of templates cloned
        from one another that differ only in their literal text. Jinja's parser never looks
        inside literal text, so templates with the same tokens (literal text blanked, line
        numbers kept) have the same facts and the same syntax error: they are parsed once.
        Lexing alone costs a third of a parse."""
        if self.env.extensions:  # extensions may rewrite the token stream: always parse
            return analyze(self.env.parse(source, name=name, filename=filename))
        cache = self._facts_cache
        known = cache.by_text.get(source)  # unchanged text: not even a lex (reloads)
        if known is None:
            tags = self._tag_shape(source)
            known = cache.by_shape.get(tags) if tags is not None else None
            if known is None:
                known = self._facts_by_shape(source, name, filename)
                # an error's message holds a column: shared by exact tokens only
                if tags is not None and not isinstance(known, jinja2.TemplateSyntaxError):
                    cache.by_shape[tags] = known
            if len(cache.by_text) >= MAX_CACHED_TEXTS:  # a long-lived reloading catalog
                cache.by_text.clear()
            cache.by_text[source] = known
        if isinstance(known, jinja2.TemplateSyntaxError):
            raise known.with_traceback(None)  # a cached error must not collect frames
        return known

    def check_compiles(self, template: PromptTemplate) -> None:
        """Raise what generating the template's code raises (`dialplan validate`).
        Generated code depends on a template's tokens, not on its literal text, so once
        one template of a tag shape has compiled, its clones need not (a cloned fleet
        generates each shape once instead of once per bot)."""
        if template.is_plain:
            return
        shape = self._tag_shape(template.source)
        if shape is not None and shape in self._facts_cache.compiled:
            return
        template.compile()
        if shape is not None:
            self._facts_cache.compiled.add(shape)

    def _tag_shape(self, source: str) -> tuple[Any, ...] | None:
        """The template's tags with their line numbers, found by a scan instead of
        Jinja's lexer (a third of the cost of a new template): two templates with the
        same tags on the same lines (and as many lines) lex to the same tokens but for
        literal text, so they share their facts. None when the scan cannot be sure (a
        raw block, line statements, a tag opener it could not close): then the lexer
        decides."""
        env = self.env
        if env.line_statement_prefix or env.line_comment_prefix or _RAW_BLOCK.search(source):
            return None
        tags: list[tuple[int, str]] = []
        line, position, data_end = 1, 0, 0
        for found in _TAG.finditer(source):
            data = source[data_end : found.start()]
            tag = found.group()
            if (
                data.endswith("{")  # "{" + "{% ...": the lexer starts a tag one earlier
                or any(marker in data for marker in _JINJA_MARKERS)
                or (tag[1] != "#" and _BRACES.search(_STRINGS.sub("", tag[2:-2])))
            ):
                return None  # braces inside a tag: Jinja balances them, a scan cannot
            line += source.count("\n", position, found.start())
            position, data_end = found.start(), found.end()
            tags.append((line, tag))
        if any(marker in source[data_end:] for marker in _JINJA_MARKERS):
            return None
        return ("tags", source.count("\n"), *tags)

    def _facts_by_shape(
        self, source: str, name: str | None, filename: str | None
    ) -> TemplateFacts | jinja2.TemplateSyntaxError:
        lexer = self.env.lexer
        tokens = list(lexer.tokeniter(source, name, filename))
        shape = tuple(
            (line, token, None if token == "data" else value) for line, token, value in tokens
        )
        known = self._facts_cache.by_shape.get(shape)
        if known is None:
            # parse the tokens already lexed (what `Environment.parse` does, minus a re-lex)
            parser = Parser(self.env, source, name, filename)
            parser.stream = TokenStream(lexer.wrap(iter(tokens), name, filename), name, filename)
            try:
                known = analyze(parser.parse())
            except jinja2.TemplateSyntaxError as exc:
                known = exc
            self._facts_cache.by_shape[shape] = known
        return known

    def _closure(
        self,
        facts: TemplateFacts,
        seen: set[str] | None = None,
        including: tuple[str, Path] | None = None,
    ) -> tuple[list[Path], set[str]]:
        """Files this template includes (transitively) and the variables all of them read."""
        seen = set() if seen is None else seen
        self._check_filters_and_tests(facts, including[1] if including else None)
        names = set(facts.names)
        files: list[Path] = []
        for referenced, line in facts.references:
            if referenced is None or referenced in seen:
                continue  # a dynamic include cannot be tracked ahead of time
            seen.add(referenced)
            try:
                included = self._load_file(referenced)
            except TemplateFailure as failure:
                if failure.file is not None or including is None:
                    raise
                # the included file is missing: point at the include, not at the bot file
                raise TemplateFailure(
                    f"{failure.message} (included from {including[0]!r})",
                    file=including[1],
                    line=line,
                    fix=failure.fix,
                ) from None
            for dep in included.dependencies:
                if dep not in files:
                    files.append(dep)
            names |= included.names
        return files, names

    def _check_filters_and_tests(self, facts: TemplateFacts, file: Path | None) -> None:
        """Jinja only finds an unknown filter when it generates code; find it now."""
        checks = (
            ("filter", facts.filters, self.env.filters),
            ("test", facts.tests, self.env.tests),
        )
        for kind, used, known in checks:
            for name, line in used:
                if name not in known:
                    raise TemplateFailure(
                        f"no {kind} named {name!r}",
                        file=file,
                        line=line,
                        fix=suggest(name, sorted(known), what=f"available {kind}s"),
                    )


@dataclass
class FactsCache:
    """Template facts (or syntax errors) by exact text and by token shape. Valid across
    environments with the same filters, tests and extensions."""

    by_text: dict[str, TemplateFacts | jinja2.TemplateSyntaxError] = field(default_factory=dict)
    by_shape: dict[tuple[Any, ...], TemplateFacts | jinja2.TemplateSyntaxError] = field(
        default_factory=dict
    )
    compiled: set[tuple[Any, ...]] = field(default_factory=set)  # tag shapes whose code generates


@dataclass
class TemplateFacts:
    """What one walk over a template's syntax tree finds."""

    names: set[str]  # variables read from the context
    filters: list[tuple[str, int]]  # (filter name, line)
    tests: list[tuple[str, int]]
    references: list[tuple[str | None, int]]  # (included file, or None if dynamic; line)


def analyze(tree: nodes.Template) -> TemplateFacts:
    """One walk over the tree: names loaded and never assigned, filters and tests used,
    files included. Cheaper than ``meta.find_undeclared_variables`` (which generates the
    template's code to find out) and than one ``find_all`` per question."""
    loaded: set[str] = set()
    assigned: set[str] = set()
    facts = TemplateFacts(set(), [], [], [])
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.Name):
            (loaded if node.ctx == "load" else assigned).add(node.name)
        elif isinstance(node, nodes.Filter):
            facts.filters.append((node.name, node.lineno))
        elif isinstance(node, nodes.Test):
            facts.tests.append((node.name, node.lineno))
        elif isinstance(node, nodes.Macro):
            assigned.add(node.name)
            assigned.update(arg.name for arg in node.args)
        elif isinstance(node, nodes.CallBlock):
            assigned.update(arg.name for arg in node.args)
        elif isinstance(node, nodes.Include | nodes.Extends | nodes.Import | nodes.FromImport):
            if isinstance(node, nodes.Import):
                assigned.add(node.target)
            elif isinstance(node, nodes.FromImport):
                assigned.update(n if isinstance(n, str) else n[1] for n in node.names)
            facts.references.extend(_referenced(node.template, node.lineno))
        stack.extend(node.iter_child_nodes())
    facts.names = loaded - assigned - _TEMPLATE_NAMES
    return facts


def _referenced(target: nodes.Expr, line: int) -> list[tuple[str | None, int]]:
    if isinstance(target, nodes.Const) and isinstance(target.value, str):
        return [(target.value, line)]
    if isinstance(target, nodes.List | nodes.Tuple):
        return [item for element in target.items for item in _referenced(element, line)]
    return [(None, line)]


def names_read(tree: nodes.Template) -> set[str]:
    """Variables a template reads from its context."""
    return analyze(tree).names
