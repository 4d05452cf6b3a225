"""Small templates inside provider and tool options (a rules reply, a goodbye line).

Plugins use these instead of a Jinja environment of their own: one sandboxed, strict
environment, and each distinct text is checked and compiled once per process, so a
thousand bots sharing a reply pay for it once and a call never recompiles per turn.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from runtime.substitution import Substitution, parse_substitution
from runtime.templates import analyze, flatten_globals

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_MARKERS = ("{{", "{%", "{#")


@functools.lru_cache(maxsize=8192)
def check_snippet(text: str) -> str:
    """Return ``text`` if it is a valid template, else raise ValueError (for validators)."""
    if any(marker in text for marker in _MARKERS):
        try:
            _ENV.parse(text)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error: {exc.message} (line {exc.lineno})") from None
    return text


@functools.lru_cache(maxsize=8192)
def snippet_names(text: str) -> frozenset[str]:
    """The variables a (valid) snippet reads, for plugins' `variables_used()`."""
    if not any(marker in text for marker in _MARKERS):
        return frozenset()
    return frozenset(analyze(_ENV.parse(text)).names)


@functools.lru_cache(maxsize=8192)
def snippet_attributes(text: str, name: str) -> frozenset[str]:
    """The attributes a (valid) snippet reads of the variable ``name``: for `name="match"`,
    `{{ match.day }}` and `{{ match['day'] }}` read "day". Lets a plugin check them against
    what it will pass (a regular expression's group names)."""
    if not any(marker in text for marker in _MARKERS):
        return frozenset()
    found: set[str] = set()
    tree = _ENV.parse(text)
    for attribute in tree.find_all(nodes.Getattr):
        if _is_name(attribute.node, name):
            found.add(attribute.attr)
    for item in tree.find_all(nodes.Getitem):
        key = item.arg
        const = key.value if isinstance(key, nodes.Const) else None
        if _is_name(item.node, name) and isinstance(const, str):
            found.add(const)
    return frozenset(found)


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


@functools.lru_cache(maxsize=8192)
def _compiled(text: str) -> jinja2.Template:
    return flatten_globals(_ENV.from_string(text))


@functools.lru_cache(maxsize=8192)
def _substitution(text: str) -> Substitution | None:
    return parse_substitution(text)


def render_snippet(text: str, context: Mapping[str, Any]) -> str:
    if not any(marker in text for marker in _MARKERS):
        return text.strip()
    substitution = _substitution(text)
    rendered = substitution.render(context) if substitution is not None else None
    if rendered is None:  # more than names, or a name Jinja must resolve or report
        rendered = _compiled(text).render(context)
    return rendered.strip()
