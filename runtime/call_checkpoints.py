"""A call in progress kept durable, so a process that dies mid-call still leaves a record.

When a call starts, and every ``CHECKPOINT_SECONDS`` after, its record as far as it got
(transcript, timeline, step, captured values; no end yet) is stored *held* in the outbox,
like a record whose post-call work is running. The final record replaces it. A process
that is killed leaves the last checkpoint held; the next process to start on that outbox
(or any worker of a fleet sharing PostgreSQL, once the dead worker's session is gone)
closes it as `error` with the last known state, and delivers it (`CallResults.start`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from runtime.call import CallContext
from runtime.record import CallRecord

log = logging.getLogger("dialplan.checkpoints")

CHECKPOINT_SECONDS = 10.0  # how much of a call a killed process may lose at most

Save = Callable[[CallRecord], Awaitable[None]]


class Checkpoints:
    """Store ``call``'s progress record with ``save`` now, then every ``every`` seconds,
    until ``aclose()`` (before the final record is handed over)."""

    def __init__(self, call: CallContext, save: Save, every: float = CHECKPOINT_SECONDS) -> None:
        self.call = call
        self.save = save
        self.every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dialplan.checkpoints")

    async def _run(self) -> None:
        while True:
            try:
                await self.save(self.call.progress_record())
            except Exception:  # a full disk must not end the call; the final put will say
                log.exception("could not store a checkpoint of call %s", self.call.session_id)
            await asyncio.sleep(self.every)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
