"""Shared fixtures: a fresh registry per test and helpers to write bots into a temp dir."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from runtime.registry import Registry, load_registry

REPO = Path(__file__).resolve().parent.parent

# tests/phone need the real LiveKit stack in a private network namespace: `make
# phone-tests` (part of `make test`) builds the stack and runs them inside one
collect_ignore = [] if os.environ.get("DIALPLAN_PRIVATE_NET") else ["phone"]


@pytest.fixture
def registry() -> Registry:
    """A fresh plugin manager and registry for every test (entry points included)."""
    return load_registry()


@pytest.fixture
def bot_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write ``bots/<name>.toml`` (and optional prompts) under tmp_path; returns bots/."""
    bots = tmp_path / "bots"
    prompts = tmp_path / "prompts"
    bots.mkdir()
    prompts.mkdir()

    def write(name: str = "", toml: str = "", templates: dict[str, str] | None = None) -> Path:
        if name:
            (bots / f"{name}.toml").write_text(textwrap.dedent(toml), encoding="utf-8")
        for rel, text in (templates or {}).items():
            path = prompts / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return bots

    return write


MINIMAL_BOT = """
[prompt]
system = "You are {{ bot.id }}."
[llm]
provider = "rules"
"""
