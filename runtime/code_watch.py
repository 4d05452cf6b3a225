"""Restart the dev server when Python code changes (watchfiles' process runner).

Bot and template changes never come here: they reload in-process. Python changes cannot be
reloaded safely inside a process (old objects keep old code), so the server process is
stopped and started again, and says so.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from runtime.registry import Registry


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
    """Serve in a child process; restart it when Python code under ``directories`` changes,
    and stop when it exits on its own (`/quit`, Ctrl-D). watchfiles' `run_process` would
    keep waiting for changes after the child quits, so this loop is ours."""
    from watchfiles import PythonFilter, watch

    command = [sys.executable, "-m", "runtime.cli", *child_args]
    child = subprocess.Popen(command)
    try:
        for changes in watch(
            *directories,
            watch_filter=PythonFilter(),
            debounce=400,
            rust_timeout=250,
            yield_on_timeout=True,  # wake up now and then to notice the child quitting
        ):
            if child.poll() is not None:
                return child.returncode
            if not changes:
                continue
            names = sorted({Path(path).name for _change, path in changes})
            print(f"[dev] Python code changed ({', '.join(names)}): restarting", file=sys.stderr)
            _stop(child)
            child = subprocess.Popen(command)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(child)
    return 0


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGINT)  # lets a call in progress close its record
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
