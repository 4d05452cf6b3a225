"""Hand a call's audio file to the ``store_recording`` plugins (S3, ...).

Whatever the transport, the file is first on local disk; a plugin may move it elsewhere
and return the key to keep in the record. A store that fails keeps the local path as the
key and adds a ``recording_store_failed`` event: the record is never lost for it.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from runtime.record import CallEvent, CallRecord
from runtime.registry import Registry

log = logging.getLogger("dialplan.recordings")


async def offer_recording(registry: Registry, record: CallRecord, path: Path) -> str:
    try:
        stored = registry.hook.store_recording(record=record, path=str(path))
        if inspect.isawaitable(stored):
            stored = await stored
    except Exception as exc:
        log.warning("recording %s stays at %s: %s", record.session_id, path, exc)
        record.events.append(
            CallEvent(type="recording_store_failed", at=record.duration, data={"error": str(exc)})
        )
        return str(path)
    return str(stored) if stored else str(path)
