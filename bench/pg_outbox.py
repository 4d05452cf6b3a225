"""The PostgreSQL results store: how fast records become durable, and how fast they go out.

(a) enqueue, 1 putter: ``await store.put(record)`` one after another — each waits for its
    own commit, so this is the server's commit latency plus a round trip.
(b) enqueue, N concurrent putters (50): puts run side by side on the store's connections
    (``--connections``, default 4) and PostgreSQL flushes the WAL of commits that arrive
    together once (its group commit). Saturated, so latency is mostly queueing.
    For both: records/s and put() call → committed, in ms.
(c) delivery to a webhook: an aiohttp receiver in another process on 127.0.0.1 (it checks
    every HMAC signature; bench/outbox.py's); the store holds M released records;
    records/s until all are marked delivered — one worker at 8 and 32 concurrent sends,
    and two workers (two stores, two deliverers) claiming from the same backlog.

The server is a fresh cluster from Debian's postgresql (``make postgres``) with its
durable defaults (fsync, synchronous_commit, full_page_writes on), in a temporary
directory on the same disk as the repository (``--dir`` to choose), each run in a fresh
database. Records are the realistic three-minute calls of tests/sample_records.py.

    uv run python bench/pg_outbox.py [--records 2000] [--putters 50] [--connections 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench_stats import machine
from outbox import SECRET, latency_ms, start_receiver

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Databases:
    """A fresh database per run, on one server."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.count = 0

    def fresh(self) -> str:
        from tests.pg_server import create_database

        self.count += 1
        return create_database(self.server, f"bench_{self.count}")


async def enqueue(dsn: str, records: list[Any], putters: int, connections: int) -> dict:
    from runtime.pg_outbox import PostgresOutbox

    store = PostgresOutbox(dsn, sinks=["webhook:http://x/calls"], connections=connections)
    durations: list[float] = []

    async def putter(mine: list[Any]) -> None:
        for record in mine:
            started = time.perf_counter()
            await store.put(record)
            durations.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(putter(records[i::putters]) for i in range(putters)))
    elapsed = time.perf_counter() - started
    await store.aclose()
    return {
        "putters": putters,
        "connections": connections,
        "records": len(records),
        "records_per_s": round(len(records) / elapsed),
        "put_to_committed_ms": latency_ms(durations),
    }


async def deliver(
    dsn: str, records: list[Any], url: str, *, workers: int, concurrency: int
) -> dict[str, Any]:
    """``workers`` stores and deliverers on one database, as a fleet's workers would be."""
    from runtime.delivery import Deliverer
    from runtime.pg_outbox import PostgresOutbox
    from runtime.sinks import WebhookSink

    sink = WebhookSink(url, SECRET)
    stores = [
        PostgresOutbox(dsn, sinks=[sink.name], worker_id=f"bench-{n}") for n in range(workers)
    ]
    await asyncio.gather(*(stores[0].put(record) for record in records))
    deliverers = [
        Deliverer(store, [WebhookSink(url, SECRET)], concurrency=concurrency) for store in stores
    ]
    started = time.perf_counter()
    await asyncio.gather(*(deliverer.run_until_idle() for deliverer in deliverers))
    elapsed = time.perf_counter() - started
    for deliverer in deliverers:
        await deliverer.aclose()
    delivered = [deliverer.progress.delivered for deliverer in deliverers]
    await sink.aclose()
    for store in stores:
        await store.aclose()
    assert sum(delivered) == len(records), f"{delivered} of {len(records)} delivered"
    return {
        "workers": workers,
        "concurrency_per_worker": concurrency,
        "records": len(records),
        "records_per_s": round(len(records) / elapsed),
        "delivered_by_worker": delivered,
    }


async def run(args: argparse.Namespace, databases: Databases) -> dict[str, Any]:
    from tests.sample_records import sample_record

    records = [sample_record(f"bench-{i:06d}") for i in range(args.records)]
    half = records[: args.records // 2]
    enqueued = [
        await enqueue(databases.fresh(), half, 1, args.connections),
        await enqueue(databases.fresh(), records, args.putters, args.connections),
    ]
    receiver, url = await start_receiver()
    try:
        delivery = [
            await deliver(databases.fresh(), records, url, workers=1, concurrency=8),
            await deliver(databases.fresh(), records, url, workers=1, concurrency=32),
            await deliver(databases.fresh(), records, url, workers=2, concurrency=16),
        ]
    finally:
        receiver.terminate()
        await receiver.wait()
    return {
        "benchmark": "pg_outbox",
        "record_json_bytes": len(records[0].model_dump_json()),
        "enqueue": enqueued,
        "delivery_to_webhook": delivery,
        "server": "PostgreSQL on 127.0.0.1, fsync on (durable defaults)",
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--putters", type=int, default=50)
    parser.add_argument("--connections", type=int, default=4, help="per store")
    parser.add_argument("--dir", type=Path, help="where the cluster goes (default: repo)")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from tests.pg_server import PostgresMissing, start_postgres, stop_postgres

    try:
        server = start_postgres(parent=args.dir or ROOT, durable=True)
    except PostgresMissing as exc:
        sys.exit(f"bench/pg_outbox.py: {exc}")
    try:
        print(json.dumps(asyncio.run(run(args, Databases(server))), indent=2))
    finally:
        stop_postgres(server)


if __name__ == "__main__":
    main()
