"""A call server's delivery side in a child process, for the SIGKILL tests: open the outbox
the way the runtime does, put N records, print ``put N``, then deliver until killed.

    python -m tests.outbox_child DB WEBHOOK_URL N
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from runtime.delivery import DeliveryConfig, open_delivery
from tests.sample_records import sample_record
from tests.webhook_receiver import SECRET


async def main(db: Path, url: str, count: int) -> None:
    config = DeliveryConfig(outbox_path=db, webhooks=[url], webhook_secret=SECRET)
    outbox, deliverer = open_delivery(config)
    await asyncio.gather(*(outbox.put(sample_record(f"call-{i:04d}")) for i in range(count)))
    print(f"put {count}", flush=True)
    deliverer.start()
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
