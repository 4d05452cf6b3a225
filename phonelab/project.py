"""A dialplan project on the lab's stack: the shipped bots, a `dialplan.toml`, the CLI.

    project = Project(workdir, stack, fleet_toml)
    project.provision()                          # `dialplan provision`
    worker = project.start_worker()              # `dialplan start`, registered
    project.wait_record(lambda r: ...)           # the records the worker delivered

Records are read from the JSON-lines sink every worker of the project appends to (the
outbox delivers there), so a test sees exactly what an operator's sink receives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from phonelab.processes import LabError, Process
from phonelab.stack import REPO, LiveKitStack

DIALPLAN = REPO / ".venv" / "bin" / "dialplan"

Record = dict[str, Any]


def lab_bot(bot_toml: str) -> str:
    """A shipped bot for the lab: without its opening hours (the lab's calls must not
    depend on the clock) and recording its calls (the record keeps the audio)."""
    bot_toml = re.sub(r"(?ms)^\[schedule\]\n.*?(?=^\[|\Z)", "", bot_toml)
    if not re.search(r"(?m)^\[recording\]", bot_toml):
        bot_toml += "\n[recording]\nenabled = true\n"
    return bot_toml


class Project:
    def __init__(self, workdir: Path, stack: LiveKitStack, fleet_toml: str) -> None:
        self.dir = workdir
        self.stack = stack
        workdir.mkdir(parents=True, exist_ok=True)
        for folder in ("bots", "prompts"):
            if not (workdir / folder).exists():
                shutil.copytree(REPO / folder, workdir / folder)
        for bot in (workdir / "bots").glob("*.toml"):
            bot.write_text(lab_bot(bot.read_text()))
        self.write_config(fleet_toml)
        self.workers: list[Process] = []

    @property
    def records_file(self) -> Path:
        return self.dir / "records.jsonl"

    def write_config(self, fleet_toml: str) -> None:
        (self.dir / "dialplan.toml").write_text(fleet_toml)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.stack.env(), "PYTHONUNBUFFERED": "1", **extra}

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DIALPLAN), *args],
            cwd=self.dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def provision(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run("provision", *args)
        if result.returncode != 0:
            raise LabError(f"dialplan provision failed:\n{result.stdout}{result.stderr}")
        return result

    def start_worker(
        self,
        *args: str,
        name: str = "worker",
        ready_timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> Process:
        """`dialplan start` in the project, returned once LiveKit has registered it."""
        worker = Process(
            name,
            [DIALPLAN, "start", *args],
            self.dir / f"{name}.log",
            cwd=self.dir,
            env=env or self.env(),
        )
        self.workers.append(worker)
        worker.wait_for_output("registered worker", timeout=ready_timeout)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=60)
        self.workers.clear()

    def records(self) -> list[Record]:
        if not self.records_file.exists():
            return []
        return [
            json.loads(line) for line in self.records_file.read_text().splitlines() if line.strip()
        ]

    def wait_records(
        self,
        count: int,
        match: Callable[[Record], bool] = lambda _r: True,
        timeout: float = 60.0,
        workers: Sequence[Process] = (),
    ) -> list[Record]:
        deadline = time.monotonic() + timeout
        found: list[Record] = []
        while time.monotonic() < deadline:
            found = [record for record in self.records() if match(record)]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        logs = "\n".join(f"--- {w.name}\n{w.tail(20)}" for w in (workers or self.workers))
        raise LabError(f"{len(found)} of {count} record(s) within {timeout:g} s\n{logs}")
