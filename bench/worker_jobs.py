"""The LiveKit worker: job accepted → agent session started, idle memory, memory per call.

A real livekit-agents AgentServer (dialplan's `Worker`) registers with a local server
speaking LiveKit's agent protocol (tests/fleet/agent_dispatcher.py) and is offered jobs.
The call's media line is local (no SFU here), with the instant fake voice providers, so
what is measured is livekit's job launch plus dialplan's routing, planning and session
build — no network, no model.

    python bench/worker_jobs.py [--jobs 40] [--concurrent 40]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench_stats import machine, summary  # noqa: E402

from runtime.call_results import CallResults  # noqa: E402
from runtime.delivery import DeliveryConfig, open_delivery  # noqa: E402
from runtime.fleet.config import FleetConfig, WorkerSettings  # noqa: E402
from runtime.fleet.worker import Worker  # noqa: E402
from runtime.registry import load_registry  # noqa: E402
from tests.fleet.agent_conftest import TEST_API_KEY, TEST_API_SECRET  # noqa: E402
from tests.fleet.agent_dispatcher import AgentDispatcher  # noqa: E402
from tests.fleet.local_line import LocalLine  # noqa: E402
from tests.fleet.test_room_call import SIP_CALL, write_bot  # noqa: E402
from tests.voice_fakes import FakeVoicePlugin  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Lines:
    def __init__(self) -> None:
        self.made: list[LocalLine] = []

    def __call__(self, ctx: Any) -> LocalLine:
        line = LocalLine(ctx.job.room.name, SIP_CALL)  # the party stays until it leaves
        self.made.append(line)
        return line


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


async def main(jobs: int, concurrent: int) -> dict[str, Any]:
    import livekit.agents.worker as lk_worker

    lk_worker.UPDATE_STATUS_INTERVAL = 0.5  # type: ignore[attr-defined]
    tmp = Path(tempfile.mkdtemp(prefix="dialplan-worker-bench-"))
    write_bot(tmp / "bots")
    async with AgentDispatcher(api_key=TEST_API_KEY, api_secret=TEST_API_SECRET) as dispatcher:
        registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin())])
        outbox, deliverer = open_delivery(DeliveryConfig(outbox_path=tmp / "outbox.db"), registry)
        lines = Lines()
        worker = Worker(
            bots=tmp / "bots",
            config=FleetConfig(worker=WorkerSettings(host="127.0.0.1", port=0)),
            max_concurrent_calls=concurrent + 5,
            registry=registry,
            results=CallResults(registry, outbox, deliverer),
            line_factory=lines,
            env=dispatcher.worker_env,
        )
        ready = asyncio.Event()
        running = asyncio.create_task(worker.run(ready=ready.set))
        await ready.wait()
        await dispatcher.wait_worker("dialplan")
        # warm-up: the first job loads livekit's per-thread machinery once
        await one_job(dispatcher, lines, "call_warmup")
        await asyncio.sleep(1.0)
        gc.collect()
        idle = rss_mb()

        accepted_to_started, assigned_to_started = [], []
        for index in range(jobs):
            offer_at, assigned_at, started_at = await one_job(dispatcher, lines, f"call_s{index}")
            accepted_to_started.append((started_at - offer_at) * 1000)
            assigned_to_started.append((started_at - assigned_at) * 1000)

        before = len(lines.made)
        offers = [
            await dispatcher.dispatch(f"call_c{i}", json.dumps({"bot": "line"}), "dialplan")
            for i in range(concurrent)
        ]
        assert all(offer.accepted for offer in offers)
        await wait_for(
            lambda: (
                len(lines.made) == before + concurrent
                and all(line.session_started_at for line in lines.made[before:])
            )
        )
        await asyncio.sleep(2.0)  # greetings played, every call idle on the line
        gc.collect()
        active = rss_mb()
        for line in lines.made[before:]:
            line.leave()
        await wait_for(lambda: worker.active_calls == 0, 60)
        worker.stop()
        await running
    return {
        "benchmark": "worker_jobs",
        "jobs": jobs,
        "job_accepted_to_session_started_ms": summary(accepted_to_started),
        "job_assigned_to_session_started_ms": summary(assigned_to_started),
        "worker_idle_rss_mb": round(idle, 1),
        "concurrent_calls": concurrent,
        "rss_with_calls_mb": round(active, 1),
        "memory_per_active_call_mb": round((active - idle) / concurrent, 2),
        "note": "accepted = the worker's availability answer reached the dispatcher; "
        "started = the agent's first state change; local media line, fake instant providers",
        "median_accepted_ms": round(statistics.median(accepted_to_started), 2),
        "machine": machine(),
    }


async def one_job(
    dispatcher: AgentDispatcher, lines: Lines, room: str
) -> tuple[float, float, float]:
    count = len(lines.made)
    offer = await dispatcher.dispatch(room, json.dumps({"bot": "line"}), "dialplan")
    assert offer.accepted and offer.answered_at and offer.assigned_at
    await wait_for(lambda: len(lines.made) > count and lines.made[count].session_started_at)
    line = lines.made[count]
    assert line.session_started_at is not None
    line.leave()
    await wait_for(lambda: line.hung_up.is_set())
    return offer.answered_at, offer.assigned_at, line.session_started_at


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=40)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.jobs, args.concurrent)), indent=2))
