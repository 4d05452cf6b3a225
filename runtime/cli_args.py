"""Parsing helpers shared by CLI commands: `--var name=value` and friends."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """A command-line mistake; printed without a traceback, exit status 2."""


def parse_vars(pairs: Iterable[str], files: Iterable[str] = ()) -> dict[str, Any]:
    """``name=value`` pairs; a value that is valid JSON (a number, true, [..], {..}) is
    decoded, anything else stays a string. ``--vars-file`` JSON objects come first."""
    variables: dict[str, Any] = {}
    for file in files:
        try:
            data = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--vars-file {file}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"--vars-file {file}: expected a JSON object")
        variables.update(data)
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var {pair!r}: write it as name=value")
        variables[name.strip()] = decode_value(raw)
    return variables


def decode_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in '[{"' or stripped in ("true", "false", "null"):
        try:
            return json.loads(stripped)
        except ValueError:
            return raw
    try:
        number = json.loads(stripped)
    except ValueError:
        return raw
    # keep things like phone numbers and zip codes as strings
    return number if isinstance(number, int | float) and str(number) == stripped else raw


def caller_arguments(parser: argparse.ArgumentParser) -> None:
    """Both ends of a simulated line (`call.caller`, `call.callee` in templates)."""
    parser.add_argument("--caller", metavar="NUMBER", help="the caller's number (call.caller)")
    parser.add_argument("--called", metavar="NUMBER", help="the number called (call.callee)")
