"""One line per flow event, for people watching a call (`dialplan chat`, `simulate`)."""

from __future__ import annotations

from typing import Any

FLOW_EVENTS = frozenset({"step_entered", "captured", "flow_error", "transition_refused"})


def flow_line(event_type: str, data: dict[str, Any]) -> str | None:
    """``[step] triage -> booking (chosen: ...)``, ``[captured] service='cleaning'`` ...;
    None for events that are not the flow's."""
    if event_type == "step_entered":
        moved = f"{data['from']} -> " if data.get("from") else ""
        return f"  [step] {moved}{data['step']} ({data['reason']})"
    if event_type == "captured":
        values = ", ".join(f"{name}={value!r}" for name, value in data["values"].items())
        return f"  [captured] {values}"
    if event_type in ("flow_error", "transition_refused"):
        return f"  [{event_type}] {data.get('error')}"
    return None
