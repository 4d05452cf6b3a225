"""The campaign engine alone: rows/s through ``Campaign.run`` with an instant fake dialer.

5,000 rows at concurrency 50 by default. Every row costs two durable commits (in progress
before the dial, the outcome after it) on the real SQLite state file (WAL,
``synchronous=FULL``, group commit), plus reading and hashing the CSV and storing its rows.
The dialer answers at once, so this measures the engine and SQLite overhead; a real call
lasts minutes, and the end-to-end figure against a LiveKit protocol server is measured
elsewhere. Each repetition is a new campaign in a new state file; the median is reported.
The state file lives in a temporary directory beside the repository (``--dir`` to choose),
never on tmpfs.

    uv run python bench/campaign_engine.py [--rows 5000] [--concurrency 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_stats import machine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.fleet.campaign import Campaign, CampaignCall  # noqa: E402
from runtime.fleet.outcome import DialOutcome  # noqa: E402


async def instant_dial(call: CampaignCall) -> DialOutcome:
    return DialOutcome(call.session_id, f"call_{call.session_id}", answered=True)


def write_csv(path: Path, rows: int) -> None:
    lines = ["phone,name,due_date"]
    lines += [f"+1555{index:07d},Customer {index},2025-03-01" for index in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def one_run(directory: Path, rows: int, concurrency: int, index: int) -> dict[str, Any]:
    csv_path = directory / f"leads-{index}.csv"
    write_csv(csv_path, rows)
    campaign = Campaign(
        csv_path,
        "bench",
        instant_dial,
        store_path=directory / f"state-{index}.db",
        concurrency=concurrency,
    )
    started = time.perf_counter()
    summary = await campaign.run()
    elapsed = time.perf_counter() - started
    assert summary.answered == rows, summary
    return {"seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.dir or ROOT, prefix=".bench-campaign-") as tmp:
        runs = [
            await one_run(Path(tmp), args.rows, args.concurrency, index)
            for index in range(args.repeat)
        ]
    return {
        "benchmark": "campaign_engine",
        "rows": args.rows,
        "concurrency": args.concurrency,
        "dialer": "instant fake (answers at once)",
        "rows_per_s": statistics.median(run["rows_per_s"] for run in runs),
        "runs": runs,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where the state files go (default: repo)")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
