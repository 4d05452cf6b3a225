"""The livekit-agents side of the ``pocketsphinx`` provider, decoding whole utterances.

A ``pocketsphinx.Decoder`` takes about half a second and 90 MB to load, so decoders are
not per call: a process-wide pool keeps them per configuration (language, grammar, added
words) and lends one to each recognition. Recognitions run in worker threads, so the pool
never holds more decoders per configuration than decodes that ever ran at once (a
handful), however many calls are up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pocketsphinx

from plugins.stt.offline import SAMPLE_RATE, Expectation, OfflineSTT, Transcript
from plugins.stt.pocketsphinx import PocketSphinxOptions, model_files

GRAMMAR_SEARCH = "dialplan_grammar"


class DecoderPool:
    """Idle decoders per configuration; a recognition borrows one and gives it back."""

    def __init__(self) -> None:
        self._idle: dict[tuple[object, ...], list[pocketsphinx.Decoder]] = {}
        self._lock = threading.Lock()
        self.created = 0

    @contextmanager
    def borrow(self, options: PocketSphinxOptions) -> Iterator[pocketsphinx.Decoder]:
        key = configuration(options)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            decoder = idle.pop() if idle else None
        if decoder is None:
            decoder = new_decoder(options)
            with self._lock:
                self.created += 1
        try:
            yield decoder
        finally:
            with self._lock:
                self._idle[key].append(decoder)

    def warm(self, options: PocketSphinxOptions) -> None:
        """Make sure one decoder of this configuration is loaded and idle."""
        with self._lock:
            if self._idle.get(configuration(options)):
                return
        with self.borrow(options):
            pass


POOL = DecoderPool()


def configuration(options: PocketSphinxOptions) -> tuple[object, ...]:
    """What makes two decoders interchangeable."""
    return (options.language, tuple(options.grammar or ()), tuple(sorted(options.words.items())))


def new_decoder(options: PocketSphinxOptions) -> pocketsphinx.Decoder:
    decoder = pocketsphinx.Decoder(
        samprate=SAMPLE_RATE, loglevel="FATAL", **model_files(options.language)
    )
    words = list(options.words.items())
    for index, (word, phones) in enumerate(words):
        # the dictionary is rebuilt once, after the last word
        decoder.add_word(word, phones, index == len(words) - 1)
    jsgf = options.jsgf()
    if jsgf is not None:
        decoder.add_jsgf_string(GRAMMAR_SEARCH, jsgf)
        decoder.activate_search(GRAMMAR_SEARCH)
    return decoder


class PocketSphinxSTT(OfflineSTT):
    def __init__(self, options: PocketSphinxOptions, pool: DecoderPool = POOL) -> None:
        super().__init__(language=options.language)
        self.options = options
        self.pool = pool

    @property
    def model(self) -> str:
        return f"pocketsphinx-{self.options.language}" + (
            "-grammar" if self.options.grammar else ""
        )

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def _load(self) -> None:
        self.pool.warm(self.options)

    def _transcribe(self, pcm: np.ndarray, expected: Expectation | None) -> Transcript:
        if pcm.size == 0:
            return Transcript("")
        with self.pool.borrow(self.options) as decoder:
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            if hypothesis is None or not hypothesis.hypstr:
                return Transcript("")
            confidence = float(decoder.logmath.exp(hypothesis.prob))
        return Transcript(hypothesis.hypstr, min(max(confidence, 0.0), 1.0))
