"""A local LiveKit agent dispatcher: the server side of the agent worker protocol, for real.

No LiveKit server runs on developer machines or in CI, yet the fleet worker is a real
``livekit.agents.AgentServer``. This serves what it talks to: the ``/agent`` WebSocket,
bearer tokens checked with ``livekit.api.TokenVerifier``, binary protobuf frames
(``WorkerMessage`` in, ``ServerMessage`` out). It hosts no rooms: assignments carry a real
join token for ``room_url`` but nothing answers there, so entrypoints must not join a room.

    async with AgentDispatcher(api_key=KEY, api_secret=SECRET) as dispatcher:
        ...  # start an AgentServer with ws_url=dispatcher.url
        offer = await dispatcher.dispatch(room="call_1", metadata="{}", agent_name="dialplan")
        await dispatcher.wait_job_status(offer.job_id, agent.JobStatus.JS_SUCCESS)
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, models

log = logging.getLogger("dialplan.tests.agent_dispatcher")

T = TypeVar("T")

# PyJWT warns about shorter HMAC keys, and under filterwarnings=error that warning becomes
# an exception inside the worker's connection loop, where it only shows up as retries
MIN_SECRET_BYTES = 32
# what the worker checks the server against; livekit-agents speaks version 1
AGENT_PROTOCOL_VERSION = 1


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@dataclass
class RegisteredWorker:
    """One worker connection, as the RegisterWorkerRequest described it."""

    worker_id: str
    agent_name: str
    job_type: agent.JobType
    permissions: models.ParticipantPermission
    version: str
    socket: web.WebSocketResponse = field(repr=False)
    connected: bool = True
    status: agent.UpdateWorkerStatus | None = None  # the newest one the worker sent
    # the dispatch calls and the pong replies share one socket
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def available(self) -> bool:
        return self.status is None or self.status.status == agent.WorkerStatus.WS_AVAILABLE

    @property
    def load(self) -> float:
        return self.status.load if self.status is not None else 0.0

    async def send(self, message: agent.ServerMessage) -> None:
        async with self.send_lock:
            await self.socket.send_bytes(message.SerializeToString())


@dataclass(frozen=True)
class _Answer:
    response: agent.AvailabilityResponse
    received_at: float


@dataclass(frozen=True)
class JobOffer:
    """What became of one job offer. Timestamps are ``time.monotonic()``."""

    job: agent.Job
    worker_id: str
    accepted: bool
    participant_identity: str
    participant_name: str
    participant_attributes: dict[str, str]
    terminate: bool  # a refusing worker asked that the job not be offered elsewhere
    requested_at: float  # AvailabilityRequest sent
    answered_at: float  # AvailabilityResponse received
    assigned_at: float | None  # JobAssignment sent; None when refused
    token: str  # the room-join JWT in the assignment; "" when refused

    @property
    def job_id(self) -> str:
        return self.job.id

    @classmethod
    def answered(
        cls, job: agent.Job, worker_id: str, answer: _Answer, requested_at: float, token: str
    ) -> JobOffer:
        response = answer.response
        return cls(
            job=job,
            worker_id=worker_id,
            accepted=response.available,
            participant_identity=response.participant_identity,
            participant_name=response.participant_name,
            participant_attributes=dict(response.participant_attributes),
            terminate=response.terminate,
            requested_at=requested_at,
            answered_at=answer.received_at,
            assigned_at=time.monotonic() if token else None,
            token=token,
        )


class AgentDispatcher:
    """Serves ``ws://127.0.0.1:<port>/agent`` to livekit-agents workers."""

    def __init__(
        self, *, api_key: str, api_secret: str, room_url: str | None = None, host: str = "127.0.0.1"
    ) -> None:
        if len(api_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"api_secret is {len(api_secret.encode())} bytes; use at least "
                f"{MIN_SECRET_BYTES} (PyJWT warns about shorter HMAC keys, and pytest's "
                "filterwarnings=error turns that into a worker that never registers)"
            )
        self.api_key = api_key
        self.api_secret = api_secret
        self.host = host
        self._room_url = room_url
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.workers: dict[str, RegisteredWorker] = {}
        self._answers: dict[str, _Answer] = {}
        self._job_updates: dict[str, list[agent.UpdateJobStatus]] = {}
        self._job_workers: dict[str, str] = {}
        self._changed = asyncio.Condition()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What to give the worker as LIVEKIT_URL / ``ws_url``; it appends ``/agent``."""
        if self._port is None:
            raise RuntimeError("start the dispatcher first (async with AgentDispatcher(...))")
        return f"ws://{self.host}:{self._port}"

    @property
    def room_url(self) -> str:
        """The url in job assignments: where the job would join its room."""
        return self._room_url or self.url

    @property
    def worker_env(self) -> dict[str, str]:
        """The environment a worker needs to reach this dispatcher."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/agent", self._serve_worker)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def aclose(self) -> None:
        # close the sockets first: a server shutting down with them open waits on handlers
        for socket in list(self._sockets):
            await socket.close(code=1001, message=b"dispatcher closing")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AgentDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- what tests read and wait for ----------------------------------------------------

    def status(self, worker_id: str) -> agent.UpdateWorkerStatus | None:
        return self.workers[worker_id].status

    def job_status(self, job_id: str) -> agent.UpdateJobStatus | None:
        updates = self._job_updates.get(job_id)
        return updates[-1] if updates else None

    def job_updates(self, job_id: str) -> list[agent.UpdateJobStatus]:
        return list(self._job_updates.get(job_id, []))

    async def wait_worker(self, agent_name: str = "", timeout: float = 10.0) -> RegisteredWorker:
        return await self._wait_until(
            lambda: self._pick_worker(agent_name, None),
            timeout,
            f"worker registered as agent {agent_name!r}",
        )

    async def wait_status(
        self,
        predicate: Callable[[agent.UpdateWorkerStatus], bool],
        timeout: float = 10.0,
        worker_id: str | None = None,
    ) -> agent.UpdateWorkerStatus:
        """The first newest-status of a connected worker (or of ``worker_id``) to match."""

        def matching_status() -> agent.UpdateWorkerStatus | None:
            statuses = (w.status for w in self._connected(worker_id) if w.status is not None)
            return next((status for status in statuses if predicate(status)), None)

        return await self._wait_until(matching_status, timeout, "matching worker status")

    async def wait_job_status(
        self, job_id: str, status: agent.JobStatus, timeout: float = 10.0
    ) -> agent.UpdateJobStatus:
        """Returns once the worker has reported ``status`` for the job, now or earlier."""

        def reported() -> agent.UpdateJobStatus | None:
            return next((u for u in self._job_updates.get(job_id, []) if u.status == status), None)

        name = agent.JobStatus.Name(status)
        return await self._wait_until(reported, timeout, f"{name} for job {job_id}")

    # -- what tests make happen ----------------------------------------------------------

    async def dispatch(
        self,
        room: str,
        metadata: str = "",
        agent_name: str = "",
        *,
        worker_id: str | None = None,
        timeout: float = 10.0,
    ) -> JobOffer:
        """Offer a new room job to one worker; assign it if the worker says it is available.

        Unlike LiveKit, a refusal is final (no other worker is asked) and a worker that
        reported itself full is still offered the job when no other one matches, so tests
        see the worker's own refusal.
        """
        worker = await self._wait_until(
            lambda: self._pick_worker(agent_name, worker_id),
            timeout,
            f"worker for agent {agent_name!r}",
        )
        job = self._new_job(room, metadata, agent_name)
        requested_at = time.monotonic()
        answer = await self._offer(worker, job, timeout)
        token = ""
        if answer.response.available:
            token = await self._assign(worker, job, answer.response)
        return JobOffer.answered(job, worker.worker_id, answer, requested_at, token)

    async def terminate(self, job_id: str) -> None:
        """Tell the job's worker to end it, as LiveKit does when the room goes away."""
        worker_id = self._job_workers.get(job_id)
        if worker_id is None:
            raise KeyError(f"{job_id}: no job by that id was dispatched here")
        termination = agent.JobTermination(job_id=job_id)
        await self.workers[worker_id].send(agent.ServerMessage(termination=termination))

    # -- the worker connection -----------------------------------------------------------

    async def _serve_worker(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request.headers.get("Authorization", "")):
            # LiveKit refuses the upgrade the same way; the worker then retries
            raise web.HTTPUnauthorized(text="invalid token or missing agent grant")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            await self._converse(socket)
        finally:
            self._sockets.discard(socket)
        return socket

    async def _converse(self, socket: web.WebSocketResponse) -> None:
        first, message = await socket.receive(), agent.WorkerMessage()
        if first.type == WSMsgType.BINARY:
            message.ParseFromString(first.data)
        if not message.HasField("register"):
            # LiveKit, too, wants the registration before anything else
            await socket.close(code=1002, message=b"expected RegisterWorkerRequest first")
            return
        worker = await self._register(socket, message.register)
        try:
            async for frame in socket:
                if frame.type == WSMsgType.BINARY:
                    await self._on_message(worker, agent.WorkerMessage.FromString(frame.data))
        finally:
            worker.connected = False
            await self._notify()
            log.info("worker %s disconnected", worker.worker_id)

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            claims = api.TokenVerifier(self.api_key, self.api_secret).verify(token)
        except Exception:
            return False
        return bool(claims.video and claims.video.agent)

    async def _register(
        self, socket: web.WebSocketResponse, request: agent.RegisterWorkerRequest
    ) -> RegisteredWorker:
        worker = RegisteredWorker(
            worker_id=new_id("AW_"),
            agent_name=request.agent_name,
            job_type=request.type,
            permissions=request.allowed_permissions,
            version=request.version,
            socket=socket,
        )
        server_info = models.ServerInfo(
            edition=models.ServerInfo.Edition.Standard,
            version="dialplan-agent-dispatcher",
            region="local",
            node_id="ND_local",
            agent_protocol=AGENT_PROTOCOL_VERSION,
        )
        response = agent.RegisterWorkerResponse(worker_id=worker.worker_id, server_info=server_info)
        await worker.send(agent.ServerMessage(register=response))
        self.workers[worker.worker_id] = worker
        await self._notify()
        log.info("registered %s (agent %r)", worker.worker_id, worker.agent_name)
        return worker

    async def _on_message(self, worker: RegisteredWorker, message: agent.WorkerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "availability":
            answer = _Answer(message.availability, received_at=time.monotonic())
            self._answers[message.availability.job_id] = answer
        elif kind == "update_worker":
            worker.status = message.update_worker
        elif kind == "update_job":
            self._job_updates.setdefault(message.update_job.job_id, []).append(message.update_job)
        elif kind == "ping":
            pong = agent.WorkerPong(
                last_timestamp=message.ping.timestamp, timestamp=int(time.time() * 1000)
            )
            await worker.send(agent.ServerMessage(pong=pong))
        else:
            log.debug("ignoring %s from %s", kind, worker.worker_id)
        await self._notify()

    # -- jobs ----------------------------------------------------------------------------

    def _pick_worker(self, agent_name: str, worker_id: str | None) -> RegisteredWorker | None:
        candidates = [w for w in self._connected(worker_id) if w.agent_name == agent_name]
        # free workers first, least loaded first, as LiveKit prefers them
        candidates.sort(key=lambda w: (not w.available, w.load))
        return candidates[0] if candidates else None

    def _connected(self, worker_id: str | None) -> list[RegisteredWorker]:
        workers = self.workers.values()
        return [w for w in workers if w.connected and worker_id in (None, w.worker_id)]

    @staticmethod
    def _new_job(room: str, metadata: str, agent_name: str) -> agent.Job:
        room_info = models.Room(sid=new_id("RM_"), name=room, creation_time=int(time.time()))
        return agent.Job(
            id=new_id("AJ_"),
            dispatch_id=new_id("AD_"),
            type=agent.JobType.JT_ROOM,
            room=room_info,
            metadata=metadata,
            agent_name=agent_name,
        )

    async def _offer(self, worker: RegisteredWorker, job: agent.Job, timeout: float) -> _Answer:
        self._job_workers[job.id] = worker.worker_id
        await worker.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))
        return await self._wait_until(
            lambda: self._answers.get(job.id), timeout, f"availability answer for {job.id}"
        )

    async def _assign(
        self, worker: RegisteredWorker, job: agent.Job, response: agent.AvailabilityResponse
    ) -> str:
        # the worker dates its job trace from the server's start time (unix nanoseconds)
        job.state.CopyFrom(
            agent.JobState(
                status=agent.JobStatus.JS_PENDING,
                started_at=time.time_ns(),
                participant_identity=response.participant_identity,
                worker_id=worker.worker_id,
            )
        )
        token = self._room_token(job, response, worker)
        assignment = agent.JobAssignment(job=job, url=self.room_url, token=token)
        await worker.send(agent.ServerMessage(assignment=assignment))
        return token

    def _room_token(
        self, job: agent.Job, response: agent.AvailabilityResponse, worker: RegisteredWorker
    ) -> str:
        """The join token LiveKit would mint: the answered identity, the granted permissions."""
        allowed = worker.permissions
        grants = api.VideoGrants(
            room_join=True,
            room=job.room.name,
            agent=True,
            can_publish=allowed.can_publish,
            can_subscribe=allowed.can_subscribe,
            can_publish_data=allowed.can_publish_data,
            can_update_own_metadata=allowed.can_update_metadata,
            hidden=allowed.hidden,
        )
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(response.participant_identity)
            .with_name(response.participant_name)
            .with_metadata(response.participant_metadata)
            .with_attributes(dict(response.participant_attributes))
            .with_kind("agent")
            .with_grants(grants)
            .to_jwt()
        )

    # -- waiting -------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_until(self, found: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            async with self._changed:
                result = await asyncio.wait_for(self._changed.wait_for(found), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no {what} within {timeout}s") from None
        assert result is not None
        return result
