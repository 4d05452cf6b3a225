"""The livekit-agents side of the ``pocketsphinx`` provider: one ``pocketsphinx.Decoder``
per STT instance (loading it takes about half a second), decoding whole utterances."""

from __future__ import annotations

import numpy as np
import pocketsphinx

from plugins.stt.offline import SAMPLE_RATE, OfflineSTT, Transcript
from plugins.stt.pocketsphinx import PocketSphinxOptions, model_files

GRAMMAR_SEARCH = "dialplan_grammar"


class PocketSphinxSTT(OfflineSTT):
    def __init__(self, options: PocketSphinxOptions) -> None:
        super().__init__(language=options.language)
        self.options = options
        self._decoder: pocketsphinx.Decoder | None = None

    @property
    def model(self) -> str:
        return f"pocketsphinx-{self.options.language}" + (
            "-grammar" if self.options.grammar else ""
        )

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def _load(self) -> None:
        decoder = pocketsphinx.Decoder(
            samprate=SAMPLE_RATE, loglevel="FATAL", **model_files(self.options.language)
        )
        words = list(self.options.words.items())
        for index, (word, phones) in enumerate(words):
            # the dictionary is rebuilt once, after the last word
            decoder.add_word(word, phones, index == len(words) - 1)
        jsgf = self.options.jsgf()
        if jsgf is not None:
            decoder.add_jsgf_string(GRAMMAR_SEARCH, jsgf)
            decoder.activate_search(GRAMMAR_SEARCH)
        self._decoder = decoder

    def _transcribe(self, pcm: np.ndarray) -> Transcript:
        decoder = self._decoder
        assert decoder is not None
        if pcm.size == 0:
            return Transcript("")
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        if hypothesis is None or not hypothesis.hypstr:
            return Transcript("")
        confidence = float(decoder.logmath.exp(hypothesis.prob))
        return Transcript(hypothesis.hypstr, min(max(confidence, 0.0), 1.0))
