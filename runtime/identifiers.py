"""The shapes of names a bot file gives things: bot ids, and the names templates and LLM
tool schemas read (variables, captured values, steps, tools)."""

from __future__ import annotations

import re

BOT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
