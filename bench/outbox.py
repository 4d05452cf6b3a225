"""The durable result outbox: how fast records become durable, and how fast they go out.

(a) enqueue, 1 putter: ``await outbox.put(record)`` one after another — every put waits
    for its own fsync, so this is the disk's commit latency.
(b) enqueue, N concurrent putters (50), each putting as fast as it can: puts queued while
    a commit is being fsynced share the next transaction (group commit); reports the mean
    batch size. This saturates the outbox, so its latency is mostly queueing: with 50
    puts always in flight, mean latency = 50 / throughput (Little's law).
    For both: records/s, and put() call → durable (future resolved after the commit), in ms.
(b') enqueue at an offered rate (1,000 and 2,000 records/s, open loop: puts start on a
    clock, as calls end independently): put() → durable p50/p99 below saturation.
(c) delivery to a webhook: an aiohttp receiver in another process on 127.0.0.1 (it checks
    the HMAC signature of every request, as a real one would); the outbox holds M
    released records; records/s until all are marked delivered, at 8 and 32 concurrent
    sends.
(d) put → delivered, one at a time, with the deliverer idle: shows that a new record wakes
    it at once (no polling lag).

Records are realistic: a three-minute call, 30 transcript entries, 100 events (see
tests/sample_records.py). The outbox lives in a temporary directory on the same disk as
the repository (``--dir`` to choose), never on tmpfs.

Goals: enqueue ≥ 2,000 records/s; put → durable p50/p99 under 20 ms (at 2,000/s offered).

    uv run python bench/outbox.py [--records 2000] [--putters 50] [--dir PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_stats import machine, percentile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_RECORDS_PER_S = 2000
GOAL_DURABLE_MS = 20.0
SECRET = "bench-webhook-secret"


def latency_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50": round(percentile(ms, 50), 3), "p99": round(percentile(ms, 99), 3)}


async def enqueue(directory: Path, records: list[Any], putters: int) -> dict[str, Any]:
    from runtime.outbox import Outbox

    outbox = Outbox(directory / f"enqueue-{putters}.db", sinks=["webhook:http://x/calls"])
    durations: list[float] = []

    async def putter(mine: list[Any]) -> None:
        for record in mine:
            started = time.perf_counter()
            await outbox.put(record)
            durations.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(putter(records[i::putters]) for i in range(putters)))
    elapsed = time.perf_counter() - started
    await outbox.aclose()
    return {
        "putters": putters,
        "records": len(records),
        "records_per_s": round(len(records) / elapsed),
        "put_to_durable_ms": latency_ms(durations),
        "records_per_transaction": round(outbox.operations / outbox.transactions, 1),
    }


async def enqueue_at_rate(directory: Path, records: list[Any], rate: float) -> dict[str, Any]:
    """Open loop: a put starts every 1/rate seconds whether or not earlier ones are done,
    as calls end independently of each other."""
    from runtime.outbox import Outbox

    outbox = Outbox(directory / f"paced-{rate:g}.db", sinks=["webhook:http://x/calls"])
    durations: list[float] = []

    async def put(record: Any) -> None:
        started = time.perf_counter()
        await outbox.put(record)
        durations.append(time.perf_counter() - started)

    puts = []
    began = time.perf_counter()
    for index, record in enumerate(records):
        ahead = began + index / rate - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        puts.append(asyncio.create_task(put(record)))
    await asyncio.gather(*puts)
    await outbox.aclose()
    return {
        "offered_records_per_s": rate,
        "records": len(records),
        "put_to_durable_ms": latency_ms(durations),
        "records_per_transaction": round(outbox.operations / outbox.transactions, 1),
    }


async def start_receiver() -> tuple[asyncio.subprocess.Process, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-webhook",
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    port = int((await child.stdout.readline()).decode())
    return child, f"http://127.0.0.1:{port}/calls"


async def deliver(directory: Path, records: list[Any], url: str, concurrency: int) -> dict:
    from runtime.delivery import Deliverer
    from runtime.outbox import Outbox
    from runtime.sinks import WebhookSink

    sink = WebhookSink(url, SECRET)
    with Outbox(directory / f"deliver-{concurrency}.db", sinks=[sink.name]) as outbox:
        await asyncio.gather(*(outbox.put(record) for record in records))
        deliverer = Deliverer(outbox, [sink], concurrency=concurrency)
        started = time.perf_counter()
        await deliverer.run_until_idle()
        elapsed = time.perf_counter() - started
        await deliverer.aclose()
        delivered = deliverer.progress.delivered
    assert delivered == len(records), f"only {delivered} of {len(records)} delivered"
    return {
        "concurrency": concurrency,
        "records": len(records),
        "records_per_s": round(len(records) / elapsed),
    }


async def put_to_delivered(directory: Path, records: list[Any], url: str) -> dict:
    from runtime.delivery import Deliverer, DeliveryOutcome
    from runtime.outbox import Outbox
    from runtime.sinks import WebhookSink

    sink = WebhookSink(url, SECRET)
    done = asyncio.Event()

    def on_outcome(outcome: DeliveryOutcome) -> None:
        done.set()

    durations: list[float] = []
    with Outbox(directory / "one-at-a-time.db", sinks=[sink.name]) as outbox:
        deliverer = Deliverer(outbox, [sink], poll_interval=60, on_outcome=on_outcome)
        deliverer.start()
        for record in records:
            done.clear()
            started = time.perf_counter()
            await outbox.put(record)
            await done.wait()
            durations.append(time.perf_counter() - started)
        await deliverer.aclose()
    return {"records": len(records), "put_to_delivered_ms": latency_ms(durations)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.sample_records import sample_record

    records = [sample_record(f"bench-{i:06d}") for i in range(args.records)]
    base = args.dir or ROOT
    with tempfile.TemporaryDirectory(dir=base, prefix=".bench-outbox-") as tmp:
        directory = Path(tmp)
        sequential = await enqueue(directory, records[: args.records // 2], 1)
        concurrent = await enqueue(directory, records, args.putters)
        paced = [await enqueue_at_rate(directory, records, rate) for rate in (1000, 2000)]
        receiver, url = await start_receiver()
        try:
            delivery = [await deliver(directory, records, url, n) for n in (8, 32)]
            one_by_one = await put_to_delivered(directory, records[:200], url)
        finally:
            receiver.terminate()
            await receiver.wait()
    return {
        "benchmark": "outbox",
        "record_json_bytes": len(records[0].model_dump_json()),
        "enqueue": [sequential, concurrent],
        "enqueue_at_offered_rate": paced,
        "delivery_to_webhook": delivery,
        "put_to_delivered_idle_deliverer": one_by_one,
        "goals": {
            "enqueue_records_per_s": GOAL_RECORDS_PER_S,
            "put_to_durable_ms": GOAL_DURABLE_MS,
            "rate_met_by": [
                run["putters"]
                for run in (sequential, concurrent)
                if run["records_per_s"] >= GOAL_RECORDS_PER_S
            ],
            "latency_met_at_offered_rates": [
                run["offered_records_per_s"]
                for run in paced
                if run["put_to_durable_ms"]["p99"] < GOAL_DURABLE_MS
            ],
        },
        "machine": machine(),
    }


def serve_webhook() -> None:
    """The receiver process: verify each signature, answer 200, print the port first."""
    import hashlib
    import hmac

    from aiohttp import web

    async def calls(request: web.Request) -> web.Response:
        body = await request.read()
        message = request.headers["X-Dialplan-Timestamp"].encode() + b"." + body
        expected = "sha256=" + hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["X-Dialplan-Signature"]):
            return web.Response(status=401)
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/calls", calls)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--putters", type=int, default=50)
    parser.add_argument("--dir", type=Path, help="where the outbox files go (default: repo)")
    parser.add_argument("--serve-webhook", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_webhook:
        serve_webhook()
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
