"""A process that used livekit ends quietly: native handles that outlive livekit's own
exit handler (held by a module global until the interpreter tears down) are let go without
`Exception ignored in: FfiHandle.__del__ ... AssertionError`."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

HOLDS_A_HANDLE_TO_THE_END = """
import runtime  # what every dialplan entry point imports first
from livekit import rtc
import builtins
builtins.kept = rtc.AudioResampler(8000, 16000, num_channels=1)  # dies at teardown
builtins.kept.push(bytearray(320))
print("done")
"""


def test_a_handle_that_outlives_livekits_runtime_is_let_go_quietly() -> None:
    run = subprocess.run(
        [sys.executable, "-c", HOLDS_A_HANDLE_TO_THE_END],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "done"
    assert "Exception ignored" not in run.stderr and "FfiHandle" not in run.stderr, run.stderr
