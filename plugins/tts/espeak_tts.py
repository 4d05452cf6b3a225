"""The livekit-agents side of the ``espeak`` provider: ``libespeak-ng`` driven through
ctypes, and a non-streaming ``tts.TTS`` over it.

libespeak-ng is one global synthesizer per process (voice, parameters and the audio
callback are process state), so there is one `EspeakEngine` and a lock around every use.
It runs in synchronous mode: ``espeak_Synth`` returns when the text is spoken, having
called our callback with each block of 16-bit samples on the calling thread.
"""

from __future__ import annotations

import ctypes
import threading

import espeakng_loader
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts

from plugins.tts.espeak import EspeakOptions
from plugins.tts.offline import Emit, ThreadedChunkedStream

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAM_RATE = 1
PARAM_PITCH = 3
EE_OK = 0
EE_NOT_FOUND = 2
BUFFER_MS = 100  # audio handed to the callback in blocks of this length

# int callback(short *wav, int numsamples, espeak_EVENT *events); return 1 to abort
SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    pass


class EspeakEngine:
    """The process's libespeak-ng. Use `engine()`; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # its size in bytes, terminator included
            ctypes.c_uint,  # position
            ctypes.c_int,  # position type
            ctypes.c_uint,  # end position
            ctypes.c_uint,  # flags
            ctypes.POINTER(ctypes.c_uint),  # unique identifier (out)
            ctypes.c_void_p,  # user data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        self._lib = lib
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data, INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data.decode()}")
        self.sample_rate: int = rate
        # kept referenced for the life of the process: the library calls it
        self._callback = SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._emit: Emit | None = None
        self._failed = False
        self._voice: str | None = None

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], samples: int, events: int) -> int:
        emit = self._emit
        if emit is None:
            return 1
        if samples <= 0 or not wav:
            return 0
        try:
            keep_going = emit(ctypes.string_at(wav, samples * 2))
        except Exception:  # an exception cannot cross into C: stop this synthesis
            self._failed = True
            return 1
        return 0 if keep_going else 1

    def set_voice(self, voice: str) -> None:
        with self._lock:
            self._set_voice(voice)

    def _set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        result = self._lib.espeak_SetVoiceByName(voice.encode())
        if result != EE_OK:
            self._voice = None
            if result == EE_NOT_FOUND:
                raise EspeakError(f"eSpeak NG has no voice {voice!r}")
            raise EspeakError(f"espeak_SetVoiceByName({voice!r}) failed ({result})")
        self._voice = voice

    def synthesize(self, text: str, options: EspeakOptions, emit: Emit) -> None:
        """Speak ``text``, calling ``emit`` with each block of samples (on this thread)."""
        encoded = text.encode("utf-8")
        with self._lock:
            self._set_voice(options.voice)
            self._lib.espeak_SetParameter(PARAM_RATE, options.rate, 0)
            self._lib.espeak_SetParameter(PARAM_PITCH, options.pitch, 0)
            self._emit, self._failed = emit, False
            try:
                result = self._lib.espeak_Synth(
                    encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None
                )
            finally:
                self._emit = None
            if result != EE_OK:
                raise EspeakError(f"espeak_Synth failed ({result})")
            if self._failed:
                raise EspeakError("handing over the audio failed")


_engine_lock = threading.Lock()
_engine: EspeakEngine | None = None


def engine() -> EspeakEngine:
    """The process's engine, initialized on first use (a few milliseconds)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = EspeakEngine()
        return _engine


class EspeakTTS(tts.TTS):
    def __init__(self, options: EspeakOptions) -> None:
        speaker = engine()
        speaker.set_voice(options.voice)  # an unknown voice fails here, at call setup
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=speaker.sample_rate,
            num_channels=1,
        )
        self.options = options
        self._engine = speaker

    @property
    def model(self) -> str:
        return f"espeak-ng/{self.options.voice}"

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return ThreadedChunkedStream(
            tts=self, input_text=text, conn_options=conn_options, synthesize=self._synthesize
        )

    def _synthesize(self, text: str, emit: Emit) -> None:
        self._engine.synthesize(text, self.options, emit)
