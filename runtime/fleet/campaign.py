"""Outbound campaigns: one call per CSV row, at most N in progress, retries for no answer.

``Campaign`` reads the CSV, keeps every row's state in a ``CampaignStore`` and places the
calls through an injected ``dial`` coroutine (the LiveKit dialer in production, a fake in
tests). The campaign id comes from the CSV's bytes and the bot, so running the same
command again resumes; an edited CSV is a new campaign. A row is committed as in progress
before its call is placed and with its outcome after the call is over, so a crash leaves
the session_id of every call that may have rung; the next run counts such a call as an
attempt and retries it (``campaign_store._open`` says why).
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from runtime.fleet.campaign_csv import read_campaign_csv
from runtime.fleet.campaign_store import (
    DONE_STATES,
    AttemptResult,
    CampaignDefinition,
    CampaignError,
    CampaignOpened,
    CampaignStore,
    StoredRow,
)
from runtime.fleet.outcome import DialOutcome

RAISE_STREAK_LIMIT = 10  # this many calls in a row raising the same error: the dialer is broken


class CampaignAborted(CampaignError):
    """The run stopped itself (a broken dialer); ``summary`` is where it got to."""

    def __init__(self, message: str, summary: CampaignSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class CampaignCall:
    """One attempt to call one row; ``session_id`` keys the call's record."""

    campaign_id: str
    bot: str
    row_number: int
    attempt: int  # 1 for the first
    to: str
    variables: dict[str, str]
    session_id: str


Dial = Callable[[CampaignCall], Awaitable[DialOutcome]]
Snapshot = TypeVar("Snapshot", bound="CampaignProgress")


@dataclass(frozen=True)
class CampaignInfo:
    campaign_id: str
    bot: str
    csv_path: Path
    total: int
    opened: CampaignOpened
    done_at_start: int  # rows done before this run dialled (invalid ones included)

    def header(self) -> str:
        text = f"campaign {self.campaign_id}: bot {self.bot}, {self.csv_path}, {self.total} rows"
        if self.opened.replaces:
            return f"{text} (new: the file changed since campaign {self.opened.replaces})"
        if not self.opened.resumed:
            return f"{text} (new)"
        cut = self.opened.interrupted
        cut_off = f"; {cut} call(s) cut off by the last run count as attempts" if cut else ""
        return f"{text} (resumed: {self.done_at_start} done before{cut_off})"


@dataclass(frozen=True)
class CampaignProgress:
    """A snapshot of a run, for the ``progress`` callback (``ProgressBar`` draws it)."""

    campaign: CampaignInfo
    done: int
    total: int
    in_progress: int
    answered: int
    no_answer: int  # attempts used up
    failed: int
    invalid: int
    retry_pending: int
    placed: int  # calls this run placed
    elapsed: float
    final: bool = False

    @property
    def pending(self) -> int:
        """Rows not done yet (all of them are done unless the run was stopped)."""
        return self.total - self.done

    @property
    def calls_per_second(self) -> float:
        return self.placed / self.elapsed if self.elapsed > 0 else 0.0


class CampaignSummary(CampaignProgress):
    """The last snapshot of a run: what ``Campaign.run`` returns."""


class Campaign:
    """Call every row of ``csv_path`` with bot ``bot``; ``await run()`` until all are done
    or ``stop()`` was called. One run per instance."""

    def __init__(
        self,
        csv_path: str | Path,
        bot: str,
        dial: Dial,
        *,
        store_path: str | Path,
        concurrency: int,
        max_attempts: int = 3,
        retry_delay: float = 300.0,
        phone_column: str | None = None,
        required: Sequence[str] = (),
        progress: Callable[[CampaignProgress], None] | None = None,
    ) -> None:
        """``required``: the bot's required variables; a row lacking one is invalid."""
        if concurrency < 1 or max_attempts < 1 or retry_delay < 0:
            raise CampaignError(
                f"concurrency {concurrency}, max_attempts {max_attempts}, retry_delay "
                f"{retry_delay}: concurrency and max_attempts must be 1 or more, the delay ≥ 0"
            )
        self.csv_path, self.bot, self.dial = Path(csv_path), bot, dial
        self.store_path, self.concurrency = Path(store_path), concurrency
        self.max_attempts, self.retry_delay = max_attempts, retry_delay
        self.phone_column, self.progress = phone_column, progress
        self.required = tuple(required)
        self._stopping = False
        self._wake = asyncio.Event()  # a call ended, a retry is due, or stop() was called
        self._run = _RunState()

    def stop(self) -> None:
        """Place no new calls; ``run()`` returns once the calls in progress have ended.
        Call it on the run's event loop (e.g. from ``loop.add_signal_handler``)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> CampaignSummary:
        definition = await asyncio.to_thread(
            read_campaign_csv, self.csv_path, self.bot, self.phone_column, self.required
        )
        store = await asyncio.to_thread(CampaignStore, self.store_path)
        try:
            return await self._run_with(store, definition)
        finally:
            await store.aclose()

    async def _run_with(
        self, store: CampaignStore, definition: CampaignDefinition
    ) -> CampaignSummary:
        run = self._run
        run.store = store
        opened = await store.open_campaign(
            definition, max_attempts=self.max_attempts, retry_delay=self.retry_delay
        )
        counts = await store.counts(definition.campaign_id)
        run.counts = Counter({state: getattr(counts, state) for state in (*DONE_STATES, "retry")})
        run.counts["pending"] = counts.pending
        run.info = CampaignInfo(
            definition.campaign_id, self.bot, self.csv_path, counts.total, opened, counts.done
        )
        for row in await store.unfinished_rows(definition.campaign_id):
            run.rows[row.row_number] = row
            if row.state == "retry":
                run.retries.append((row.next_attempt_at or 0.0, row.row_number))
            else:
                run.fresh.append(row.row_number)
        heapq.heapify(run.retries)
        run.started = time.monotonic()
        self._report()
        await self._dial_all()
        if run.fatal is not None:
            raise run.fatal
        if run.aborted is not None:
            await store.requeue(run.info.campaign_id, run.streak, "queued again: dialer broken")
            run.counts["failed"] -= len(run.streak)
        summary = self._snapshot(CampaignSummary, final=True)
        if self.progress is not None:
            self.progress(summary)
        if run.aborted is not None:
            raise CampaignAborted(run.aborted, summary)
        return summary

    async def _dial_all(self) -> None:
        """Start due rows while there is room; sleep until a call ends or a retry is due."""
        loop = asyncio.get_running_loop()
        run = self._run
        try:
            while True:
                self._start_due_calls()
                if not run.in_flight and (self._stopping or not (run.fresh or run.retries)):
                    return
                timer = None
                if run.retries and not self._stopping and len(run.in_flight) < self.concurrency:
                    timer = loop.call_later(run.retries[0][0] - time.time(), self._wake.set)
                await self._wake.wait()
                self._wake.clear()
                if timer is not None:
                    timer.cancel()
        except asyncio.CancelledError:
            # cancelled like a crash: calls in progress stay in_progress for the next run
            for task in run.in_flight:
                task.cancel()
            await asyncio.gather(*run.in_flight, return_exceptions=True)
            raise

    def _start_due_calls(self) -> None:
        run, now = self._run, time.time()
        while not self._stopping and len(run.in_flight) < self.concurrency:
            # a due retry goes first: its delay should not grow by the rest of the list
            if run.retries and run.retries[0][0] <= now:
                row = run.rows[heapq.heappop(run.retries)[1]]
            elif run.fresh:
                row = run.rows[run.fresh.popleft()]
            else:
                return
            run.counts[row.state] -= 1
            run.calling += 1
            task = asyncio.create_task(self._attempt(row))
            run.in_flight.add(task)
            task.add_done_callback(self._call_ended)

    def _call_ended(self, task: asyncio.Task[None]) -> None:
        self._run.in_flight.discard(task)
        self._wake.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # the store failed or the progress callback raised: nothing else is safe
            self._run.fatal = self._run.fatal or error
            self.stop()

    async def _attempt(self, row: StoredRow) -> None:
        run = self._run
        call = CampaignCall(
            run.info.campaign_id,
            self.bot,
            row.row_number,
            row.attempts + 1,
            row.phone,
            dict(row.variables),  # the dialer may change its copy; a retry gets the row's
            uuid.uuid4().hex,
        )
        await run.store.begin_attempt(
            call.campaign_id, call.row_number, call.attempt, call.session_id
        )
        run.placed += 1
        result = await self._dial_one(call)
        await run.store.finish_attempt(call.campaign_id, call.row_number, call.session_id, result)
        run.calling -= 1
        run.counts[result.state] += 1
        if result.state == "retry" and result.next_attempt_at is not None:
            run.rows[row.row_number] = replace(row, state="retry", attempts=call.attempt)
            heapq.heappush(run.retries, (result.next_attempt_at, row.row_number))
        self._report()

    async def _dial_one(self, call: CampaignCall) -> AttemptResult:
        try:
            outcome = await self.dial(call)
        except Exception as exc:
            self._dialer_raised(call, exc)
            return AttemptResult("failed", "error", cause=f"{type(exc).__name__}: {exc}")
        if self._run.aborted is None:
            self._run.streak_type, self._run.streak = None, []
        return self._result(call, outcome)

    def _result(self, call: CampaignCall, outcome: DialOutcome) -> AttemptResult:
        status, room = outcome.sip_status, outcome.room or None
        if outcome.answered:
            return AttemptResult("answered", "answered", outcome.cause, status, room)
        reason = outcome.disconnected_by.value if outcome.disconnected_by else "error"
        cause = outcome.cause or (f"SIP {status}" if status else reason)
        if not outcome.retryable:
            return AttemptResult("failed", reason, cause, status, room)
        if call.attempt >= self.max_attempts:
            return AttemptResult("no_answer", reason, cause, status, room)
        retry_at = time.time() + self.retry_delay
        return AttemptResult("retry", reason, cause, status, room, retry_at)

    def _dialer_raised(self, call: CampaignCall, error: Exception) -> None:
        """Count calls in a row failing with the same exception type; at the limit, stop
        the campaign before a broken dialer fails every row."""
        run, kind = self._run, type(error)
        if kind is not run.streak_type:
            if run.aborted is not None:
                return
            run.streak_type, run.streak = kind, []
        run.streak.append(call.row_number)
        if len(run.streak) >= RAISE_STREAK_LIMIT and run.aborted is None:
            run.aborted = (
                f"{self.csv_path}: stopped campaign {call.campaign_id}: the dialer raised "
                f"{kind.__name__} on {len(run.streak)} calls in a row (last: {error}). Those "
                "rows are queued again; fix the dialer and run the same command to resume."
            )
            self.stop()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self._snapshot(CampaignProgress))

    def _snapshot(self, kind: type[Snapshot], *, final: bool = False) -> Snapshot:
        run, counts = self._run, self._run.counts
        return kind(
            run.info,
            sum(counts[state] for state in DONE_STATES),
            run.info.total,
            run.calling,
            counts["answered"],
            counts["no_answer"],
            counts["failed"],
            counts["invalid"],
            counts["retry"],
            run.placed,
            time.monotonic() - run.started,
            final,
        )


@dataclass
class _RunState:
    """What one run keeps in memory; the store has the durable copy."""

    store: CampaignStore = field(init=False)
    info: CampaignInfo = field(init=False)
    counts: Counter[str] = field(default_factory=Counter)
    rows: dict[int, StoredRow] = field(default_factory=dict)
    fresh: deque[int] = field(default_factory=deque)  # rows never tried, in order
    retries: list[tuple[float, int]] = field(default_factory=list)  # heap of (due at, row)
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    placed: int = 0
    calling: int = 0  # calls started whose outcome is not committed yet
    started: float = 0.0
    fatal: BaseException | None = None
    aborted: str | None = None
    streak_type: type[Exception] | None = None
    streak: list[int] = field(default_factory=list)  # rows whose dial raised streak_type
