"""A webhook receiver for delivery tests: a real aiohttp server on 127.0.0.1 that checks
every signature on its own, with hmac and hashlib, and answers as each test scripts it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

SECRET = "test-webhook-secret"


@dataclass(frozen=True)
class Arrival:
    key: str
    attempt: int
    at: float  # time.monotonic() when the request arrived
    status: int
    body: bytes


@dataclass
class Receiver:
    """Listens once ``start()`` runs; until then its port is bound but refuses connections.
    ``answer(key, nth)`` (nth: this key's arrival count, from 1) picks each status."""

    secret: str | None = SECRET
    answer: Callable[[str, int], int] = lambda key, nth: 200
    delay: float = 0.0
    error_body: str = "receiver says no"
    arrivals: list[Arrival] = field(default_factory=list)
    unsigned: int = 0
    _socket: socket.socket = field(default_factory=socket.socket)
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/calls"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/calls", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)  # tests never wait on a slow answer
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._socket.close()

    @property
    def accepted(self) -> Counter[str]:
        """Idempotency-Key -> how many requests with it were answered 2xx."""
        return Counter(a.key for a in self.arrivals if 200 <= a.status < 300)

    def attempts_of(self, key: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.key == key]

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        key = request.headers["Idempotency-Key"]
        if not self._signed(request, body):
            self.unsigned += 1
            return web.Response(status=401, text="bad signature")
        if self.delay:
            await asyncio.sleep(self.delay)
        nth = sum(1 for a in self.arrivals if a.key == key) + 1
        status = self.answer(key, nth)
        attempt = int(request.headers["X-Dialplan-Attempt"])
        self.arrivals.append(Arrival(key, attempt, arrived, status, body))
        headers = {"Retry-After": "0"} if status == 429 else None
        text = "ok" if status < 300 else self.error_body
        return web.Response(status=status, text=text, headers=headers)

    def _signed(self, request: web.Request, body: bytes) -> bool:
        timestamp = request.headers.get("X-Dialplan-Timestamp", "")
        if abs(time.time() - int(timestamp or 0)) > 300:
            return False
        if self.secret is None:
            return "X-Dialplan-Signature" not in request.headers
        signature = request.headers.get("X-Dialplan-Signature", "")
        message = timestamp.encode() + b"." + body
        expected = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, f"sha256={expected}")
