"""Campaign dispatcher: calls placed per second against the local LiveKit server API.

Each row goes through the real dialer (CreateRoom → CreateDispatch → CreateSIPParticipant
with wait_until_answered, over Twirp/protobuf on loopback) and the real campaign engine
(SQLite state). Callees answer at once and the call counts as over when answered, so the
figure is the dispatcher's own rate, not a conversation's length.

    python bench/campaign_dial.py [--rows 500] [--concurrency 20]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench_stats import machine  # noqa: E402

from runtime.fleet.campaign import Campaign, CampaignCall  # noqa: E402
from runtime.fleet.config import FleetConfig, OutboundTrunk, Trunks  # noqa: E402
from runtime.fleet.dialer import Call  # noqa: E402
from runtime.fleet.outcome import DialOutcome  # noqa: E402
from runtime.fleet.provision import provision  # noqa: E402
from tests.fleet.livekit_server import LiveKitTestServer  # noqa: E402

FLEET = FleetConfig(
    trunks=Trunks(
        outbound=[OutboundTrunk(name="carrier", address="sip.example", numbers=["+15550100"])]
    )
)


async def main(rows: int, concurrency: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dialplan-campaign-bench-"))
    csv_path = tmp / "list.csv"
    csv_path.write_text("phone,name\n" + "".join(f"+1555{i:07d},n{i}\n" for i in range(rows)))
    async with LiveKitTestServer() as server:
        client = server.api()
        await provision(FLEET, client, dry_run=False)

        async def dial(call: CampaignCall) -> DialOutcome:
            placed = Call(
                bot=call.bot,
                to=call.to,
                variables=call.variables,
                session_id=call.session_id,
                config=FLEET,
                livekit_api=client,
            )
            return await placed.place()

        campaign = Campaign(
            csv_path, "reminder", dial, store_path=tmp / "state.db", concurrency=concurrency
        )
        started = time.perf_counter()
        summary = await campaign.run()
        elapsed = time.perf_counter() - started
        await client.aclose()
        requests = len(server.requests)
    return {
        "benchmark": "campaign_dial",
        "rows": rows,
        "concurrency": concurrency,
        "answered": summary.answered,
        "elapsed_s": round(elapsed, 3),
        "calls_placed_per_s": round(rows / elapsed, 1),
        "api_requests": requests,
        "note": "dialer + campaign engine + local Twirp server in one process on loopback",
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rows, args.concurrency)), indent=2))
