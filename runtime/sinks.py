"""Where call records are delivered: a webhook, a JSONL file, or plugins' ``deliver_result``.

A sink's ``send`` returns when the receiver has the record. Raising ``DeliveryRefused``
dead-letters the delivery at once; any other exception is retried with backoff by the
deliverer. Each sink has a stable ``name``, the key of its deliveries in the outbox.

Webhook signing
---------------
Every webhook request is ``POST <url>`` with the record JSON as its body and

    Content-Type: application/json
    Idempotency-Key: <session_id>      the same on every attempt and every replay
    X-Dialplan-Attempt: <n>            1 on the first attempt
    X-Dialplan-Timestamp: <unix seconds when this attempt was sent>
    X-Dialplan-Signature: sha256=<hex>

The signature is the lowercase hex HMAC-SHA256, keyed with the shared secret
(``$DIALPLAN_WEBHOOK_SECRET`` by convention), of the timestamp header's value, a ".", and
the raw body bytes. To verify: take the body exactly as received (before parsing JSON),
compute that HMAC with your copy of the secret, compare it with the header's hex part using
a constant-time comparison (``hmac.compare_digest``), and reject timestamps far from your
clock (five minutes, say) so a captured request cannot be replayed later. Delivery is at
least once: deduplicate by ``Idempotency-Key``. Without a secret the signature header is
left out.

Answers: 2xx is delivered. 408, 425, 429, 5xx, refused connections and timeouts are retried
with backoff (``Retry-After`` in seconds is honoured up to the backoff cap). Any other 4xx,
or a 3xx (redirects are not followed), dead-letters the record at once with the status and
the start of the body as its error; ``dialplan outbox retry`` sends it again, from attempt 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.outbox import Delivery

if TYPE_CHECKING:
    import aiohttp

    from runtime.registry import Registry

log = logging.getLogger("dialplan.sinks")

ERROR_EXCERPT_CHARS = 200
# 408 and 425 say "try again", 429 "slow down": the same request may succeed later.
RETRYABLE_4XX = frozenset({408, 425, 429})


class DeliveryRefused(Exception):
    """The receiver refused this record for good; resending the same bytes cannot help."""


class DeliveryFailed(Exception):
    """A failure worth retrying; ``retry_after`` is the receiver's own wish, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Sink(ABC):
    name: str

    @abstractmethod
    async def send(self, delivery: Delivery) -> None:
        """Deliver one due record; raise to fail this attempt."""

    async def aclose(self) -> None:
        """Release connections and files; the deliverer calls it once, when it stops."""
        return None  # most sinks hold nothing between sends


class WebhookSink(Sink):
    def __init__(self, url: str, secret: str | None, *, timeout: float = 10.0) -> None:
        self.url = url
        self.name = f"webhook:{url}"
        self.secret = secret.encode() if secret else None
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        if not secret:
            log.warning(
                "webhook %s: no secret, so requests are not signed "
                "(set DIALPLAN_WEBHOOK_SECRET so the receiver can verify them)",
                url,
            )

    def headers(self, delivery: Delivery, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.session_id,
            "X-Dialplan-Attempt": str(delivery.attempt),
            "X-Dialplan-Timestamp": timestamp,
        }
        if self.secret is not None:
            digest = hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256)
            headers["X-Dialplan-Signature"] = f"sha256={digest.hexdigest()}"
        return headers

    async def send(self, delivery: Delivery) -> None:
        import aiohttp

        assert delivery.body is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        body = delivery.body.encode()
        try:
            async with self._session.post(
                self.url, data=body, headers=self.headers(delivery, body), allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return
                excerpt = (await response.content.read(ERROR_EXCERPT_CHARS)).decode(
                    errors="replace"
                )
                status = response.status
                retry_after = _seconds(response.headers.get("Retry-After"))
        except aiohttp.ClientError as exc:  # refused, reset, DNS: the receiver may come back
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        except asyncio.TimeoutError:
            raise DeliveryFailed(f"no response within {self.timeout:g}s") from None
        problem = f"HTTP {status}: {' '.join(excerpt.split())}".rstrip(": ")
        if status >= 500 or status in RETRYABLE_4XX:
            raise DeliveryFailed(problem, retry_after=retry_after)
        # Any other 4xx (and a 3xx, which we do not follow with a POST) means the receiver
        # looked at this request and refused it: bad signature, unknown route, a body it
        # rejects. The same bytes will be refused again, so retrying only delays the alert;
        # dead-letter now and let an operator fix the receiver and `dialplan outbox retry`.
        raise DeliveryRefused(problem)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class JsonlSink(Sink):
    """Appends one JSON line per record and fsyncs; a crash between the write and the
    outbox update repeats the line on the next attempt (readers dedupe by session_id)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(os.path.abspath(path))
        self.name = f"jsonl:{self.path}"
        self._lock = threading.Lock()  # one line at a time, whichever thread appends

    async def send(self, delivery: Delivery) -> None:
        assert delivery.body is not None
        await asyncio.to_thread(self._append, delivery.body)

    def _append(self, body: str) -> None:
        line = body.replace("\n", " ") + "\n"  # model_dump_json has no newlines; be sure
        with self._lock, open(self.path, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())


class HookSink(Sink):
    """Calls every plugin's ``deliver_result(record=...)`` and awaits what they return.
    One failure retries the whole call, so each plugin sees a record at least once."""

    name = "hooks"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @staticmethod
    def wanted(registry: Registry) -> bool:
        return bool(registry.hook.deliver_result.get_hookimpls())

    async def send(self, delivery: Delivery) -> None:
        results = self.registry.hook.deliver_result(record=delivery.record())
        pending = [result for result in results if inspect.isawaitable(result)]
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After as delta-seconds; the HTTP-date form is rare for webhooks and ignored."""
    if retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None
