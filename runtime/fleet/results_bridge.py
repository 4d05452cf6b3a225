"""Hand a call record from a job's thread to the worker's `CallResults`.

Each LiveKit job runs on its own thread and event loop; the outbox writer, post-call
queue and deliverer live on the worker's loop. The record crosses over with
``run_coroutine_threadsafe`` and the job waits until it is durable, exactly as a call over
the WebSocket transports does before it frees its slot.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.call_results import CallResults
    from runtime.compiler import CompiledBot
    from runtime.record import CallRecord


class ResultsBridge:
    def __init__(self, results: CallResults, loop: asyncio.AbstractEventLoop) -> None:
        self.results = results
        self.loop = loop

    async def ended(self, record: CallRecord, bot: CompiledBot | None) -> None:
        if asyncio.get_running_loop() is self.loop:
            await self.results.ended(record, bot)
            return
        future = asyncio.run_coroutine_threadsafe(self._ended(record, bot), self.loop)
        await asyncio.wrap_future(future)

    async def _ended(self, record: CallRecord, bot: CompiledBot | None) -> None:
        await self.results.ended(record, bot)  # the post-call task stays on the worker loop

    async def checkpoint(self, record: CallRecord) -> None:
        """A call in progress stored on the worker's loop (see `runtime.call_checkpoints`)."""
        if asyncio.get_running_loop() is self.loop:
            await self.results.checkpoint(record)
            return
        future = asyncio.run_coroutine_threadsafe(self.results.checkpoint(record), self.loop)
        await asyncio.wrap_future(future)
