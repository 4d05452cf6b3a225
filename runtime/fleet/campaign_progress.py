"""The campaign's progress on a terminal or in a log."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from runtime.fleet.campaign import CampaignProgress


class ProgressBar:
    """A ``progress`` callback for the CLI. On a TTY one line redrawn in place at most
    every ``TTY_INTERVAL``; in a log, a line every ``LOG_INTERVAL`` or ``LOG_STEP`` percent."""

    TTY_INTERVAL = 0.1
    LOG_INTERVAL = 5.0
    LOG_STEP = 10
    WIDTH = 20

    def __init__(
        self, stream: TextIO | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._clock = clock
        self._shown_at: float | None = None  # None until the header is out
        self._shown_percent = 0
        self._line = ""

    def __call__(self, progress: CampaignProgress) -> None:
        now = self._clock()
        if self._shown_at is None:
            self.stream.write(progress.campaign.header() + "\n")
        elif not (progress.final or self._due(progress, now)):
            return
        line = self.describe(progress)
        if self.tty:
            # pad over the end of a longer previous line; no escape codes needed
            end = "\n" if progress.final else ""
            self.stream.write("\r" + line.ljust(len(self._line)) + end)
        elif line != self._line:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._shown_at, self._line = now, line
        self._shown_percent = _percent(progress)

    def _due(self, progress: CampaignProgress, now: float) -> bool:
        assert self._shown_at is not None
        if self.tty:
            return now - self._shown_at >= self.TTY_INTERVAL
        if progress.done == progress.total:
            return False  # the final snapshot follows at once
        stepped = _percent(progress) >= self._shown_percent + self.LOG_STEP
        return stepped or now - self._shown_at >= self.LOG_INTERVAL

    @classmethod
    def describe(cls, progress: CampaignProgress) -> str:
        filled = progress.done * cls.WIDTH // max(progress.total, 1)
        bar = "#" * filled + "." * (cls.WIDTH - filled)
        return (
            f"[{bar}] {progress.done}/{progress.total} {_percent(progress)}%  "
            f"in progress {progress.in_progress}  answered {progress.answered}  "
            f"no answer {progress.no_answer}  failed {progress.failed}  "
            f"invalid {progress.invalid}  retry {progress.retry_pending}  "
            f"{progress.calls_per_second:.1f} calls/s"
        )


def _percent(progress: CampaignProgress) -> int:
    return progress.done * 100 // max(progress.total, 1)
