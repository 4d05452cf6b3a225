"""A catalog that follows its files: apply a set of changed paths, recompile only the bots
they affect, and swap in a new snapshot.

The rules a bot author relies on:
- A bot is recompiled when its TOML changes or when any template it was built from
  changes (includes too). Every other bot keeps its compiled object, untouched.
- A bad save never replaces the last good version: the old version keeps serving and the
  problem stays in ``snapshot.problems`` until a save fixes it.
- A deleted bot file stops new calls to that bot. A call in progress holds the snapshot it
  started with, so it finishes on the version it began with.
- The swap is one assignment: a reader sees the old snapshot or the new one, never a mix.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from runtime.catalog import (
    SCENARIO_SUFFIX,
    CatalogSnapshot,
    bot_files,
    default_prompts_dir,
    id_clash,
)
from runtime.compiler import BotCompiler, CompiledBot
from runtime.errors import Problem
from runtime.registry import Registry
from runtime.schema import Bot
from runtime.templates import FactsCache, PromptEnvironment


@dataclass(frozen=True)
class VersionChange:
    bot_id: str
    old: str | None  # None: a new bot
    new: str | None  # None: the bot was removed

    def __str__(self) -> str:
        if self.old is None:
            return f"+ {self.bot_id} {self.new} (new)"
        if self.new is None:
            return f"- {self.bot_id} {self.old} (removed: new calls are refused)"
        return f"~ {self.bot_id} {self.old} -> {self.new}"


@dataclass(frozen=True)
class ReloadReport:
    changes: tuple[VersionChange, ...] = ()
    problems: tuple[Problem, ...] = ()  # every problem now outstanding, not only new ones
    still_serving: tuple[str, ...] = ()  # bots whose last good version serves despite problems
    fixed: tuple[str, ...] = ()  # bots whose problems this reload cleared
    recompiled: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass
class LiveCatalog:
    bots_dir: Path
    registry: Registry
    prompts_dir: Path | None = None
    snapshot: CatalogSnapshot = field(init=False)
    # per bot file: what the last attempt to compile it said (empty: it compiled)
    _file_problems: dict[Path, tuple[Problem, ...]] = field(init=False, default_factory=dict)
    # per bot file: the id it serves, to remove it when the file goes
    _file_ids: dict[Path, str] = field(init=False, default_factory=dict)
    # kept across reloads so a template change re-checks bots without re-parsing them
    _parsed: dict[Path, tuple[bytes, Bot]] = field(init=False, default_factory=dict)
    _facts: FactsCache = field(init=False, default_factory=FactsCache)

    def __post_init__(self) -> None:
        self.bots_dir = self.bots_dir.resolve()
        self.prompts_dir = (self.prompts_dir or default_prompts_dir(self.bots_dir)).resolve()
        compiler = self._compiler()
        bots: dict[str, CompiledBot] = {}
        for path in bot_files([self.bots_dir]):
            self._recompile(path.resolve(), compiler, bots)
        self.snapshot = self._snapshot(bots, compiler.prompts)

    def current(self) -> CatalogSnapshot:
        return self.snapshot

    def is_relevant(self, path: Path) -> bool:
        """A path whose change can affect a bot: a bot file, or anything under prompts/."""
        path = path.resolve()
        if path.parent == self.bots_dir:
            return (
                path.suffix == ".toml"
                and not path.name.endswith(SCENARIO_SUFFIX)
                and not path.name.startswith("_")
                and not _ignored(path)
            )
        assert self.prompts_dir is not None
        return path.is_relative_to(self.prompts_dir) and not _ignored(path)

    def apply(self, changed: Iterable[Path]) -> ReloadReport:
        started = time.perf_counter()
        paths = {path.resolve() for path in changed if self.is_relevant(path)}
        bot_paths = {p for p in paths if p.parent == self.bots_dir}
        template_paths = paths - bot_paths
        affected = set(bot_paths)
        if template_paths:
            affected |= {
                bot.path.resolve() for bot in self.snapshot if bot.dependencies & template_paths
            }
            # a failing bot may be waiting for exactly this template to appear or be fixed
            affected |= {path for path, problems in self._file_problems.items() if problems}
        if not affected:
            return ReloadReport(problems=self.snapshot.problems)
        bots = dict(self.snapshot.bots)
        changes: list[VersionChange] = []
        compiler = self._compiler()
        broken = {path for path in affected if self._file_problems.get(path)}
        for path in sorted(affected):
            change = self._recompile(path, compiler, bots)
            if change is not None:
                changes.append(change)
        fixed = tuple(
            sorted(
                self._file_ids[path]
                for path in broken
                if not self._file_problems.get(path) and path in self._file_ids
            )
        )
        self.snapshot = self._snapshot(bots, compiler.prompts)
        serving = tuple(
            sorted(
                self._file_ids[path]
                for path, file_problems in self._file_problems.items()
                if file_problems and path in self._file_ids
            )
        )
        return ReloadReport(
            tuple(changes),
            self.snapshot.problems,
            serving,
            fixed=fixed,
            recompiled=len(affected),
            seconds=time.perf_counter() - started,
        )

    def _recompile(
        self, path: Path, compiler: BotCompiler, bots: dict[str, CompiledBot]
    ) -> VersionChange | None:
        old_id = self._file_ids.get(path)
        old = bots.get(old_id) if old_id else None
        if not path.exists():
            self._file_problems.pop(path, None)
            self._file_ids.pop(path, None)
            self._parsed.pop(path, None)
            if old_id is None or old is None:
                return None
            del bots[old_id]
            return VersionChange(old_id, old.version, None)
        result = compiler.compile_file(path)
        if isinstance(result, list):
            self._file_problems[path] = tuple(result)
            return None  # the last good version (if any) keeps serving
        clash = bots.get(result.id)
        if clash is not None and clash.path.resolve() != path:
            self._file_problems[path] = (id_clash(path, result.id, clash.path),)
            return None
        self._file_problems[path] = ()
        if old_id is not None and old_id != result.id:
            bots.pop(old_id, None)  # the file now declares another id
        self._file_ids[path] = result.id
        bots[result.id] = result
        if old is not None and old_id == result.id:
            return (
                None
                if old.version == result.version
                else VersionChange(result.id, old.version, result.version)
            )
        return VersionChange(result.id, None, result.version)

    def _compiler(self) -> BotCompiler:
        """A fresh environment per reload, so changed files are read again; bots that are
        not recompiled keep the environment they were built with."""
        prompts = self.prompts_dir if self.prompts_dir and self.prompts_dir.is_dir() else None
        environment = PromptEnvironment(
            prompts,
            prepare=lambda env: self.registry.hook.prepare_jinja_environment(env=env),
            facts=self._facts,
        )
        return BotCompiler(self.registry, environment, parsed=self._parsed)

    def _snapshot(
        self, bots: dict[str, CompiledBot], environment: PromptEnvironment
    ) -> CatalogSnapshot:
        problems = tuple(p for file_problems in self._file_problems.values() for p in file_problems)
        return CatalogSnapshot(
            MappingProxyType(bots), problems, self.bots_dir, self.prompts_dir, environment
        )


def _ignored(path: Path) -> bool:
    """Editor droppings: swap files, backups, hidden temp files written before a rename."""
    name = path.name
    return name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".swx", ".tmp"))
