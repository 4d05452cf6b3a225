"""What the offline voices share: a ``ChunkedStream`` over a blocking synthesizer that runs
in a worker thread and hands over audio chunk by chunk, so the first sentence plays while
the next is still being synthesized.

Imported by the providers' factories only (it imports livekit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from livekit.agents import APIConnectOptions, APIError, tts, utils

# synthesize(text, emit): calls emit(chunk) with 16-bit mono PCM as it is made, and
# stops early once emit returns False (the listener is gone: an interruption)
Emit = Callable[[bytes], bool]
Synthesizer = Callable[[str, Emit], None]

_DONE = object()


class ThreadedChunkedStream(tts.ChunkedStream):
    def __init__(
        self,
        *,
        tts: tts.TTS,
        input_text: str,
        conn_options: APIConnectOptions,
        synthesize: Synthesizer,
    ) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._synthesize = synthesize

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=self._tts.sample_rate,
            num_channels=self._tts.num_channels,
            mime_type="audio/pcm",
        )
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def hand_over(item: object) -> bool:
            if stop.is_set():
                return False
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()
            return not stop.is_set()

        def work() -> None:
            try:
                self._synthesize(self.input_text, hand_over)
            except Exception as exc:
                hand_over(exc)
            else:
                hand_over(_DONE)

        # not awaited: an interrupted synthesis stops at its next chunk, in the background
        loop.run_in_executor(None, work)
        try:
            while (item := await chunks.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise APIError(
                        f"{self._tts.label}: synthesis failed: {type(item).__name__}: {item}",
                        retryable=False,
                    ) from item
                assert isinstance(item, bytes)
                output_emitter.push(item)
        finally:
            stop.set()
