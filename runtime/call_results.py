"""What happens to a call record after the hang-up.

1. The record is written to the outbox (held) before the call's capacity slot is freed:
   from then on a crash cannot lose it.
2. ``call_ended`` plugins hear about it.
3. Post-call work (dispositions, LLM analysis, QC) runs in a task of its own, off the media
   path: it never delays the hang-up or the next call.
4. The finished record is released to the deliverer (webhooks, JSONL, plugins).

Records a crash left held (post-call work interrupted) are released at the next start,
marked as such, so they are still delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runtime.call import died_mid_call
from runtime.delivery import OutboxInUse
from runtime.postcall import run_post_call
from runtime.record import CallRecord

if TYPE_CHECKING:
    from runtime.compiler import CompiledBot
    from runtime.delivery import Deliverer
    from runtime.record_store import RecordStore
    from runtime.registry import Registry

log = logging.getLogger("dialplan.results")

INTERRUPTED = "post-call work was interrupted (the process stopped); delivered without it"


class CallResults:
    def __init__(
        self,
        registry: Registry,
        outbox: RecordStore | None = None,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.registry = registry
        self.outbox = outbox
        self.deliverer = deliverer
        # hear every finished record (after post-call work): the server's recent list,
        # a records directory, tests
        self.listeners: list[Callable[[CallRecord], None]] = []
        self.durable_ms: list[float] = []  # hang-up → record durable, per call (bounded)
        self._post_call: set[asyncio.Task[CallRecord]] = set()
        self.session_ids: list[str] = []  # the records this process made (the last 1,000)
        self._ended: set[str] = set()  # calls whose final record was handed over
        # after `aclose(deliver_within=...)`: (session_id, sink, state) not delivered yet
        self.undelivered: list[tuple[str, str, str]] = []
        # the pid of another process delivering from the same outbox, if one was found
        self.delivered_by: str | None = None

    def describe(self) -> str:
        if self.outbox is None:
            return "kept in memory (no outbox, no delivery)"
        sinks = ", ".join(self.outbox.sinks) or "no sinks (add --webhook or --results-jsonl)"
        return f"outbox {self.outbox.path} → {sinks}"

    async def start(self, *, beside_a_deliverer: bool = False) -> None:
        """Recover what a crash left held, then deliver. ``beside_a_deliverer``: a one-off
        command (`dialplan call`, a campaign) may run where a worker already delivers
        from the same outbox; it then only stores its records and that worker sends them."""
        if self.deliverer is not None:
            try:
                self.deliverer.start()
            except OutboxInUse as exc:
                if not beside_a_deliverer:
                    raise
                # a worker or server beside this command delivers from the same outbox:
                # it sends what this process stores, and the held records are its calls
                # in progress, not interrupted ones (releasing them would cut them off)
                self.deliverer = None
                self.delivered_by = exc.holder
                log.info("records stored here are delivered by pid %s", exc.holder)
                return
        if self.outbox is not None:
            now = dt.datetime.now(dt.timezone.utc)
            for record in await self.outbox.held():
                if record.ended_at is None:  # a checkpoint: the call itself was cut off
                    record = died_mid_call(record, now)
                    log.warning("closed %s, cut off mid-call: %s", record.session_id, record.cause)
                else:
                    log.warning(
                        "released %s, whose post-call work was interrupted", record.session_id
                    )
                record.analysis_error = record.analysis_error or INTERRUPTED
                await self.outbox.release(record)

    async def checkpoint(self, record: CallRecord) -> None:
        """A call in progress, as far as it got, stored held (see `call_checkpoints`).
        Never after the call's final record: that one must win."""
        if self.outbox is not None and record.session_id not in self._ended:
            await self.outbox.put(record, held=True)

    async def ended(self, record: CallRecord, bot: CompiledBot | None) -> asyncio.Task[CallRecord]:
        """Make the record durable now; post-call work and delivery follow in a task."""
        started = time.perf_counter()
        self._ended.add(record.session_id)
        if len(self._ended) > 10_000:  # only a checkpoint racing its own call's end matters
            self._ended = {record.session_id}
        self.session_ids.append(record.session_id)
        del self.session_ids[:-1000]
        if self.outbox is not None:
            await self.outbox.put(record, held=True)
            self.durable_ms.append((time.perf_counter() - started) * 1000)
            del self.durable_ms[:-1000]
        try:
            self.registry.hook.call_ended(record=record)
        except Exception:  # a plugin's bug must not lose the record for everyone else
            log.exception("a call_ended hook failed for %s", record.session_id)
        task = asyncio.create_task(self._finish(record, bot), name="dialplan.post_call")
        self._post_call.add(task)
        task.add_done_callback(self._post_call.discard)
        return task

    async def _finish(self, record: CallRecord, bot: CompiledBot | None) -> CallRecord:
        if bot is not None:
            record = await run_post_call(record, bot, self.registry)
        if self.outbox is not None:
            await self.outbox.release(record)
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.exception("a record listener failed for %s", record.session_id)
        return record

    def _undelivered(self) -> list[tuple[str, str, str]]:
        if self.outbox is None:
            return []
        missing: list[tuple[str, str, str]] = []
        for session_id in self.session_ids:
            entry = self.outbox.entry(session_id)
            if entry is None:
                continue
            missing += [
                (session_id, status.sink, "held" if entry.held else status.state)
                for status in entry.deliveries
                if status.state != "delivered"
            ]
        return missing

    async def drain(self) -> None:
        """Wait for the post-call work of every ended call."""
        while self._post_call:
            await asyncio.gather(*list(self._post_call), return_exceptions=True)

    async def aclose(self, grace: float = 30.0, *, deliver_within: float | None = None) -> None:
        """Let post-call work finish (for up to ``grace`` seconds: what is cut short stays
        held and is released at the next start), then stop delivering. A short-lived
        command passes ``deliver_within``: the records it made get that long to be
        delivered first, and `undelivered` says which were not."""
        try:
            await asyncio.wait_for(self.drain(), grace)
        except asyncio.TimeoutError:
            log.warning("%d calls' post-call work left for the next start", len(self._post_call))
            for task in list(self._post_call):
                task.cancel()
            await asyncio.gather(*list(self._post_call), return_exceptions=True)
        if self.deliverer is not None and deliver_within is not None:
            await self.deliverer.settle(deliver_within)
            self.undelivered = await asyncio.to_thread(self._undelivered)
        if self.deliverer is not None:
            await self.deliverer.aclose()
        if self.outbox is not None:
            await self.outbox.aclose()
