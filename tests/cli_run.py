"""Running the `dialplan` CLI in subprocesses, shared by the CLI tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Run:
    """What one `dialplan ...` subprocess printed, and how it exited."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def record(self) -> dict[str, Any]:
        """The call record `--record -` printed after the conversation."""
        start = self.lines.index("{")
        record: dict[str, Any] = json.loads("\n".join(self.lines[start:]))
        return record

    def section(self, heading: str) -> str:
        """The text under a `## heading...` line of `dialplan render`, up to the next one."""
        found = re.search(
            rf"^## {re.escape(heading)}[^\n]*\n\n(.*?)(?:\n\n## |\Z)", self.stdout, re.S | re.M
        )
        assert found, f"no section {heading!r} in:\n{self.stdout}"
        return found.group(1).rstrip("\n")


def cli_env() -> dict[str, str]:
    """This process's environment without DIALPLAN_* settings, offline litellm."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALPLAN_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


def run_dialplan(*args: str, cwd: Path) -> Run:
    """`dialplan ARGS...` in a subprocess, as a user runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def unlocated(lines: list[str]) -> list[str]:
    """Problem lines without their `:LINE:COLUMN` (for tests about the message), after
    checking every bot-file problem has one."""
    import re

    located = re.compile(r"^(\S+?\.toml):(\d+):(\d+): ")
    for line in lines:
        if ".toml: " in line.split(" ", 1)[0] + " ":
            raise AssertionError(f"a problem line without its position: {line}")
    return [located.sub(r"\1: ", line) for line in lines]
