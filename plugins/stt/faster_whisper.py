"""The ``faster_whisper`` STT provider: OpenAI Whisper on the CPU through CTranslate2.

Needs the optional extra: ``pip install 'dialplan[whisper]'``. Models are never downloaded
during a call: ``model`` is a directory holding a CTranslate2 Whisper model, or the name of
one already in the Hugging Face cache. Download one once, for example:

    python -c "from faster_whisper import download_model; \\
               download_model('base.en', output_dir='models/whisper-base.en')"

    [stt]
    provider = "faster_whisper"
    model = "models/whisper-base.en"   # a directory (relative to the working directory) ...
    # model = "base.en"                # ... or a model name already in the HF cache
    device = "cpu"
    compute_type = "int8"
    language = "en"                    # leave out to detect the language per utterance
    beam_size = 1                      # 1 = greedy, fastest

A loaded model is shared by every call in the process. Like ``pocketsphinx``, it
recognizes whole utterances that the session's VAD cuts (the ``silero`` VAD when the bot
has no ``[vad]``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime import CallContext, MissingExtra, RegisterProvider, hookimpl

ComputeType = Literal[
    "default",
    "auto",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
]


class FasterWhisperOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(
        "base.en",
        description="a directory holding a CTranslate2 Whisper model (model.bin, config.json, "
        "tokenizer.json), or a model name (tiny.en, base.en, small, ...) already downloaded "
        "to the Hugging Face cache or `download_root`; never downloaded during a call",
    )
    download_root: str | None = Field(
        None,
        description="the directory models were downloaded to (default: the Hugging Face cache)",
    )
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where the model runs")
    compute_type: ComputeType = Field(
        "int8", description="weight quantization; int8 is the fastest on a CPU"
    )
    language: str | None = Field(
        "en", description="language code of the caller's speech; none = detect per utterance"
    )
    beam_size: int = Field(1, ge=1, le=10, description="beam search width; 1 = greedy, fastest")
    cpu_threads: int = Field(0, ge=0, le=64, description="CPU threads; 0 = the library default")

    @field_validator("model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a model directory or a model name such as 'base.en'")
        return value.strip()


def create_stt(options: FasterWhisperOptions, call: CallContext) -> Any:
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise MissingExtra("faster_whisper", "faster-whisper", "whisper") from None
    from plugins.stt.faster_whisper_stt import WhisperSTT, resolve_model
    from plugins.stt.offline import for_session

    return for_session(WhisperSTT(options, resolve_model(options)), call)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="stt",
        name="faster_whisper",
        factory=create_stt,
        options=FasterWhisperOptions,
        description="offline Whisper speech recognition, CTranslate2 (extra: dialplan[whisper])",
    )
