"""Build the pluggy plugin manager: entry points of group ``dialplan``, nothing at import time.

Built-in plugins are listed as entry points in dialplan's own pyproject, so they load
exactly the way third-party plugins do. A plugin that raises while importing is reported
with its name and skipped; the others still load.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from runtime import hookspecs
from runtime.errors import PluginLoadError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dialplan"
DISABLED_ENV = "DIALPLAN_DISABLED_PLUGINS"


@dataclass
class LoadedPlugins:
    """The plugin manager plus what we learned while loading it."""

    manager: pluggy.PluginManager
    distributions: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution
    failures: list[PluginLoadError] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


def disabled_plugins(environ: dict[str, str] | None = None) -> list[str]:
    raw = (environ if environ is not None else os.environ).get(DISABLED_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def create_plugin_manager(
    *,
    entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    disabled: Iterable[str] | None = None,
) -> LoadedPlugins:
    """A fresh plugin manager. ``extra_plugins`` are (name, module-or-object) pairs
    registered after the entry points; tests use them for temporary plugins."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(manager=manager)
    blocked = list(disabled) if disabled is not None else disabled_plugins()
    for name in blocked:
        manager.set_blocked(name)
    loaded.blocked = blocked

    if entry_points:
        for entry_point in _entry_points():
            if manager.is_blocked(entry_point.name):
                continue
            if manager.get_plugin(entry_point.name) is not None:
                continue  # the same entry point seen through two paths on sys.path
            try:
                plugin = entry_point.load()
            except Exception as exc:
                failure = PluginLoadError(entry_point.name, exc)
                logger.debug("%s", failure)
                loaded.failures.append(failure)
                continue
            manager.register(plugin, name=entry_point.name)
            dist = entry_point.dist
            loaded.distributions[entry_point.name] = dist.name if dist else "?"

    for name, plugin in extra_plugins:
        if manager.is_blocked(name):
            continue
        manager.register(plugin, name=name)
        module = plugin if isinstance(plugin, ModuleType) else type(plugin)
        loaded.distributions[name] = getattr(module, "__name__", name)

    manager.check_pending()
    return loaded


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
