"""Processes the lab starts: logged to a file, waited on for readiness, always stopped."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_started: weakref.WeakSet[Process] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """Whatever a crashed test or demo left running goes with the process that started
    it (children run in their own sessions, so nothing else would stop them)."""
    for process in list(_started):
        if process.running():
            process.stop(timeout=5)


class LabError(RuntimeError):
    """A part of the stack did not start or did not answer; the message says which."""


class Process:
    """One child process, its output in ``log``; ``stop()`` is safe to call twice."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | Path],
        log: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("ab")
        self.popen = subprocess.Popen(
            [str(arg) for arg in argv],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a stop reaches its children too
        )
        _started.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Poll ``ready`` until it holds; a process that exits first fails at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not self.running():
                raise LabError(
                    f"{self.name} exited (status {self.popen.returncode}) before {what}; "
                    f"its log {self.log} ends:\n{self.tail()}"
                )
            time.sleep(0.05)
        raise LabError(
            f"{self.name}: no {what} within {timeout:g} s; {self.log} ends:\n{self.tail()}"
        )

    def wait_for_output(self, text: str, timeout: float = 60.0, *, after: int = 0) -> None:
        self.wait_until(lambda: text in self.output()[after:], f"{text!r} in its log", timeout)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self._log_file.close()
