"""The livekit ``vad.VAD`` behind the ``energy`` provider."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import vad

from plugins.vad.energy import EnergyVADOptions

WINDOW_SECONDS = 0.02
QUIET_REPORT_EVERY = 10  # frames of silence (outside speech) per INFERENCE_DONE event


class EnergyVAD(vad.VAD):
    def __init__(self, options: EnergyVADOptions) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=WINDOW_SECONDS))
        self.options = options

    @property
    def model(self) -> str:
        return "energy"

    @property
    def provider(self) -> str:
        return "dialplan"

    def stream(self) -> vad.VADStream:
        return EnergyVADStream(self, self.options)


class EnergyVADStream(vad.VADStream):
    def __init__(self, detector: EnergyVAD, options: EnergyVADOptions) -> None:
        super().__init__(detector)
        self._options = options
        # compare sums of squares: no sqrt, no mean, one dot product per frame
        self._threshold_power = (10 ** (options.threshold_db / 20) * 32768) ** 2

    async def _main_task(self) -> None:
        opts = self._options
        speaking = False
        speech = silence = 0.0  # seconds above / below the threshold in a row
        samples = 0
        prefix: deque[rtc.AudioFrame] = deque()
        prefix_seconds = 0.0
        utterance: list[rtc.AudioFrame] = []
        quiet_frames = 0
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):  # a flush: a fresh segment starts
                speaking, speech, silence = False, 0.0, 0.0
                utterance, prefix, prefix_seconds = [], deque(), 0.0
                continue
            started = time.perf_counter()
            data = np.frombuffer(item.data, dtype=np.int16).astype(np.float32)
            loud = bool(data.size) and float(data @ data) >= self._threshold_power * data.size
            duration = item.duration
            samples += item.samples_per_channel
            if loud:
                speech, silence = speech + duration, 0.0
            else:
                silence, speech = silence + duration, 0.0 if not speaking else speech
            if speaking:
                utterance.append(item)
            else:
                prefix.append(item)
                prefix_seconds += duration
                keep = opts.prefix_padding_duration
                while prefix and prefix_seconds - prefix[0].duration >= keep:
                    prefix_seconds -= prefix.popleft().duration
            timestamp = samples / item.sample_rate
            event_args: dict[str, Any] = {
                "samples_index": samples,
                "timestamp": timestamp,
                "speech_duration": speech,
                "silence_duration": silence,
            }
            quiet_frames = 0 if (loud or speaking) else quiet_frames + 1
            # a quiet line needs no report every frame: each event costs the pipeline
            # more than computing it, and nothing acts on silence before speech starts
            if quiet_frames % QUIET_REPORT_EVERY == 0:
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=vad.VADEventType.INFERENCE_DONE,
                        probability=1.0 if loud else 0.0,
                        inference_duration=time.perf_counter() - started,
                        frames=[item],
                        speaking=speaking,
                        raw_accumulated_speech=speech,
                        raw_accumulated_silence=silence,
                        **event_args,
                    )
                )
            if not speaking and speech >= opts.min_speech_duration:
                speaking = True
                utterance = list(prefix)
                prefix, prefix_seconds = deque(), 0.0
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=vad.VADEventType.START_OF_SPEECH,
                        frames=[rtc.combine_audio_frames(utterance)],
                        speaking=True,
                        **event_args,
                    )
                )
            elif speaking and silence >= opts.min_silence_duration:
                speaking, speech = False, 0.0
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=vad.VADEventType.END_OF_SPEECH,
                        frames=[rtc.combine_audio_frames(utterance)],
                        speaking=False,
                        **event_args,
                    )
                )
                utterance = []
