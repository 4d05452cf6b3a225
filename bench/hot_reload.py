"""Hot-reload benchmark: save -> new version active, with 200 bots in the catalog.

(a) Save to active: a `LiveCatalog` over 200 generated bots (see catalog_load.py) with the
    real watchfiles watcher running; each round rewrites one bot file (temp file + rename,
    like most editors) or one shared template, and times from the write until a new call
    resolves (`plan_call`) the new version.
(b) Process restart: what a restart-based dev loop (LiveKit's own dev mode) costs for the
    same change: a fresh `python -m runtime.cli ...`-style process that imports livekit,
    loads the registry and the 200-bot catalog and plans one call. Reported as the ratio.
(c) Watcher CPU when nothing changes: process CPU time over an idle window with the watcher
    armed (as `dialplan dev` runs it, with its 250 ms heartbeat) and without the heartbeat.

Targets: (a) median < 100 ms and p99 < 250 ms; (b) at least 10x faster than a restart.

    uv run python bench/hot_reload.py [--bots 200] [--rounds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_stats import machine, summary
from catalog_load import generate

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

RESTART_PROBE = """
import sys, time
started = time.perf_counter()
import livekit.agents  # what a restarted agent server imports first
from runtime.call import CallRequest
from runtime.catalog import load_catalog
from runtime.registry import load_registry
from runtime.resolve import plan_call
registry = load_registry()
snapshot = load_catalog(__import__("pathlib").Path(sys.argv[1]), registry)
plan_call(snapshot, CallRequest(bot="bot_0000"), registry)
print(time.perf_counter() - started)
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def save_to_active(bots_dir: Path, rounds: int) -> dict[str, object]:
    from runtime.call import CallRequest
    from runtime.live_catalog import LiveCatalog
    from runtime.registry import load_registry
    from runtime.resolve import plan_call
    from runtime.watch import watch_catalog

    registry = load_registry()
    live = LiveCatalog(bots_dir, registry)
    assert len(live.current()) >= 200 and not live.current().problems
    stop, armed = asyncio.Event(), asyncio.Event()
    reloads: list[float] = []
    watcher = asyncio.create_task(
        watch_catalog(
            live, lambda report: reloads.append(report.seconds), stop=stop, ready=armed.set
        )
    )
    await asyncio.wait_for(armed.wait(), 10)
    bot_ms: list[float] = []
    template_ms: list[float] = []
    shared = bots_dir.parent / "prompts" / "shared" / "closing.j2"
    shared_text = shared.read_text()
    for index in range(rounds):
        if index % 4 == 3:  # a shared template: every bot that includes it reloads
            target_bot, path = "bot_0000", shared
            text = shared_text + f"\nRound {index}.\n"
            samples = template_ms
        else:
            target_bot = f"bot_{index % 200:04d}"
            path = bots_dir / f"{target_bot}.toml"
            text = path.read_text().replace("# generated", f"# round {index}, generated", 1)
            samples = bot_ms
        old = live.current().get(target_bot).version
        started = time.perf_counter()
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        os.replace(temp, path)
        while True:
            plan = plan_call(live.current(), CallRequest(bot=target_bot), registry)
            if plan.bot.version != old:
                break
            await asyncio.sleep(0.001)
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)  # let the watcher settle between saves

    idle = {}
    for label, seconds in (("dev_server_heartbeat_250ms", 5.0),):
        before_cpu, before_wall = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)
        idle[label] = round(
            100 * (cpu_seconds() - before_cpu) / (time.perf_counter() - before_wall), 3
        )
    stop.set()
    await watcher

    # the watcher as production would run it (`--watch` without a readiness heartbeat)
    stop = asyncio.Event()
    quiet = asyncio.create_task(watch_catalog(live, lambda report: None, stop=stop))
    await asyncio.sleep(0.5)
    before_cpu, before_wall = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(5.0)
    idle["no_heartbeat"] = round(
        100 * (cpu_seconds() - before_cpu) / (time.perf_counter() - before_wall), 3
    )
    stop.set()
    await quiet
    return {
        "bot_file_save_ms": summary(bot_ms),
        "shared_template_save_ms": summary(template_ms),
        "all_saves_ms": summary(bot_ms + template_ms),
        "reload_work_ms_median": round(statistics.median(reloads) * 1000, 2),
        "idle_watcher_cpu_percent": idle,
    }


def restart_seconds(bots_dir: Path, reps: int) -> dict[str, float]:
    walls: list[float] = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", RESTART_PROBE, str(bots_dir)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - started)
    return {"median": round(statistics.median(walls), 3), "min": round(min(walls), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dialplan-reload-") as tmp:
        bots_dir = generate(Path(tmp), args.bots)
        reload = asyncio.run(save_to_active(bots_dir, args.rounds))
        restart = restart_seconds(bots_dir, args.restarts)
    all_saves = reload["all_saves_ms"]
    assert isinstance(all_saves, dict)
    ratio = restart["median"] * 1000 / all_saves["median"]
    print(
        json.dumps(
            {
                "benchmark": "hot_reload",
                "bots": args.bots,
                "rounds": args.rounds,
                **reload,
                "process_restart_s": restart,
                "restart_vs_reload_ratio_median": round(ratio, 1),
                "targets": {"median_ms": 100, "p99_ms": 250, "ratio_min": 10},
                "meets_target": all_saves["median"] < 100
                and all_saves["p99"] < 250
                and ratio >= 10,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
