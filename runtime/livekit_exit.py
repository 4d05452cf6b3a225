"""livekit's native library, shut down in order when the process exits.

livekit.rtc disposes its native (FFI) runtime in an `atexit` handler. Objects that hold
native handles (an audio resampler, a frame, a stream) and outlive that handler, because a
module global, a cache or an exception's traceback keeps them until the interpreter tears
down its modules, then drop their handle into the disposed runtime, and livekit asserts:
``Exception ignored in: FfiHandle.__del__ ... AssertionError`` at the end of `serve`,
`simulate` or a benchmark, after everything went well. The runtime is gone, so there is
nothing left to release: this handler, which runs right after livekit's (atexit handlers
run last-registered first, and this one is registered before livekit creates its runtime),
tells livekit its runtime is gone, and late handles are then let go quietly, as livekit
already does in a forked child.
"""

from __future__ import annotations

import atexit
import sys

_registered = False


def forget_ffi_runtime() -> None:
    module = sys.modules.get("livekit.rtc._ffi_client")
    if module is not None:
        module.FfiClient._instance = None


def release_late_handles_quietly() -> None:
    """Register the handler once, before livekit's runtime exists (idempotent)."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(forget_ffi_runtime)
