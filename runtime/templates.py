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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from runtime.errors import suggest

# A value like "dental/system.j2" is a file under prompts/; anything else is inline text.
_FILE_REFERENCE = re.compile(r"^[\w][\w./-]*\.(j2|jinja|jinja2|txt|md)$")
_JINJA_MARKERS = ("{{", "{%", "{#")
# `{{ name }}`, `{{ a.b }}`, `{{ name | upper }}`: valid Jinja whenever the filters exist,
# so such templates need no parse to be checked.
_SIMPLE_SUBSTITUTION = re.compile(
    r"\{\{-?\s*([A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*((?:\s*\|\s*[A-Za-z_]\w*)*)\s*-?\}\}"
)
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

    __slots__ = ("_compiled", "_env", "dependencies", "file", "name", "names", "source")

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

    @property
    def is_plain(self) -> bool:
        return self._env is None

    @property
    def is_file(self) -> bool:
        return self.file is not None

    def compile(self) -> jinja2.Template | None:
        if self._compiled is None and self._env is not None:
            if self.name is not None:
                self._compiled = self._env.get_template(self.name)
            else:
                self._compiled = self._env.from_string(self.source)
        return self._compiled

    def render(self, context: Mapping[str, Any]) -> str:
        compiled = self.compile()
        if compiled is None:
            return self.source
        return compiled.render(context)


def is_file_reference(value: str) -> bool:
    return bool(_FILE_REFERENCE.match(value.strip()))


class PromptEnvironment:
    """One sandboxed environment per catalog build; plugins add filters through
    ``prepare_jinja_environment``."""

    def __init__(
        self,
        prompts_dir: Path | None,
        prepare: Callable[[SandboxedEnvironment], None] | None = None,
    ) -> None:
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
            tree = self.env.parse(text)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"template syntax error: {exc.message}", line=exc.lineno
            ) from None
        dependencies, names = self._closure(tree)
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
            tree = self.env.parse(source, name=name, filename=str(path))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"template syntax error: {exc.message}", file=path, line=exc.lineno
            ) from None
        dependencies, names = self._closure(tree, seen={name}, including=(name, path))
        return PromptTemplate(
            source,
            env=self.env,
            file=path,
            name=name,
            dependencies=(path, *dependencies),
            names=frozenset(names),
        )

    def _closure(
        self,
        tree: nodes.Template,
        seen: set[str] | None = None,
        including: tuple[str, Path] | None = None,
    ) -> tuple[list[Path], set[str]]:
        """Files this template includes (transitively) and the variables all of them read."""
        seen = set() if seen is None else seen
        self._check_filters_and_tests(tree, including[1] if including else None)
        names = names_read(tree)
        files: list[Path] = []
        for referenced in meta.find_referenced_templates(tree):
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
                    line=_include_line(tree, referenced),
                    fix=failure.fix,
                ) from None
            for dep in included.dependencies:
                if dep not in files:
                    files.append(dep)
            names |= included.names
        return files, names

    def _check_filters_and_tests(self, tree: nodes.Template, file: Path | None) -> None:
        """Jinja only finds an unknown filter when it generates code; find it now."""
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            known = self.env.filters if isinstance(node, nodes.Filter) else self.env.tests
            if node.name not in known:
                kind = "filter" if isinstance(node, nodes.Filter) else "test"
                raise TemplateFailure(
                    f"no {kind} named {node.name!r}",
                    file=file,
                    line=node.lineno,
                    fix=suggest(node.name, sorted(known), what=f"available {kind}s"),
                )


def names_read(tree: nodes.Template) -> set[str]:
    """Variables a template reads from its context: names loaded and never assigned.

    A syntax-tree walk; cheaper than ``meta.find_undeclared_variables``, which generates
    the template's code to find out.
    """
    loaded: set[str] = set()
    assigned: set[str] = set()
    for node in tree.find_all(nodes.Name):
        (loaded if node.ctx == "load" else assigned).add(node.name)
    for macro in tree.find_all(nodes.Macro):
        assigned.add(macro.name)
        assigned.update(arg.name for arg in macro.args)
    for imported in tree.find_all(nodes.Import):
        assigned.add(imported.target)
    for from_import in tree.find_all(nodes.FromImport):
        assigned.update(n if isinstance(n, str) else n[1] for n in from_import.names)
    for call_block in tree.find_all(nodes.CallBlock):
        assigned.update(arg.name for arg in call_block.args)
    return loaded - assigned - _TEMPLATE_NAMES


def _include_line(tree: nodes.Template, name: str) -> int | None:
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target = getattr(node, "template", None)
        if isinstance(target, nodes.Const) and target.value == name:
            return node.lineno
    return None
