"""Loaded Silero VADs, shared by every call in the process.

``VAD.load`` reads the ONNX model and builds an inference session; a ``VAD`` keeps only
that session and its options, while every ``vad.stream()`` (one per session) has its own
model state. So one ``VAD`` per distinct options serves all calls.
"""

from __future__ import annotations

import threading

from livekit.agents import vad
from livekit.plugins import silero

from plugins.vad.silero import SileroOptions

_lock = threading.Lock()
_loaded: dict[SileroOptions, vad.VAD] = {}


def shared_vad(options: SileroOptions | None = None) -> vad.VAD:
    """The process's Silero VAD for these options (the defaults when None)."""
    options = options or SileroOptions()
    with _lock:
        found = _loaded.get(options)
        if found is None and options.batched:
            from plugins.vad.silero_batch import BatchedSileroVAD

            found = _loaded[options] = BatchedSileroVAD(
                options, telephone_at_8k=options.telephone_at_8k
            )
        if found is None:
            found = _loaded[options] = silero.VAD.load(
                min_speech_duration=options.min_speech_duration,
                min_silence_duration=options.min_silence_duration,
                activation_threshold=options.activation_threshold,
                prefix_padding_duration=options.prefix_padding_duration,
            )
        return found
