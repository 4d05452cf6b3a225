"""`dialplan validate` CLI benchmark: wall time of validating the shipped bots.

Runs ``.venv/bin/dialplan validate bots/`` as a subprocess (the console script directly,
not ``uv run``, so uv's own start-up is excluded) 15 times after one warm-up and reports
median / p90 / min. For context it also times the interpreter baseline
(``python -c pass``) and runs the command once under ``python -X importtime`` to list the
slowest top-level imports and to check that livekit and litellm are NOT imported (loading
and validating bots must never pay for them).

Target: median under 0.5 s.

    uv run python bench/validate_cli.py [--runs 15] [--bots bots]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_stats import percentile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.catalog import bot_files  # noqa: E402  (after the path set-up)

VENV_BIN = ROOT / ".venv" / "bin"
TARGET_MS = 500.0
FORBIDDEN = ("livekit", "litellm", "openai", "aiohttp")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s+)(\S+)\s*$")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "p90": round(percentile(values, 90), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return (time.perf_counter() - started) * 1000, completed.returncode


def import_profile(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One run under ``-X importtime``: top imports and whether heavy packages appear."""
    completed = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows: list[tuple[str, int, int, int]] = []  # (module, self us, cumulative us, depth)
    for line in completed.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            depth = (len(match.group(3)) - 1) // 2
            rows.append((match.group(4), int(match.group(1)), int(match.group(2)), depth))
    top_level = sorted((r for r in rows if r[3] == 0), key=lambda r: r[2], reverse=True)
    slowest_self = sorted(rows, key=lambda r: r[1], reverse=True)
    modules = {r[0] for r in rows}
    return {
        "modules_imported": len(rows),
        "total_import_ms": round(sum(r[1] for r in rows) / 1000, 1),
        "top_level_cumulative_ms": {r[0]: round(r[2] / 1000, 1) for r in top_level[:8]},
        "slowest_self_ms": {r[0]: round(r[1] / 1000, 1) for r in slowest_self[:8]},
        "heavy_packages_imported": {
            name: sorted(m for m in modules if m == name or m.startswith(name + "."))[:3]
            for name in FORBIDDEN
            if any(m == name or m.startswith(name + ".") for m in modules)
        },
        "livekit_imported": any(m.split(".")[0] == "livekit" for m in modules),
        "litellm_imported": any(m.split(".")[0] == "litellm" for m in modules),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--bots", default="bots")
    args = parser.parse_args()

    python = str(VENV_BIN / "python")
    dialplan = str(VENV_BIN / "dialplan")
    env = dict(os.environ)
    for name in ("PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)  # keep .pyc caching on, as for a real user
    validate = [python, dialplan, "validate", args.bots]

    first_ms, first_rc = timed_run(validate, env)  # warm-up: fills the OS page cache / .pyc
    baseline = [timed_run([python, "-c", "pass"], env)[0] for _ in range(args.runs)]
    runs: list[float] = []
    codes: set[int] = set()
    for _ in range(args.runs):
        elapsed, code = timed_run(validate, env)
        runs.append(elapsed)
        codes.add(code)
    imports = import_profile(validate, env)

    median = statistics.median(runs)
    print(
        json.dumps(
            {
                "benchmark": "validate_cli",
                "command": f".venv/bin/dialplan validate {args.bots}",
                "bot_files": len(bot_files([ROOT / args.bots])),  # scenario files excluded
                "exit_codes": sorted(codes),
                "runs": args.runs,
                "first_run_ms": round(first_ms, 1),
                "first_run_exit_code": first_rc,
                "validate_ms": summary(runs),
                "python_c_pass_ms": summary(baseline),
                "overhead_over_interpreter_ms_median": round(
                    median - statistics.median(baseline), 1
                ),
                "imports": imports,
                "target_ms": TARGET_MS,
                "meets_target": median < TARGET_MS and codes == {0},
                "machine": {
                    "python": platform.python_version(),
                    "implementation": platform.python_implementation(),
                    "platform": platform.platform(),
                    "cpu_count": os.cpu_count(),
                    "bench_python": sys.version.split()[0],
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
