"""Problems of a TOML file (a bot, a scenario file, the fleet config), located for the
person who wrote it: TOML syntax errors, pydantic validation errors turned into key paths
with a fix, and the line and column of a key path.

Where a key path (`tools[2].url`, `steps.triage.next[0].to`) is written in a TOML file,
so a problem found after parsing (by the schema, by the flow checks) still points at a
line and column. The TOML parser keeps no positions, so this reads the text the way a
person does: table headers, array-of-table headers (counted per parent), `key = value`
lines and dotted keys. A key inside an inline table or a multi-line value resolves to the
line of the key that holds it."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runtime import toml_parser
from runtime.errors import Problem, suggest

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*(\]\]?)\s*(#.*)?$")
_NAME = r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'"""  # a bare or quoted key
_KEY = re.compile(rf"^(\s*)((?:{_NAME})(?:\s*\.\s*(?:{_NAME}))*)\s*=")
_PART = re.compile(_NAME)
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based, where the key starts


def _parts(dotted: str) -> list[str]:
    return [part.strip("\"'") for part in _PART.findall(dotted)]


def key_positions(text: str) -> dict[KeyPath, Position]:
    """Every key path the text writes, with where it is first written."""
    positions: dict[KeyPath, Position] = {}
    prefix: KeyPath = ()
    counts: dict[KeyPath, int] = {}
    in_string: str | None = None  # the closing quotes of a multi-line string
    depth = 0  # brackets still open from a multi-line array or inline table
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            depth = max(0, depth + _balance(line))
            continue
        header = _HEADER.match(line)
        if header and header.group(1) == header.group(3)[::-1].replace("]", "["):
            names = tuple(_parts(header.group(2)))
            if header.group(1) == "[[":
                index = counts.get(names, 0)
                counts[names] = index + 1
                prefix = (*_resolved(names, prefix, counts), index)
                # a new element: arrays below it count from zero again
                for nested in [k for k in counts if k[: len(names)] == names and k != names]:
                    del counts[nested]
            else:
                prefix = _resolved(names, prefix, counts)
            positions.setdefault(prefix, Position(number, line.index("[") + 1))
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        path = (*prefix, *_parts(key.group(2)))
        for end in range(len(prefix) + 1, len(path) + 1):
            positions.setdefault(path[:end], Position(number, len(key.group(1)) + 1))
        value = line[key.end() :]
        for quotes in ('"""', "'''"):
            if value.count(quotes) % 2 == 1:
                in_string = quotes
        if in_string is None:
            depth = max(0, _balance(value))
    return positions


def _resolved(names: tuple[str, ...], prefix: KeyPath, counts: dict[KeyPath, int]) -> KeyPath:
    """A header's path with the indices of the arrays of tables it lies within: in
    `[[scenarios.turns]]`, `scenarios` is the current `[[scenarios]]` element."""
    resolved: list[str | int] = []
    for end, name in enumerate(names, start=1):
        resolved.append(name)
        if end < len(names) and names[:end] in counts:
            resolved.append(counts[names[:end]] - 1)
    return tuple(resolved)


def _balance(text: str) -> int:
    """Brackets and braces opened minus closed, strings and comments left out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text).split("#", 1)[0]
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def parse_key(key: str) -> KeyPath:
    """`tools[2].url` -> ("tools", 2, "url")."""
    return tuple(
        int(index) if index else name for name, index in _PATH_PART.findall(key) if name or index
    )


def with_positions(problems: list[Problem], text: str, file: object | None = None) -> list[Problem]:
    """The problems, in order, each located at its key's line and column when it has none
    yet (with ``file``: only the problems of that file; a prompt file's keep theirs)."""
    positions: dict[KeyPath, Position] | None = None
    located: list[Problem] = []
    for problem in problems:
        if problem.line is not None or not problem.key or (file and problem.file != file):
            located.append(problem)
            continue
        if positions is None:
            positions = key_positions(text)
        path = parse_key(problem.key)
        found = None
        for end in range(len(path), 0, -1):  # the key, else the nearest key holding it
            found = positions.get(path[:end])
            if found is not None:
                break
        located.append(
            problem if found is None else replace(problem, line=found.line, column=found.column)
        )
    return located


def toml_problem(path: Path, exc: toml_parser.TOMLDecodeError) -> Problem:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line = column = None
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()].strip()
    return Problem(
        path,
        f"TOML syntax error: {message}",
        line=line,
        column=column,
        fix="see https://toml.io for the syntax",
    )


def key_path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def located_problem(
    path: Path | None, prefix: str, model: type[BaseModel], error: Mapping[str, Any]
) -> Problem:
    loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
    key = key_path(loc)
    if prefix:
        key = f"{prefix}.{key}" if key else prefix
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        return Problem(
            path,
            "unknown key",
            key=key,
            fix=suggest(str(loc[-1]), sorted(known), what="allowed keys"),
        )
    if kind == "missing":
        return Problem(path, "is required but missing", key=key, fix="add it")
    message = error["msg"]
    if kind.startswith("value_error"):
        message = message.removeprefix("Value error, ")
    elif "input" in error and kind not in ("model_type", "dict_type"):
        message = f"{message} (got {error['input']!r})"
    return Problem(path, message, key=key)


def _is_union_tag(part: int | str) -> bool:
    # pydantic puts the union member's type name in the location ("list[str]", "literal[...]")
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> set[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return set()
        current = _model_in(fields[part].annotation)
        if current is None:
            return set()
    return set(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
