"""Load a directory of bots into an immutable snapshot.

A snapshot never changes: a call takes the snapshot of the moment it starts, and a reload
builds a new snapshot and swaps it in, so a running call never sees half an edit.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from runtime.compiler import BotCompiler, CompiledBot
from runtime.errors import CallSetupError, Problem, suggest
from runtime.registry import Registry
from runtime.templates import PromptEnvironment
from runtime.toml_problems import with_positions

SCENARIO_SUFFIX = ".scenarios.toml"


@dataclass(frozen=True)
class CatalogSnapshot:
    bots: Mapping[str, CompiledBot]
    problems: tuple[Problem, ...] = ()
    bots_dir: Path | None = None
    prompts_dir: Path | None = None
    environment: PromptEnvironment | None = None  # for per-call prompt overrides
    loaded_at: float = field(default_factory=time.time)

    def get(self, bot_id: str) -> CompiledBot:
        try:
            return self.bots[bot_id]
        except KeyError:
            raise CallSetupError(
                f"no bot {bot_id!r} in the catalog; "
                + suggest(bot_id, sorted(self.bots), what="loaded bots")
            ) from None

    def __iter__(self) -> Iterator[CompiledBot]:
        return iter(self.bots.values())

    def __len__(self) -> int:
        return len(self.bots)


def id_clash(path: Path, bot_id: str, other: Path) -> Problem:
    problem = Problem(
        path,
        f"bot id {bot_id!r} is already used by {other}",
        key="id",
        fix="give one of them a different `id` or file name",
    )
    try:  # at its `id` line, when it has one (else the id is the file name)
        return with_positions([problem], path.read_text(encoding="utf-8"))[0]
    except OSError:
        return problem


def bot_files(paths: Iterable[Path]) -> list[Path]:
    """Bot files named by PATHs: files as given, directories' *.toml (not scenario files)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.glob("*.toml"))
                if not p.name.endswith(SCENARIO_SUFFIX) and not p.name.startswith((".", "_"))
            )
        elif not path.name.endswith(SCENARIO_SUFFIX):  # a scenario file is not a bot
            found.append(path)
    return found


def default_prompts_dir(bots_dir: Path) -> Path:
    return bots_dir.resolve().parent / "prompts"


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Compiling a catalog allocates a great many objects that all stay alive (models,
    templates, parse results): Python's cyclic collector would rescan that growing heap
    again and again, a third of a 1,000-bot load, and find nothing to free. It is off for
    the compile and on again after; what little garbage there is waits for its next run."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_catalog(
    paths: Path | Iterable[Path],
    registry: Registry,
    *,
    prompts_dir: Path | None = None,
    eager: bool = False,
) -> CatalogSnapshot:
    """Compile every bot under ``paths``. Bots with problems are left out of the snapshot
    and their problems are listed in it; the others still load. ``eager`` generates every
    template's code now instead of on first use (see `BotCompiler`)."""
    path_list = [paths] if isinstance(paths, Path) else list(paths)
    files = bot_files(path_list)
    bots_dir = (
        path_list[0]
        if path_list and path_list[0].is_dir()
        else (files[0].parent if files else None)
    )
    if prompts_dir is None and bots_dir is not None:
        prompts_dir = default_prompts_dir(bots_dir)
    prompts = PromptEnvironment(
        prompts_dir if prompts_dir and prompts_dir.is_dir() else None,
        prepare=lambda env: registry.hook.prepare_jinja_environment(env=env),
    )
    compiler = BotCompiler(registry, prompts, eager=eager)
    bots: dict[str, CompiledBot] = {}
    problems: list[Problem] = []
    with collector_paused():
        for path in files:
            if not path.exists():
                problems.append(Problem(path, "no such file"))
                continue
            result = compiler.compile_file(path)
            if isinstance(result, list):
                problems.extend(result)
            elif result.id in bots:
                problems.append(id_clash(path, result.id, bots[result.id].path))
            else:
                bots[result.id] = result
    return CatalogSnapshot(MappingProxyType(bots), tuple(problems), bots_dir, prompts_dir, prompts)
