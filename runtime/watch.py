"""Watch a catalog's files with watchfiles and apply each batch of changes.

Editors save in many ways — write in place, truncate + write, write a temp file and rename
it over the original — each as several file events within milliseconds. watchfiles groups
events until none arrives for ``step`` ms, so one save is one batch, and the catalog
compiles the final content once. A batch that leaves every version as it was (a `touch`,
a second event of the same save) changes nothing and reports nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.live_catalog import LiveCatalog, ReloadReport

if TYPE_CHECKING:
    import asyncio

# ms without a new event that closes a batch: long enough to span one editor's save
# (rename dances take ~1 ms), short enough that a save feels instant
BATCH_QUIET_MS = 30
BATCH_MAX_MS = 500  # a burst that never goes quiet (a git checkout) is cut here


async def watch_catalog(
    live: LiveCatalog,
    on_reload: Callable[[ReloadReport], None],
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
    on_scenarios: Callable[[list[Path]], None] | None = None,
) -> None:
    """Apply file changes to ``live`` until ``stop`` is set; ``on_reload`` hears about every
    batch that recompiled something (new versions, or problems). ``on_scenarios`` hears
    about saved scenario files (`<bot>.scenarios.toml` beside the bots)."""
    from watchfiles import awatch

    assert live.prompts_dir is not None
    roots = [live.bots_dir] + ([live.prompts_dir] if live.prompts_dir.is_dir() else [])
    watcher = awatch(
        *roots,
        watch_filter=lambda _change, path: (
            live.is_relevant(Path(path))
            or (on_scenarios is not None and _is_scenario_file(live, Path(path)))
        ),
        step=BATCH_QUIET_MS,
        debounce=BATCH_MAX_MS,
        stop_event=stop,
        yield_on_timeout=ready is not None,
        # with `ready`, wake up once early to say the watcher is armed (and, as awatch
        # offers no one-shot timeout, every 250 ms after: a negligible cost)
        rust_timeout=250 if ready is not None else None,
    )
    announced = False
    async for changes in watcher:
        if not announced and ready is not None:
            ready()  # the watcher is armed: edits from now on are seen
            announced = True
        if not changes:
            continue
        paths = [Path(path) for _change, path in changes]
        scenarios = sorted({p for p in paths if _is_scenario_file(live, p) and p.exists()})
        if scenarios and on_scenarios is not None:
            on_scenarios(scenarios)
        report = live.apply(p for p in paths if p not in scenarios)
        if report.recompiled:
            on_reload(report)


def _is_scenario_file(live: LiveCatalog, path: Path) -> bool:
    from runtime.catalog import SCENARIO_SUFFIX

    return path.name.endswith(SCENARIO_SUFFIX) and path.resolve().parent == live.bots_dir
