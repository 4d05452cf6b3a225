"""`dialplan dev` as a bot author runs it: a real process, real files, real keystrokes."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.cli_run import cli_env

BOT = (
    '[prompt]\nsystem = "x"\ngreeting = "Hello."\n[llm]\nprovider = "rules"\ndefault = "{reply}"\n'
)


class DevServer:
    """`dialplan dev` (or another long-running command) in a subprocess, its output read
    line by line as it comes."""

    def __init__(self, *args: str, cwd: Path, command: str = "dev") -> None:
        env = cli_env() | {"PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", command, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; output so far:\n" + "\n".join(self.seen))

    def rest(self) -> list[str]:
        """Every line not read yet (after `stop`: the end of the output)."""
        self.pump.join(timeout=5)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return self.seen

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.type("/quit")
        try:
            return self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.pump.join(timeout=5)  # it stops at the end of the output
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()


def test_dev_reloads_saves_serves_calls_and_restarts_on_code(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    (bots / "desk.toml").write_text(BOT.format(reply="One."))
    code = tmp_path / "myplugin"
    code.mkdir()
    (code / "tool.py").write_text("VALUE = 1\n")

    server = DevServer("bots", "--watch-code", str(code), "--port", "0", cwd=tmp_path)
    try:
        assert "1 bot(s)" in server.wait_for("dialplan dev —")
        server.wait_for("desk")
        widget = server.wait_for("browser widget").split()[-1]
        server.wait_for("[dev] watching for changes")

        (bots / "desk.toml").write_text(BOT.format(reply="Two."))
        reload_line = server.wait_for("[reload] ~ desk")
        new_version = reload_line.split(" -> ")[1].split()[0]
        # the call server serves the reloaded version too
        with urllib.request.urlopen(widget + "api/bots", timeout=10) as answer:
            assert json.load(answer)["bots"][0]["version"] == new_version

        (bots / "desk.toml").write_text(BOT.format(reply="Two.").replace("[llm]", "[llm"))
        assert "[reload] error: " in server.wait_for("desk.toml:4:5: TOML syntax error")
        server.wait_for("still serving the last good version of: desk")

        server.type("/call desk")
        server.wait_for("bot> Hello.")
        server.type("anyone there?")
        server.wait_for("bot> Two.")  # the last good version answers
        server.type("/hangup")
        server.wait_for("[call] ended: disconnected_by=customer")

        # fixed back to the version that kept serving: said so, not "nothing changed"
        (bots / "desk.toml").write_text(BOT.format(reply="Two."))
        fixed = server.wait_for("[reload] desk is valid again")
        assert "back to the version that kept serving" in fixed

        # a saved scenario file is checked against its bot at once
        scenarios = bots / "desk.scenarios.toml"
        scenarios.write_text(
            '[[scenarios]]\nname = "x"\nmocks = { nope = { result = 1 } }\n'
            'turns = [ { say = "hi" } ]\n'
        )
        error = server.wait_for("[scenarios] error: ")
        assert "desk.scenarios.toml:3:1: scenarios[0].mocks.nope: bot 'desk' binds no tool" in error
        scenarios.write_text('[[scenarios]]\nname = "x"\nturns = [ { say = "hi" } ]\n')
        server.wait_for("[scenarios] ok desk.scenarios.toml: 1 scenario(s)")

        os.utime(code / "tool.py")
        (code / "tool.py").write_text("VALUE = 2\n")
        server.wait_for("[dev] Python code changed (tool.py): restarting")
        server.wait_for("dialplan dev —")  # a fresh process printed its banner
        server.wait_for("[dev] watching for changes")
    finally:
        code_on_quit = server.stop()
    assert code_on_quit == 0  # /quit ends the server, restart runner included
