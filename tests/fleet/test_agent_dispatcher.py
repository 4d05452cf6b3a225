"""The local agent dispatcher against a real livekit-agents ``AgentServer``.

The worker registers, reports its load, is offered jobs, accepts or refuses them and runs
them on its own threads; the entrypoint here joins no room (there is none) and only
records what it ran with.

Stays on the stand-in: it checks the dispatcher test_worker relies on; the real server's
dispatch is in tests/phone/test_fleet.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from livekit import api
from livekit.agents import AgentServer, JobContext, JobRequest
from livekit.agents import __version__ as agents_version
from livekit.agents import worker as livekit_worker
from livekit.agents.job import JobExecutorType
from livekit.protocol import agent

from tests.fleet.agent_conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    agent_dispatcher,  # noqa: F401
)
from tests.fleet.agent_dispatcher import AgentDispatcher, RegisteredWorker

AGENT_NAME = "dialplan"
AVAILABLE, FULL = agent.WorkerStatus.WS_AVAILABLE, agent.WorkerStatus.WS_FULL
RUNNING, SUCCESS = agent.JobStatus.JS_RUNNING, agent.JobStatus.JS_SUCCESS


class EntrypointProbe:
    """A job entrypoint that records its job's metadata and holds until the test releases it.

    It runs on the job's own thread and event loop, hence threading.Events, polled.
    """

    def __init__(self, *, end_job_on_return: bool = True) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.metadata: list[str] = []
        self.end_job_on_return = end_job_on_return

    async def __call__(self, ctx: JobContext) -> None:
        self.metadata.append(ctx.job.metadata)
        self.started.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        if self.end_job_on_return:
            # returning alone keeps the job alive until its room goes away, as dialplan's
            # entrypoint knows: it ends the job itself
            ctx.shutdown("test released the job")

    async def wait_started(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.started.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the job entrypoint did not start within {timeout}s")
            await asyncio.sleep(0.01)


class Load:
    """A load_fnc the test can change while the worker runs."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


@dataclass
class RunningWorker:
    server: AgentServer
    probe: EntrypointProbe
    registration: RegisteredWorker


StartWorker = Callable[..., Awaitable[RunningWorker]]


def build_server(url: str, load: Callable[[], float], load_threshold: float) -> AgentServer:
    return AgentServer(
        # jobs on threads of this process, as dialplan runs them
        job_executor_type=JobExecutorType.THREAD,
        num_idle_processes=1,
        load_fnc=load,  # always given: the default starts a CPU-sampling thread that never ends
        load_threshold=load_threshold,
        host="127.0.0.1",
        port=0,
        ws_url=url,
        api_key=TEST_API_KEY,
        api_secret=TEST_API_SECRET,
        # with "forkserver" (the Linux default) run() sets the process-wide forkserver
        # preload list; thread jobs need no processes, so leave that global alone
        multiprocessing_context="spawn",
    )


def assert_nothing_leaked(threads_before: set[threading.Thread], tasks_before: set[object]) -> None:
    # the loop's default executor is shut down with the loop, after this fixture
    threads = [
        t
        for t in threading.enumerate()
        if t not in threads_before and not t.name.startswith("asyncio_")
    ]
    for thread in threads:
        thread.join(timeout=2)
    assert [t.name for t in threads if t.is_alive()] == []
    tasks = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
    assert [t.get_name() for t in tasks if not t.done()] == []


@pytest.fixture
async def start_worker(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[StartWorker]:
    # the worker reports its status every 2.5 s; job counts should show up within a test's
    # patience (the interval is read when each connection starts)
    monkeypatch.setattr(livekit_worker, "UPDATE_STATUS_INTERVAL", 0.1)
    threads_before = set(threading.enumerate())
    tasks_before: set[object] = set(asyncio.all_tasks())
    running: list[tuple[AgentServer, EntrypointProbe, asyncio.Task[None]]] = []

    async def start(
        *,
        probe: EntrypointProbe | None = None,
        on_request: Callable[[JobRequest], Awaitable[None]] | None = None,
        load: Callable[[], float] | None = None,
        load_threshold: float = 0.75,
    ) -> RunningWorker:
        probe = probe or EntrypointProbe()
        server = build_server(agent_dispatcher.url, load or Load(), load_threshold)
        server.rtc_session(probe, agent_name=AGENT_NAME, on_request=on_request)
        task = asyncio.create_task(server.run(devmode=False), name="test.agent_server")
        running.append((server, probe, task))  # before waiting: a timeout must still close it
        registration = await agent_dispatcher.wait_worker(AGENT_NAME)
        return RunningWorker(server, probe, registration)

    yield start
    for server, probe, task in running:
        # a held entrypoint would hold aclose() for livekit's 15 s entrypoint grace
        probe.release.set()
        # bounded, so a shutdown that hangs fails this test instead of stalling the suite
        await asyncio.wait_for(server.aclose(), 30)
        await asyncio.wait_for(task, 10)
    assert_nothing_leaked(threads_before, tasks_before)


async def test_worker_registers_with_its_agent_name(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    worker = await start_worker()

    registration = worker.registration
    assert registration.worker_id.startswith("AW_")
    assert registration.agent_name == AGENT_NAME
    assert registration.job_type == agent.JobType.JT_ROOM
    assert registration.permissions.agent and registration.permissions.can_publish
    assert registration.version == agents_version
    status = await agent_dispatcher.wait_status(lambda s: s.status == AVAILABLE)
    assert status.job_count == 0
    assert agent_dispatcher.status(registration.worker_id) == status


async def test_dispatched_job_is_accepted_and_runs_with_its_metadata(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    worker = await start_worker()

    offer = await agent_dispatcher.dispatch(
        room="call_1", metadata='{"bot": "survey"}', agent_name=AGENT_NAME
    )

    assert offer.accepted and offer.job_id.startswith("AJ_")
    assert offer.worker_id == worker.registration.worker_id
    assert offer.participant_identity == f"agent-{offer.job_id}"
    assert offer.participant_attributes["lk.agent.name"] == AGENT_NAME
    assert offer.assigned_at is not None
    assert offer.requested_at <= offer.answered_at <= offer.assigned_at
    claims = api.TokenVerifier(TEST_API_KEY, TEST_API_SECRET).verify(offer.token)
    assert claims.identity == offer.participant_identity
    assert claims.video is not None and claims.video.room == "call_1" and claims.video.room_join
    await worker.probe.wait_started()
    assert worker.probe.metadata == ['{"bot": "survey"}']
    await agent_dispatcher.wait_job_status(offer.job_id, RUNNING)
    running = await agent_dispatcher.wait_status(lambda s: s.job_count == 1)
    assert running.status == AVAILABLE


async def test_job_succeeds_when_the_entrypoint_returns(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    worker = await start_worker()
    offer = await agent_dispatcher.dispatch(room="call_2", agent_name=AGENT_NAME)
    await worker.probe.wait_started()
    assert agent_dispatcher.job_status(offer.job_id) is not None
    assert agent_dispatcher.job_status(offer.job_id).status == RUNNING  # type: ignore[union-attr]

    worker.probe.release.set()

    await agent_dispatcher.wait_job_status(offer.job_id, SUCCESS)
    assert [u.status for u in agent_dispatcher.job_updates(offer.job_id)] == [RUNNING, SUCCESS]


async def test_a_full_worker_refuses_the_job_and_reports_full(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    worker = await start_worker(load=Load(1.0), load_threshold=0.5)

    full = await agent_dispatcher.wait_status(lambda s: s.status == FULL)
    offer = await agent_dispatcher.dispatch(room="call_3", agent_name=AGENT_NAME)

    assert full.load == 1.0
    assert not offer.accepted and offer.assigned_at is None and offer.token == ""
    assert not worker.probe.started.is_set()


async def test_load_is_read_again_for_each_offer(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    load = Load(0.0)
    await start_worker(load=load, load_threshold=0.5)
    await agent_dispatcher.wait_status(lambda s: s.status == AVAILABLE)

    # the worker last said "available"; the offer itself makes it look at its load again
    load.value = 1.0
    refused = await agent_dispatcher.dispatch(room="call_4", agent_name=AGENT_NAME)
    load.value = 0.0
    accepted = await agent_dispatcher.dispatch(room="call_5", agent_name=AGENT_NAME)

    assert (refused.accepted, accepted.accepted) == (False, True)


async def test_a_refusing_request_fnc_turns_the_job_down(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    async def refuse(request: JobRequest) -> None:
        await request.reject()

    worker = await start_worker(on_request=refuse)

    offer = await agent_dispatcher.dispatch(room="call_6", agent_name=AGENT_NAME)

    assert not offer.accepted and offer.terminate
    assert not worker.probe.started.is_set()
    assert agent_dispatcher.job_status(offer.job_id) is None


async def test_terminate_ends_a_running_job(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    # like a real entrypoint, this one returns at once and leaves the job running
    probe = EntrypointProbe(end_job_on_return=False)
    probe.release.set()
    worker = await start_worker(probe=probe)
    offer = await agent_dispatcher.dispatch(room="call_7", agent_name=AGENT_NAME)
    await worker.probe.wait_started()
    await agent_dispatcher.wait_status(lambda s: s.job_count == 1)

    await agent_dispatcher.terminate(offer.job_id)

    await agent_dispatcher.wait_job_status(offer.job_id, SUCCESS)
    await agent_dispatcher.wait_status(lambda s: s.job_count == 0)


async def test_dispatch_waits_for_a_worker_with_the_agent_name(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    start_worker: StartWorker,
) -> None:
    await start_worker()

    with pytest.raises(TimeoutError, match="'someone-else'"):
        await agent_dispatcher.dispatch(room="call_8", agent_name="someone-else", timeout=0.2)


# -- the protocol without a worker ---------------------------------------------------------


def bearer(secret: str = TEST_API_SECRET, *, agent_grant: bool = True) -> dict[str, str]:
    token = (
        api.AccessToken(TEST_API_KEY, secret)
        .with_grants(api.VideoGrants(agent=agent_grant))
        .to_jwt()
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda: bearer("a-wrong-secret-that-is-long-enough-too"), id="wrong-secret"),
        pytest.param(lambda: bearer(agent_grant=False), id="no-agent-grant"),
        pytest.param(lambda: {}, id="no-token"),
    ],
)
async def test_bad_credentials_are_refused_with_401(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
    headers: Callable[[], dict[str, str]],
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{agent_dispatcher.url}/agent", headers=headers())

    assert refused.value.status == 401
    assert agent_dispatcher.workers == {}


async def test_pings_are_answered_with_pongs(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
) -> None:
    register = agent.WorkerMessage(register=agent.RegisterWorkerRequest(agent_name="raw"))
    ping = agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{agent_dispatcher.url}/agent", headers=bearer()) as socket,
    ):
        await socket.send_bytes(register.SerializeToString())
        registered = agent.ServerMessage.FromString(await socket.receive_bytes())
        await socket.send_bytes(ping.SerializeToString())
        pong = agent.ServerMessage.FromString(await socket.receive_bytes())

    assert registered.register.worker_id in agent_dispatcher.workers
    assert registered.register.server_info.agent_protocol == 1
    assert pong.pong.last_timestamp == 1234 and pong.pong.timestamp > 0


async def test_a_worker_must_register_first(
    agent_dispatcher: AgentDispatcher,  # noqa: F811
) -> None:
    ping = agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1))
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{agent_dispatcher.url}/agent", headers=bearer()) as socket,
    ):
        await socket.send_bytes(ping.SerializeToString())
        closing = await socket.receive()

    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1002
    assert agent_dispatcher.workers == {}
