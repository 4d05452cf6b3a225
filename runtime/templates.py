"""Prompt templates: a sandboxed Jinja environment over ``prompts/`` with strict undefined.

Per-call variables are passed to templates as data. Jinja never evaluates data, so a
variable holding ``{{ 7*7 }}`` renders literally, and the sandbox refuses attribute tricks
like ``''.__class__`` inside templates themselves.
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
from jinja2.sandbox import SandboxedEnvironment

# A value like "dental/system.j2" is a file under prompts/; anything else is inline text.
_FILE_REFERENCE = re.compile(r"^[\w][\w./-]*\.(j2|jinja|jinja2|txt|md)$")
_JINJA_MARKERS = ("{{", "{%", "{#")


@dataclass(frozen=True)
class TemplateFailure(Exception):
    """A template that cannot be loaded or compiled, located for the bot author."""

    message: str
    file: Path | None = None
    line: int | None = None
    fix: str = ""


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled template plus everything needed to version and re-check it."""

    source: str
    file: Path | None
    compiled: jinja2.Template | None  # None: plain text, nothing to render
    dependencies: tuple[Path, ...] = ()  # this file and every file it includes/extends
    names: frozenset[str] = field(default_factory=frozenset)  # variables it reads

    def render(self, context: Mapping[str, Any]) -> str:
        if self.compiled is None:
            return self.source
        return self.compiled.render(context)

    @property
    def is_file(self) -> bool:
        return self.file is not None


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
        )
        if prepare is not None:
            prepare(self.env)
        self._file_cache: dict[str, PromptTemplate] = {}
        self.file_digests: dict[Path, str] = {}  # every file read, for bot versions
        self._loading: list[str] = []  # the include chain being compiled, to catch cycles

    def load(self, value: str) -> PromptTemplate:
        """Compile a template given as a prompts/ file reference or as inline text."""
        if is_file_reference(value):
            return self._load_file(value.strip())
        return self.load_inline(value)

    def compile_expression(self, expression: str) -> Any:
        return self.env.compile_expression(expression, undefined_to_none=False)

    def load_inline(self, text: str) -> PromptTemplate:
        if not any(marker in text for marker in _JINJA_MARKERS):
            return PromptTemplate(source=text, file=None, compiled=None)
        try:
            tree = self.env.parse(text)
            compiled = self.env.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailure(
                f"template syntax error: {exc.message}", line=exc.lineno
            ) from None
        dependencies, names = self._closure(tree)
        return PromptTemplate(text, None, compiled, tuple(dependencies), frozenset(names))

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
            return self._compile_file(name)
        finally:
            self._loading.pop()

    def _compile_file(self, name: str) -> PromptTemplate:
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
            compiled = self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            where = Path(exc.filename) if exc.filename else path
            raise TemplateFailure(
                f"template syntax error: {exc.message}", file=where, line=exc.lineno
            ) from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateFailure(
                f"template {exc.name!r} (included from {name!r}) not found",
                file=path,
                fix=f"create {self.prompts_dir / str(exc.name)}",
            ) from None
        dependencies, names = self._closure(tree, seen={name}, including=(name, path))
        template = PromptTemplate(source, path, compiled, (path, *dependencies), frozenset(names))
        self._file_cache[name] = template
        return template

    def _closure(
        self,
        tree: nodes.Template,
        seen: set[str] | None = None,
        including: tuple[str, Path] | None = None,
    ) -> tuple[list[Path], set[str]]:
        """Files this template includes (transitively) and the variables all of them read."""
        seen = set() if seen is None else seen
        names = set(meta.find_undeclared_variables(tree))
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


def _include_line(tree: nodes.Template, name: str) -> int | None:
    for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target = getattr(node, "template", None)
        if isinstance(target, nodes.Const) and target.value == name:
            return node.lineno
    return None
