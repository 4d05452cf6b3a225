"""Captured values: checked against their declared types, described to the LLM as a JSON
schema, and found in templates (`captured.patient_name`) so validation can tell a read
that some path into a step does not provide.

Checking is hand-written rather than a pydantic model per transition: a fleet's catalog
holds tens of thousands of transitions, and building a model costs a millisecond each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, nodes

from runtime.flow.schema import CaptureSpec

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
    """The captured values a template reads: ``unguarded`` fail when missing; ``guarded``
    ones sit under `| default(...)` or an `is defined` test."""

    unguarded: frozenset[str]
    guarded: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.unguarded | self.guarded


NO_READS = CapturedReads(frozenset(), frozenset())


def captured_reads(env: Environment, sources: Iterable[tuple[str, Path | None]]) -> CapturedReads:
    """The `captured.*` reads of a template and the files it includes (each given as its
    source). Only templates that read `captured` at all are parsed."""
    unguarded: set[str] = set()
    guarded: set[str] = set()
    for source, _file in sources:
        if CAPTURED not in source:
            continue
        _walk(env.parse(source), unguarded, guarded)
    return CapturedReads(frozenset(unguarded - guarded), frozenset(guarded))


def expression_reads(env: Environment, expression: str) -> CapturedReads:
    return captured_reads(env, [("{{ " + expression + " }}", None)])


def _walk(tree: nodes.Node, unguarded: set[str], guarded: set[str]) -> None:
    stack: list[tuple[nodes.Node, bool]] = [(tree, False)]
    while stack:
        node, safe = stack.pop()
        name = _captured_name(node)
        if name is not None:
            (guarded if safe else unguarded).add(name)
            continue
        child_safe = safe or (
            (isinstance(node, nodes.Filter) and node.name in _GUARDS)
            or (isinstance(node, nodes.Test) and node.name in _GUARD_TESTS)
        )
        for child in node.iter_child_nodes():
            # a guard covers the value it filters or tests, not its own arguments
            covers = child_safe and child is getattr(node, "node", None)
            stack.append((child, safe or covers))


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


def conjunction_reads(env: Environment, expression: str) -> frozenset[str]:
    """Captured values a condition needs to hold: those read in its top-level `and` chain
    (`captured.name and captured.day`), so a step entered through it can count on them."""
    tree = env.parse("{{ " + expression + " }}")
    output = tree.body[0]
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return frozenset()
    found: set[str] = set()
    stack: list[nodes.Node] = [output.nodes[0]]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.And):
            stack.extend((node.left, node.right))
            continue
        if isinstance(node, nodes.Compare):
            node = node.expr
        name = _captured_name(node)
        if name is not None:
            found.add(name)
    return frozenset(found)
