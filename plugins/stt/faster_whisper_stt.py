"""The livekit-agents side of the ``faster_whisper`` provider: model resolution (never a
download), a process-wide cache of loaded models, and the STT itself."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.utils import available_models, download_model

from plugins.stt.faster_whisper import FasterWhisperOptions
from plugins.stt.offline import OfflineSTT, Transcript
from runtime import CallSetupError

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


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
    CTranslate2 queues concurrent transcriptions itself."""
    key = (path, options.device, options.compute_type, options.cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = WhisperModel(
                path,
                device=options.device,
                compute_type=options.compute_type,
                cpu_threads=options.cpu_threads,
                local_files_only=True,
            )
        return model


class WhisperSTT(OfflineSTT):
    def __init__(self, options: FasterWhisperOptions, model_path: str) -> None:
        super().__init__(language=options.language or "und")
        self.options = options
        self.model_path = model_path
        self._model: WhisperModel | None = None

    @property
    def model(self) -> str:
        return Path(self.options.model).name or self.options.model

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def _load(self) -> None:
        self._model = shared_model(self.model_path, self.options)

    def _transcribe(self, pcm: np.ndarray) -> Transcript:
        model = self._model
        assert model is not None
        if pcm.size == 0:
            return Transcript("")
        segments, info = model.transcribe(
            pcm.astype(np.float32) / 32768.0,
            language=self.options.language,
            beam_size=self.options.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the session's VAD already cut the utterance
        )
        pieces = [(segment.text.strip(), segment.avg_logprob) for segment in segments]
        text = " ".join(piece for piece, _ in pieces if piece)
        if not text:
            return Transcript("")
        confidence = math.exp(sum(logprob for _, logprob in pieces) / len(pieces))
        return Transcript(text, min(max(confidence, 0.0), 1.0), info.language)
