"""HTTP tool overhead: dialplan's `http` tool versus a bare aiohttp request to the same URL.

(a) bare: one reused ``aiohttp.ClientSession``: GET the same URL with the same query and
    headers, read the body, ``json.loads`` it — what a hand-written tool would do.
(b) handler: the ``ToolDefinition`` handler of an `http` tool loaded like a bot's tool
    (registry -> catalog -> call plan -> plugin factory): arguments checked against the JSON
    Schema, secret read from the environment, URL/query/headers rendered, the request sent,
    the body read under the size cap, parsed and shaped, the ``http_request`` event added.
(c) livekit: (b) wrapped by ``runtime.session.livekit_tool`` and called the way livekit
    calls a raw function tool, which adds the ``tool_call`` event.
(d) for scale, (a) with a new ``ClientSession`` (and so a new connection) per request: what
    the tool would cost if it did not keep one session per call.

The server is an aiohttp app on 127.0.0.1 in the same event loop, so its work is in every
variant alike and cancels out of the difference. The variants run interleaved (rotating
order) after a warm-up; the heap is frozen (``gc.freeze()``) and collected every 100 rounds
outside the timed regions, as in bench/call_setup.py.

Target: (b) - (a) < 2 ms at the median.

    uv run python bench/http_tool.py [--iterations 3000] [--warmup 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_stats import machine, percentile, summary

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGET_MS = 2.0
TOKEN = "bench-token-0123456789"
ARGUMENTS = {"id": "c42"}
BOT = """
[prompt]
system = "static"
[variables]
api = "{api}"
tier = "gold"
[llm]
provider = "rules"
[[tools]]
use = "http"
name = "crm"
description = "look up a customer"
url = "{{{{ api }}}}/customers/{{{{ args.id }}}}"
query = {{ tier = "{{{{ tier }}}}" }}
headers = {{ Authorization = "Bearer {{{{ secrets.token }}}}" }}
secrets = {{ token = "${{env:BENCH_CRM_TOKEN}}" }}
[tools.parameters]
type = "object"
required = ["id"]
properties.id = {{ type = "string" }}
"""
CUSTOMER = {"id": "c42", "name": "Ann", "tier": "gold", "open_balance": 12.5}


async def start_server() -> tuple[Any, str]:
    from aiohttp import web

    async def customer(request: web.Request) -> web.Response:
        return web.json_response(CUSTOMER)

    app = web.Application()
    app.router.add_get("/customers/{id}", customer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def load_tool(api: str, bots: Path) -> tuple[Any, Any, Any]:
    """The bot's http tool as a call builds it, plus its CallContext and resolved entry."""
    from runtime.call import CallRequest
    from runtime.catalog import load_catalog
    from runtime.registry import load_registry
    from runtime.resolve import plan_call

    (bots / "shop.toml").write_text(textwrap.dedent(BOT.format(api=api)), encoding="utf-8")
    registry = load_registry()
    snapshot = load_catalog(bots, registry)
    assert not snapshot.problems, snapshot.problems
    plan = plan_call(snapshot, CallRequest(bot="shop"), registry)
    call = plan.new_context()
    resolved = plan.tools[0]
    return resolved.entry.factory(resolved.options, call), call, resolved


async def measure(iterations: int, warmup: int, bots: Path) -> dict[str, Any]:
    import aiohttp

    from runtime import DisconnectedBy
    from runtime.session import livekit_tool

    os.environ["BENCH_CRM_TOKEN"] = TOKEN
    runner, api = await start_server()
    tool, call, resolved = load_tool(api, bots)
    wrapped: Any = livekit_tool(resolved, tool, call)  # a RawFunctionTool: callable
    bare_session = aiohttp.ClientSession()
    url = f"{api}/customers/{ARGUMENTS['id']}"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def bare() -> Any:
        async with bare_session.get(url, params={"tier": "gold"}, headers=headers) as response:
            return json.loads(await response.read())

    async def bare_new_session() -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params={"tier": "gold"}, headers=headers) as response,
        ):
            return json.loads(await response.read())

    variants: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare": bare,
        "bare_new_session": bare_new_session,
        "handler": lambda: tool.handler(dict(ARGUMENTS), call),
        "livekit": lambda: wrapped(raw_arguments=dict(ARGUMENTS)),
    }
    for name, run in variants.items():  # every variant answers the same customer
        answer = await run()
        assert (answer if name.startswith("bare") else json.loads(answer)) == CUSTOMER, name
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for index in range(warmup + iterations):
        if index == warmup:
            gc.collect()
            gc.freeze()
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            await variants[name]()
            elapsed = (time.perf_counter() - started) * 1000
            if index >= warmup:
                samples[name].append(elapsed)
        if index % 100 == 99:
            call.events.clear()  # a real call holds a few events, not thousands
            gc.collect()
    errors = [e.data["error"] for e in call.events if e.data.get("error")]
    call.request_end(DisconnectedBy.CUSTOMER)  # closes the tool's client session
    await bare_session.close()
    await runner.cleanup()
    return report(samples, iterations, warmup, errors)


def report(
    samples: dict[str, list[float]], iterations: int, warmup: int, errors: list[str]
) -> dict[str, Any]:
    bare, handler, wrapped = samples["bare"], samples["handler"], samples["livekit"]
    paired = [h - b for h, b in zip(handler, bare, strict=True)]
    overhead = statistics.median(handler) - statistics.median(bare)
    return {
        "iterations_each": iterations,
        "warmup_each": warmup,
        "bare_aiohttp_ms": summary(bare),
        "http_tool_handler_ms": summary(handler),
        "http_tool_livekit_wrapped_ms": summary(wrapped),
        "overhead_ms_median": round(overhead, 4),
        "overhead_ms_p90": round(percentile(handler, 90) - percentile(bare, 90), 4),
        "overhead_ms_p99": round(percentile(handler, 99) - percentile(bare, 99), 4),
        "overhead_paired_ms": summary(paired),
        "livekit_wrapped_overhead_ms_median": round(
            statistics.median(wrapped) - statistics.median(bare), 4
        ),
        "bare_with_a_session_per_request_ms": summary(samples["bare_new_session"]),
        "target_ms": TARGET_MS,
        "meets_target": overhead < TARGET_MS,
        "tool_errors": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        bots = Path(directory) / "bots"
        bots.mkdir()
        (Path(directory) / "prompts").mkdir()
        result: dict[str, Any] = {"benchmark": "http_tool"}
        result |= asyncio.run(measure(args.iterations, args.warmup, bots))
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
