"""Restart the dev server when Python code changes (watchfiles' process runner).

Bot and template changes never come here: they reload in-process. Python changes cannot be
reloaded safely inside a process (old objects keep old code), so the server process is
stopped and started again, and says so.
"""

from __future__ import annotations

import shlex
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.registry import Registry

if TYPE_CHECKING:
    from watchfiles import Change


def code_dirs(registry: Registry, extra: Iterable[Path] = ()) -> list[Path]:
    """Source directories of dialplan and of every loaded plugin that is not installed
    into site-packages (this repository's plugins, editable installs)."""
    site = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    found: set[Path] = {Path(__file__).resolve().parent}
    for _name, plugin in registry.plugins.manager.list_name_plugin():
        file = getattr(plugin, "__file__", None) or getattr(
            sys.modules.get(type(plugin).__module__), "__file__", None
        )
        if not file:
            continue
        directory = Path(file).resolve().parent
        if not any(directory.is_relative_to(root) for root in site):
            found.add(directory)
    found |= {path.resolve() for path in extra}
    # watch the outermost directories only (a parent covers its children)
    return sorted(p for p in found if not any(p != q and p.is_relative_to(q) for q in found))


def run_with_restarts(child_args: list[str], directories: list[Path]) -> int:
    from watchfiles import PythonFilter, run_process

    def restarting(changes: set[tuple[Change, str]]) -> None:
        names = sorted({Path(path).name for _change, path in changes})
        print(f"[dev] Python code changed ({', '.join(names)}): restarting", file=sys.stderr)

    command = shlex.join([sys.executable, "-m", "runtime.cli", *child_args])
    run_process(
        *directories,
        target=command,
        target_type="command",
        callback=restarting,
        watch_filter=PythonFilter(),
        debounce=400,
        grace_period=0.5,
    )
    return 0
