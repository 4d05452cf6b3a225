"""Every error dialplan raises on purpose.

    DialplanError
    ├── BotInvalid            one bot file has problems (a list of `Problem`s)
    ├── PluginError
    │   ├── PluginLoadError   a plugin raised at import; other plugins still load
    │   ├── DuplicateName     two plugins registered the same provider/tool name
    │   └── UnknownName       a bot names a provider/tool nobody registered
    ├── CallSetupError        a call cannot start (unknown bot, missing variables,
    │                         bad overrides, a template that fails on this call's data)
    │   └── CallRejected      per-call config refused the call (the caller is told why)
    └── MissingExtra          an optional provider's package is not installed

Messages name the file, the key path or the plugin, say what is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one bot file, phrased for the person who wrote it."""

    file: Path | None
    message: str
    key: str = ""
    fix: str = ""
    line: int | None = None
    column: int | None = None

    def location(self) -> str:
        where = str(self.file) if self.file else "<bot>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        text = self.location() + ": "
        if self.key:
            text += f"{self.key}: "
        text += self.message
        if self.fix:
            text += f" ({self.fix})"
        return text


class DialplanError(Exception):
    """Base class of dialplan's own errors."""


class BotInvalid(DialplanError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PluginError(DialplanError):
    pass


class PluginLoadError(PluginError):
    def __init__(self, plugin: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.cause = cause
        super().__init__(
            f"plugin {plugin!r} failed to load: {type(cause).__name__}: {cause} "
            f"(fix the plugin, uninstall it, or block it with DIALPLAN_DISABLED_PLUGINS={plugin})"
        )


class DuplicateName(PluginError):
    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        super().__init__(
            f"{kind} {name!r} is registered twice: by plugin {first!r} and by plugin {second!r} "
            f"(uninstall one, or block it with DIALPLAN_DISABLED_PLUGINS={second})"
        )


class UnknownName(PluginError):
    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown {kind} {name!r}; {self.fix}")

    @property
    def fix(self) -> str:
        return suggest(self.name, self.known, what=f"registered {self.kind}s")


class CallSetupError(DialplanError):
    pass


class CallRejected(CallSetupError):
    """A ``resolve_call`` plugin refused this call (e.g. the config endpoint answered 404).
    ``message`` is what the caller hears before the line closes; the record says
    ``disconnected_by = "rejected"`` with ``str(self)`` as the cause."""

    def __init__(self, cause: str, message: str = "") -> None:
        super().__init__(cause)
        self.message = message


class MissingExtra(DialplanError):
    def __init__(self, provider: str, package: str, extra: str) -> None:
        super().__init__(
            f"provider {provider!r} needs the {package!r} package: pip install 'dialplan[{extra}]'"
        )


def suggest(name: str, known: Sequence[str], *, what: str) -> str:
    """'did you mean X?' when something is close, always followed by the full list."""
    listing = f"{what}: {', '.join(known) if known else '(none)'}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`? {listing}"
    return listing


# what people write for the value types of analysis fields and captures
_TYPE_SYNONYMS = {
    "boolean": "bool",
    "int": "number",
    "integer": "number",
    "float": "number",
    "str": "string",
    "text": "string",
    "array": "list",
}


def type_choice(value: str, choices: Sequence[str]) -> str:
    """'did you mean `bool`?' for a value type written another way, then the choices."""
    meant = _TYPE_SYNONYMS.get(value.lower())
    listing = ", ".join(f'"{choice}"' for choice in choices)
    if meant in choices:
        return f'did you mean "{meant}"? types: {listing}'
    return suggest(value, list(choices), what="types")
