"""Durations in bot files: ``"20s"``, ``"15m"``, ``"1h30m"``, ``"250ms"`` or plain seconds."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds as a float; raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '20s', '15m' or '1h30m', got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '20s' or '15m', got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(
            f"{value!r} is not a duration; write e.g. '250ms', '20s', '15m' or '1h30m'"
        )
    return total


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds % 3600 == 0 and seconds:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0 and seconds:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: '250ms', '20s', '15m', '1h30m' or seconds",
        }
    ),
]
