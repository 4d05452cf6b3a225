"""Flow bots for the validation tests: a head, the tools they bind, and helpers that write
a bot into a temporary bots/ directory and load it as the catalog (and `dialplan
validate`) do."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from runtime.catalog import CatalogSnapshot, load_catalog
from runtime.compiler import CompiledBot
from runtime.errors import Problem
from runtime.registry import Registry

BotDir = Callable[..., Path]


HEAD = """
[prompt]
system = "You are a test bot."
[llm]
provider = "rules"
"""

TOOLS = """
[[tools]]
use = "end_call"
[[tools]]
use = "transfer_call"
to = "+15550100"
"""

# a tool whose answer sets captured values
LOOKUP = """
[[tools]]
use = "http"
name = "lookup"
description = "look the caller's account up"
url = "https://crm.example.com/accounts"
capture = { account = "result.account", tier = "result.tier" }
"""


def bot(flow: str, *, llm: str = "", tools: str = TOOLS) -> str:
    """A bot: the head, ``llm`` lines for its `rules` LLM, its ``flow`` tables, ``tools``."""
    return HEAD + textwrap.dedent(llm) + textwrap.dedent(flow) + tools


def load(bot_dir: BotDir, registry: Registry, toml: str, **templates: str) -> CatalogSnapshot:
    """Load ``toml`` as bots/b.toml (``templates``: files under prompts/, `/` as `__`)."""
    files = {name.replace("__", "/"): text for name, text in templates.items()}
    return load_catalog(bot_dir("b", toml, files), registry)


def problems(bot_dir: BotDir, registry: Registry, toml: str, **templates: str) -> list[Problem]:
    return list(load(bot_dir, registry, toml, **templates).problems)


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, "\n".join(str(p) for p in found)
    return found[0]


def valid(bot_dir: BotDir, registry: Registry, toml: str, **templates: str) -> CompiledBot:
    snapshot = load(bot_dir, registry, toml, **templates)
    assert snapshot.problems == (), "\n".join(str(p) for p in snapshot.problems)
    return snapshot.get("b")
