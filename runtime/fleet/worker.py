"""The LiveKit worker: one livekit-agents ``AgentServer`` serving every bot in the catalog.

    Worker(bots="bots/", agent_name="dialplan").start()   # production (`dialplan start`)
    Worker(bots="bots/").dev()                            # development: hot reload, debug logs

Jobs run on threads of this process, not in a process each. That is a choice: every call
then shares the one catalog (so `--watch` reloads reach the next call at once), the one
outbox writer and the post-call queue, and a call starts in milliseconds instead of
waiting for a process; the price is that a crash in native code takes the worker's calls
with it, which the fleet absorbs (LiveKit re-dispatches new calls to other workers).

Capacity is livekit's own: ``load_fnc`` reports calls in progress / ``max_concurrent_calls``
and ``load_threshold`` sits half a call below 1.0, so a full worker answers "unavailable"
to job offers (the call goes to another worker) and tells the server it is full — a job is
never accepted and then half-started.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import DialplanError
from runtime.fleet.config import FleetConfig, load_fleet_config
from runtime.fleet.results_bridge import ResultsBridge
from runtime.fleet.room_call import RoomCallServices, serve_room_call

if TYPE_CHECKING:
    from livekit import api
    from livekit.agents import AgentServer, JobContext, JobRequest

    from runtime.call_results import CallResults
    from runtime.catalog import CatalogSnapshot
    from runtime.fleet.room_line import RoomLine
    from runtime.live_catalog import LiveCatalog
    from runtime.registry import Registry
    from runtime.warmup import VoiceWarmer

log = logging.getLogger("dialplan.fleet")

# what `dialplan start`, `call` and `doctor` need, and how to get each
LIVEKIT_CREDENTIALS = {
    "LIVEKIT_URL": "export LIVEKIT_URL=wss://<project>.livekit.cloud (or your server's URL)",
    "LIVEKIT_API_KEY": "export LIVEKIT_API_KEY (LiveKit dashboard → Settings → API keys)",
    "LIVEKIT_API_SECRET": "export LIVEKIT_API_SECRET (shown with the API key)",
}


class CredentialsMissing(DialplanError):
    pass


def missing_credentials(env: Mapping[str, str]) -> list[str]:
    return [name for name in LIVEKIT_CREDENTIALS if not env.get(name)]


def require_credentials(env: Mapping[str, str]) -> None:
    """livekit's own worker logs and exits 0 without these; a fleet must notice."""
    missing = missing_credentials(env)
    if missing:
        raise CredentialsMissing(
            f"{', '.join(missing)} not set: the worker cannot reach LiveKit. Export "
            "LIVEKIT_URL (wss://<project>.livekit.cloud or your server), LIVEKIT_API_KEY "
            "and LIVEKIT_API_SECRET (from the LiveKit dashboard or `livekit-server "
            "--keys`) and start again"
        )


@dataclass
class Worker:
    bots: str | Path = "bots"
    agent_name: str | None = None
    config: FleetConfig | None = None
    max_concurrent_calls: int | None = None
    watch: bool | None = None
    registry: Registry | None = None
    results: CallResults | None = None
    # tests give calls a local media line; production uses the job's LiveKit room
    line_factory: Callable[[JobContext], RoomLine] | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    active_calls: int = 0
    server: AgentServer | None = None
    live: LiveCatalog | None = None
    warmer: VoiceWarmer | None = None  # the voice models loaded before the first job
    # `start`/`dev` end the process once drained and stored: see _exit_now
    exit_after_drain: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None  # the worker's own loop (results live there)

    def __post_init__(self) -> None:
        fleet = self.config or load_fleet_config()
        worker = fleet.worker.model_copy(
            update={
                key: value
                for key, value in {
                    "agent_name": self.agent_name,
                    "max_concurrent_calls": self.max_concurrent_calls,
                    "watch": self.watch,
                }.items()
                if value is not None
            }
        )
        self.config = fleet.model_copy(update={"worker": worker})
        self.agent_name = worker.agent_name
        self.max_concurrent_calls = worker.max_concurrent_calls
        self.watch = worker.watch

    @property
    def fleet(self) -> FleetConfig:
        assert self.config is not None
        return self.config

    # -- running -------------------------------------------------------------------------

    def start(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain: calls in progress finish first."""
        require_credentials(self.env)
        self.exit_after_drain = True
        asyncio.run(self.run(devmode=False))
        return 0

    def dev(self) -> int:
        """Development mode: hot reload on, livekit's dev defaults (debug logs)."""
        require_credentials(self.env)
        self.watch = True
        self.exit_after_drain = True
        asyncio.run(self.run(devmode=True))
        return 0

    async def run(self, *, devmode: bool = False, ready: Callable[[], None] | None = None) -> None:
        self._stop = asyncio.Event()
        await self.open()
        assert self.server is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        serving = asyncio.create_task(self.server.run(devmode=devmode), name="dialplan.worker")
        watcher = asyncio.create_task(self._watch()) if self.watch else None
        if ready is not None:
            ready()
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([serving, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            self._stop.set()  # the watcher stops with it
            await self.close()
            if watcher is not None:
                await watcher
            if self.exit_after_drain and self._stop.is_set() and not serving.done():
                _exit_now()
        await serving  # a connection to LiveKit that failed for good raises here

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def open(self) -> AgentServer:
        """Load plugins and bots, open the results store, build the AgentServer."""
        from livekit.agents import AgentServer
        from livekit.agents.job import JobExecutorType

        from runtime.live_catalog import LiveCatalog
        from runtime.registry import load_registry

        self._loop = asyncio.get_running_loop()
        if self.registry is None:
            self.registry = load_registry()
        if self.fleet.config_endpoint is not None:
            from runtime.fleet.config_endpoint import install_config_endpoint

            install_config_endpoint(self.registry, self.fleet.config_endpoint)
        bots_dir = self.fleet.resolve_path(Path(self.bots))
        if not bots_dir.is_dir():
            raise DialplanError(f"{bots_dir}: not a directory (the bots to serve)")
        self.live = LiveCatalog(bots_dir, self.registry)
        for problem in self.live.current().problems:
            log.error("%s", problem)
        # the first job must not wait for a voice model to load: load them before the
        # worker registers (and so before LiveKit dispatches anything to it)
        from runtime.warmup import VoiceWarmer

        self.warmer = VoiceWarmer(self.registry)
        for warmed in await self.warmer.warm(self.live.current().bots.values()):
            log.info("voice warmed: %s", warmed.line())
        if self.results is None:
            from runtime.fleet.results_config import open_results

            self.results = open_results(self.fleet, self.registry)
        await self.results.start()
        capacity = self.max_concurrent_calls or 1
        self.server = AgentServer(
            job_executor_type=JobExecutorType.THREAD,
            load_fnc=self.load,
            load_threshold=(capacity - 0.5) / capacity,
            # livekit estimates a new job's load from idle executors when none runs yet
            num_idle_processes=min(capacity, 4),
            drain_timeout=int(self.fleet.worker.drain_timeout),
            host=self.fleet.worker.host,
            port=self.fleet.worker.port,
            ws_url=self.env.get("LIVEKIT_URL"),
            api_key=self.env.get("LIVEKIT_API_KEY"),
            api_secret=self.env.get("LIVEKIT_API_SECRET"),
            # jobs are threads; "spawn" keeps livekit from re-arming the process-wide
            # forkserver preload list, which nothing here uses
            multiprocessing_context="spawn",
        )
        self.server.rtc_session(
            self._entrypoint, agent_name=self.agent_name or "", on_request=self._on_request
        )
        # the catalog, plugins and livekit are loaded for good: keep the garbage collector
        # off these objects so per-call collections stay short
        gc.collect()
        gc.freeze()
        return self.server

    async def close(self) -> None:
        """Drain (calls in progress finish), store every record, then let livekit go."""
        if self.server is not None:
            await self.server.drain(timeout=int(self.fleet.worker.drain_timeout))
        if self.results is not None:
            await self.results.aclose()
        if self.server is not None and not self.exit_after_drain:
            await self.server.aclose()

    async def _watch(self) -> None:
        from runtime.devserver import describe_reload
        from runtime.watch import watch_catalog

        assert self.live is not None and self._stop is not None

        warming: set[asyncio.Task[None]] = set()

        async def rewarm() -> None:
            assert self.live is not None and self.warmer is not None
            for warmed in await self.warmer.warm(self.live.current().bots.values()):
                log.info("voice warmed: %s", warmed.line())

        def on_reload(report: Any) -> None:
            for line in describe_reload(report):
                log.info("%s", line)
            task = asyncio.create_task(rewarm(), name="dialplan.warm")  # a voice it brings
            warming.add(task)
            task.add_done_callback(warming.discard)

        await watch_catalog(self.live, on_reload, stop=self._stop)

    # -- capacity ------------------------------------------------------------------------

    def load(self) -> float:
        """Calls in progress against capacity; a process falling behind real time (the
        VAD, say: `runtime.overload`) counts as full, so LiveKit sends calls elsewhere."""
        from runtime.overload import LAG_LIMIT, current_lag

        _stage, lag = current_lag()
        return max(self.active_calls / (self.max_concurrent_calls or 1), lag / LAG_LIMIT)

    async def _on_request(self, request: JobRequest) -> None:
        # livekit has already compared load_fnc with load_threshold (counting offers it is
        # still answering); this is the last look before accepting
        if self.active_calls >= (self.max_concurrent_calls or 1):
            log.info("refused job %s: at capacity", request.id)
            await request.reject()
            return
        from runtime.overload import overloaded

        if (why := overloaded()) is not None:
            log.warning("refused job %s: %s", request.id, why)
            await request.reject()
            return
        await request.accept(name="dialplan", attributes={"dialplan.worker": _worker_id()})

    # -- one job -------------------------------------------------------------------------

    def catalog(self) -> CatalogSnapshot:
        assert self.live is not None
        return self.live.current()

    async def _entrypoint(self, ctx: JobContext) -> None:
        """Runs on the job's own thread and event loop."""
        assert self.registry is not None and self.results is not None
        with self._lock:
            self.active_calls += 1
        try:
            bridge = ResultsBridge(self.results, self._results_loop())
            services = RoomCallServices(
                catalog=self.catalog,
                registry=self.registry,
                fleet=self.fleet,
                hand_off=bridge.ended,
                recordings_dir=Path("recordings"),
                checkpoint=bridge.checkpoint,
            )
            line = (self.line_factory or self._livekit_line)(ctx)
            await serve_room_call(line, ctx.job.metadata, services)
        finally:
            with self._lock:
                self.active_calls -= 1
        ctx.shutdown("call ended")

    def _livekit_line(self, ctx: JobContext) -> RoomLine:
        from runtime.fleet.room_line import LiveKitLine

        return LiveKitLine(ctx, self.api_client)

    def api_client(self) -> api.LiveKitAPI:
        from livekit import api

        return api.LiveKitAPI(
            self.env.get("LIVEKIT_URL"),
            self.env.get("LIVEKIT_API_KEY"),
            self.env.get("LIVEKIT_API_SECRET"),
        )

    def _results_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "open() the worker first"
        return self._loop


def _exit_now() -> None:
    """End a drained worker process without livekit's native teardown.

    Once a worker has served a call, closing livekit's job runners can abort the process
    in native code (livekit-ffi: "panic in a function that cannot unwind", seen with
    livekit-agents 1.5 against livekit-server 1.13.5): the operator would see SIGABRT for a
    clean stop. By now every call has finished and every record is in the results store,
    and the server treats the closed connection like a deregistration, so nothing is lost
    by leaving at once (logs flushed first).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
