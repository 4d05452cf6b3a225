"""Templates that are only text and ``{{ name }}``: rendered without Jinja.

Most greetings, goodbyes and rule replies look like "Hi {{ caller_name }}, thanks for
calling {{ clinic_name }}." Jinja spends about 8 µs per render building a context for
them, on every call set-up and every turn; joining the parts takes under 1 µs. The output
is the same as Jinja's: a value is written with ``str()``, line endings in the text become
``\\n`` as Jinja's lexer makes them, and a name the context does not have is left to Jinja
(it knows its globals, and raises the undefined-variable error the caller expects).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
_MARKERS = ("{{", "{%", "{#")
_NEWLINES = re.compile(r"\r\n|\r|\n")
# names Jinja reads as constants, not as variables
_CONSTANTS = frozenset({"true", "false", "none", "True", "False", "None"})


@dataclass(frozen=True)
class Substitution:
    literals: tuple[str, ...]  # one more than names: text before, between and after them
    names: tuple[str, ...]

    def render(self, context: Mapping[str, Any]) -> str | None:
        """The text, or None when a name is missing from ``context`` (render with Jinja)."""
        parts = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            if name not in context:
                return None
            value = context[name]
            parts.append(value if type(value) is str else str(value))
            parts.append(literal)
        return "".join(parts)


def parse_substitution(source: str) -> Substitution | None:
    """The template as literals and names, or None when it uses anything more."""
    pieces = _NAME.split(source)
    literals, names = pieces[0::2], pieces[1::2]
    if any(marker in literal for literal in literals for marker in _MARKERS):
        return None
    if any(name in _CONSTANTS for name in names):
        return None
    return Substitution(tuple(_NEWLINES.sub("\n", text) for text in literals), tuple(names))
