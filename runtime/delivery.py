"""The deliverer: sends every due delivery in the outbox to its sink, retries with backoff,
and dead-letters what keeps failing.

Everything it knows is in the outbox, so a restart loses nothing: a send that was in
flight when the process died is still pending and goes out again. Delivery is therefore
at least once; receivers deduplicate by the ``Idempotency-Key`` (the session_id).

Retries use exponential backoff with full jitter: after the n-th failed attempt the next
one waits a uniformly random time in [0, min(cap, base·2^(n-1))], which spreads a burst of
failures (a webhook that was down) instead of retrying them in lockstep. After
``max_attempts`` failures, or at once when the receiver refuses the record
(``DeliveryRefused``), the delivery is dead until ``dialplan outbox retry``.

One deliverer per outbox file: it holds an advisory lock beside the database so a second
one (``dialplan outbox deliver`` while the server runs) fails with a clear message instead
of sending everything twice. A PostgreSQL store (``DeliveryConfig.postgres_dsn``) is shared
by a fleet: there every worker delivers, and each delivery is claimed by one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from runtime.errors import DialplanError
from runtime.outbox import Delivery, Outbox, OutboxError
from runtime.record_store import RecordStore
from runtime.sinks import (
    DeliveryFailed,
    DeliveryRefused,
    HookSink,
    JsonlSink,
    Sink,
    WebhookSink,
)

if TYPE_CHECKING:
    from runtime.registry import Registry

log = logging.getLogger("dialplan.delivery")

OUTBOX_ENV = "DIALPLAN_OUTBOX"
WEBHOOK_SECRET_ENV = "DIALPLAN_WEBHOOK_SECRET"
DEFAULT_OUTBOX = "dialplan-outbox.db"
ERROR_CHARS = 500
OUTCOME_LOG_LEVEL = {"delivered": logging.DEBUG, "retry": logging.INFO, "dead": logging.WARNING}


class DeliveryConfigError(DialplanError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    # 12 attempts: the cap is reached, and a receiver that is down for a deploy or a
    # short outage (~20 minutes on average) still gets its records without an operator
    max_attempts: int = 12
    base: float = 2.0
    cap: float = 600.0

    def delay(self, failed_attempts: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(failed_attempts - 1, 62))
        return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class DeliveryConfig:
    """Where records are kept and where they go; the server and the CLI build both from
    this one description."""

    outbox_path: Path = Path(DEFAULT_OUTBOX)
    postgres_dsn: str | None = None  # a PostgreSQL store the fleet shares, instead of the file
    webhooks: Sequence[str] = ()
    webhook_secret: str | None = None
    jsonl_path: Path | None = None
    hooks: bool = True  # plugins' deliver_result, when any plugin implements it
    max_attempts: int = 12
    backoff_base: float = 2.0
    backoff_cap: float = 600.0
    timeout: float = 10.0
    concurrency: int = 8

    def __post_init__(self) -> None:
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise DeliveryConfigError(
                    f"webhook {url!r}: not an http(s) URL (write e.g. https://example.com/calls)"
                )
        if self.max_attempts < 1 or self.concurrency < 1:
            raise DeliveryConfigError("max_attempts and concurrency must be 1 or more")
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base or self.timeout <= 0:
            raise DeliveryConfigError(
                "backoff_base and timeout must be positive, backoff_cap at least backoff_base"
            )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_base, self.backoff_cap)


def default_outbox_path() -> Path:
    return Path(os.environ.get(OUTBOX_ENV) or DEFAULT_OUTBOX)


def build_sinks(config: DeliveryConfig, registry: Registry | None = None) -> list[Sink]:
    """The configured sinks: each webhook, the JSONL file, and plugins' hooks when a
    plugin implements ``deliver_result``."""
    sinks: list[Sink] = [
        WebhookSink(url, config.webhook_secret, timeout=config.timeout)
        for url in dict.fromkeys(config.webhooks)
    ]
    if config.jsonl_path is not None:
        sinks.append(JsonlSink(config.jsonl_path))
    if config.hooks and registry is not None and HookSink.wanted(registry):
        sinks.append(HookSink(registry))
    return sinks


def open_delivery(
    config: DeliveryConfig, registry: Registry | None = None, *, worker_id: str | None = None
) -> tuple[RecordStore, Deliverer]:
    """The outbox and its deliverer (not started yet), built from ``config``. ``worker_id``
    names this worker in a shared PostgreSQL store (default: hostname:pid)."""
    sinks = build_sinks(config, registry)
    names = [sink.name for sink in sinks]
    outbox: RecordStore
    if config.postgres_dsn:
        from runtime.pg_outbox import DEFAULT_LEASE_S, PostgresOutbox  # an optional extra

        # a claim outlives the longest send, so no other worker takes over a live one
        lease = max(DEFAULT_LEASE_S, 3 * config.timeout)
        outbox = PostgresOutbox(config.postgres_dsn, sinks=names, worker_id=worker_id, lease=lease)
    else:
        outbox = Outbox(config.outbox_path, sinks=names)
    deliverer = Deliverer(
        outbox,
        sinks,
        policy=config.retry_policy,
        timeout=config.timeout,
        concurrency=config.concurrency,
    )
    return outbox, deliverer


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one attempt came to, for progress lines and logs."""

    session_id: str
    sink: str
    attempt: int
    result: Literal["delivered", "retry", "dead"]
    seconds: float
    error: str | None = None
    retry_in: float | None = None


@dataclass
class _Progress:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    sending: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)


class Deliverer:
    """An asyncio task sending due deliveries, at most ``concurrency`` at a time.

    ``start()`` runs it until ``aclose()``; ``run_until_idle()`` returns once nothing is
    due and nothing is in flight. It wakes at once when the outbox makes a delivery due
    (a release, a retry), at the earliest scheduled retry, and every ``poll_interval``
    seconds for changes other processes made.
    """

    def __init__(
        self,
        outbox: RecordStore,
        sinks: Sequence[Sink],
        *,
        policy: RetryPolicy | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        poll_interval: float = 2.0,
        on_outcome: Callable[[DeliveryOutcome], None] | None = None,  # else: logged
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = {sink.name: sink for sink in sinks}
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()
        self.progress = _Progress()
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: IO[str] | None = None
        self._listening = False
        self._finished_while_asking: set[tuple[str, str]] = set()
        self._closing = False
        self._idle = asyncio.Event()  # set while nothing is due and nothing is in flight

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this deliverer is already running")
        self._begin()
        self._task = asyncio.create_task(self._run(until_idle=False), name="deliverer")

    async def run_until_idle(self) -> None:
        """Deliver until nothing is due now; retries scheduled later stay pending."""
        self._begin()
        try:
            await self._run(until_idle=True)
        finally:
            self._end()

    def wake(self) -> None:
        """Look for due deliveries now. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wakeup.set)

    async def settle(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until nothing is due now and nothing is in
        flight (retries scheduled for later do not count): what a short-lived command
        waits for before it exits. True if that happened in time."""
        if self._task is None:
            return True
        self._idle.clear()  # decided afresh by the loop, which this wakes
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop: sends still in flight get ``grace`` seconds to finish; the rest are
        abandoned and stay pending, to be retried by the next deliverer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        sending = list(self.progress.sending.values())
        if sending:
            _, late = await asyncio.wait(sending, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
        for sink in self.sinks.values():
            await sink.aclose()
        self._end()

    # -- the loop ----------------------------------------------------------------------

    def _begin(self) -> None:
        self._loop = asyncio.get_running_loop()
        if isinstance(self.outbox, Outbox):  # a shared store claims each delivery instead
            self._lock = _lock_outbox(self.outbox.path)
        self.outbox.add_listener(self.wake)
        self._listening = True

    def _end(self) -> None:
        if self._listening:
            with contextlib.suppress(ValueError):
                self.outbox.remove_listener(self.wake)
            self._listening = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _run(self, *, until_idle: bool) -> None:
        while not self._closing:
            self._wakeup.clear()
            try:
                wait, idle = await self._start_due()
            except OutboxError:  # e.g. locked by another process for too long; try again
                log.exception("the deliverer cannot read the outbox")
                wait, idle = self.poll_interval, False
            if idle and not self.progress.sending:
                self._idle.set()
                if until_idle:
                    return
            else:
                self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait, 0.0))

    async def _start_due(self) -> tuple[float, bool]:
        """Start what is due, as far as capacity allows. Returns how long to sleep at most,
        and whether nothing was due."""
        sending = self.progress.sending
        free = self.concurrency - len(sending)
        if free <= 0:
            return self.poll_interval, False  # a finishing send wakes the loop
        self._finished_while_asking = set()
        candidates = await self.outbox.due(self.sinks, limit=len(sending) + free + 1)
        now = time.time()
        wait, idle = self.poll_interval, True
        for delivery in candidates:
            if delivery.key in sending:
                continue
            if delivery.key in self._finished_while_asking:
                # due() may have read it before its outcome was written (a shared store
                # reads and writes on separate connections): look again next round
                idle = False
                continue
            if delivery.body is None:
                wait = min(wait, delivery.next_attempt_at - now)
                break
            idle = False
            if free == 0:
                break
            self._send_soon(delivery)
            free -= 1
        return wait, idle

    def _send_soon(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._attempt(delivery))
        self.progress.sending[delivery.key] = task

        def finished(_: asyncio.Task[None]) -> None:
            self.progress.sending.pop(delivery.key, None)
            self._finished_while_asking.add(delivery.key)
            self._wakeup.set()

        task.add_done_callback(finished)

    async def _attempt(self, delivery: Delivery) -> None:
        outcome = await self._send(delivery)
        try:
            await self._record(delivery, outcome)
        except OutboxError:  # e.g. the disk is full: the delivery stays pending
            log.exception("cannot record delivery of %s to %s", delivery.session_id, delivery.sink)
            return
        if self.on_outcome is not None:
            self.on_outcome(outcome)
            return
        log.log(
            OUTCOME_LOG_LEVEL[outcome.result],
            "%s %s to %s (attempt %d)%s",
            outcome.result,
            outcome.session_id,
            outcome.sink,
            outcome.attempt,
            f": {outcome.error}" if outcome.error else "",
        )

    async def _send(self, delivery: Delivery) -> DeliveryOutcome:
        started = time.perf_counter()

        def outcome(
            result: Literal["delivered", "retry", "dead"],
            error: str | None = None,
            retry_in: float | None = None,
        ) -> DeliveryOutcome:
            seconds = time.perf_counter() - started
            error = error[:ERROR_CHARS] if error is not None else None
            return DeliveryOutcome(
                delivery.session_id,
                delivery.sink,
                delivery.attempt,
                result,
                seconds,
                error,
                retry_in,
            )

        try:
            await asyncio.wait_for(self.sinks[delivery.sink].send(delivery), self.timeout)
        except DeliveryRefused as exc:
            return outcome("dead", str(exc))
        except Exception as exc:
            if not isinstance(exc, DeliveryFailed):
                return self._retry_or_give_up(delivery, outcome, _describe(exc, self.timeout))
            return self._retry_or_give_up(delivery, outcome, str(exc), exc.retry_after)
        return outcome("delivered")

    def _retry_or_give_up(
        self,
        delivery: Delivery,
        outcome: Callable[..., DeliveryOutcome],
        error: str,
        retry_after: float | None = None,
    ) -> DeliveryOutcome:
        if delivery.attempt >= self.policy.max_attempts:
            return outcome("dead", error)
        delay = self.policy.delay(delivery.attempt, self.rng)
        if retry_after is not None:  # the receiver asked for a pause; the cap still holds
            delay = max(delay, min(retry_after, self.policy.cap))
        return outcome("retry", error, delay)

    async def _record(self, delivery: Delivery, outcome: DeliveryOutcome) -> None:
        progress = self.progress
        if outcome.result == "delivered":
            await self.outbox.mark_delivered(delivery)
            progress.delivered += 1
        elif outcome.result == "retry":
            assert outcome.retry_in is not None and outcome.error is not None
            retry_at = time.time() + outcome.retry_in
            await self.outbox.mark_failed(delivery, outcome.error, retry_at=retry_at)
            progress.retrying += 1
        else:
            await self.outbox.mark_failed(delivery, outcome.error or "", retry_at=None)
            progress.dead += 1


def _describe(exc: Exception, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {timeout:g}s"
    return f"{type(exc).__name__}: {exc}"


class OutboxInUse(OutboxError):
    """Another process (a running worker or server) delivers from this outbox."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def _lock_outbox(path: Path) -> IO[str]:
    """An advisory lock beside the outbox, released by the kernel when the process dies."""
    lock_path = path.with_name(path.name + ".deliverer.lock")
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 — held until _end
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one deliverer is up to the operator
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise OutboxInUse(
            f"{path}: another deliverer (pid {holder}) is already sending from this outbox; "
            "stop it first, or use `dialplan outbox retry` to make it send sooner",
            holder,
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
