"""Is this process keeping up with real time? Overload made visible, and acted on.

Work every call of a process shares — the batched VAD's inference thread, say — reports how
far behind real time it is through a lag probe. When the worst lag passes `LAG_LIMIT`, the
call server and the LiveKit worker refuse new calls (as at capacity) until it catches up:
past that point a saturated core keeps audio smooth while replies arrive seconds late or
never, an overload that looks healthy from outside. Capacity then follows measured lag, not
only a count of calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# a turn's reply tolerates this much extra delay; beyond it, replies go missing quickly
LAG_LIMIT = 0.25

_lock = threading.Lock()
_probes: dict[str, Callable[[], float]] = {}


def register_lag_probe(name: str, probe: Callable[[], float]) -> None:
    """``probe()`` says how many seconds behind real time ``name`` is now (0: keeping up).
    Safe from any thread; a name registered again replaces the older probe."""
    with _lock:
        _probes[name] = probe


def current_lag() -> tuple[str, float]:
    """The stage furthest behind, and by how many seconds (("", 0.0) with no probes)."""
    with _lock:
        probes = list(_probes.items())
    worst = ("", 0.0)
    for name, probe in probes:
        lag = probe()
        if lag > worst[1]:
            worst = (name, lag)
    return worst


def overloaded() -> str | None:
    """Why this process should take no new call now, or None."""
    name, lag = current_lag()
    if lag <= LAG_LIMIT:
        return None
    return f"overloaded: {name} is {lag * 1000:.0f} ms behind real time"


def remove_lag_probe(name: str) -> None:
    with _lock:
        _probes.pop(name, None)
