"""G.711 μ-law codec: the tables against the standard's formula and, bit for bit, audioop."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import pytest

from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int64)  # every 16-bit value, ascending
ALL_PCM = ALL_SAMPLES.astype("<i2").tobytes()


def load_audioop() -> ModuleType | None:
    """CPython's audioop (removed in 3.13); its import warns, and pytest makes that an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


audioop = load_audioop()
needs_audioop = pytest.mark.skipif(
    audioop is None, reason="audioop was removed in Python 3.13; the reference is unavailable"
)


def decode_all() -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ALL_CODES), dtype="<i2").astype(np.int64)


def encode_all() -> np.ndarray:
    return np.frombuffer(pcm16_to_ulaw(ALL_PCM), dtype=np.uint8).astype(np.int64)


def g711_decode(code: int) -> int:
    """ITU-T G.711 μ-law expansion, written from the standard, one code at a time."""
    inverted = ~code & 0xFF  # transmitted with every bit complemented
    sign = inverted & 0x80
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


def test_decode_matches_the_g711_formula_for_every_code() -> None:
    assert decode_all().tolist() == [g711_decode(code) for code in range(256)]


@pytest.mark.parametrize(
    ("code", "linear"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xF0, 120)],
)
def test_decode_well_known_values(code: int, linear: int) -> None:
    assert np.frombuffer(ulaw_to_pcm16(bytes([code])), dtype="<i2").tolist() == [linear]


def test_decode_output_is_little_endian_int16() -> None:
    # 32124 = 0x7D7C and -32124 = 0x8284, low byte first
    assert ulaw_to_pcm16(bytes([0x80, 0x00])) == b"\x7c\x7d\x84\x82"
    assert ulaw_to_pcm16(b"") == b""
    assert len(ulaw_to_pcm16(bytes(160))) == 320


@needs_audioop
def test_encode_every_16_bit_value_matches_audioop() -> None:
    assert audioop is not None
    reference = np.frombuffer(audioop.lin2ulaw(ALL_PCM, 2), dtype=np.uint8)
    differ = np.nonzero(encode_all() != reference)[0]
    assert differ.size == 0, f"{differ.size} samples differ, first: {ALL_SAMPLES[differ[:5]]}"


@needs_audioop
def test_decode_every_code_matches_audioop() -> None:
    assert audioop is not None
    assert ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_encode_known_values() -> None:
    # 0 -> positive zero; -1 is -1 after the 14-bit shift, so magnitude 1 -> 0x7E, not 0x7F;
    # the extremes saturate to the largest magnitude and the all-zero code is not suppressed.
    pcm = np.array([0, 1, -1, 32767, -32768, 8, -8], dtype="<i2").tobytes()
    assert list(pcm16_to_ulaw(pcm)) == [0xFF, 0xFF, 0x7E, 0x80, 0x00, 0xFE, 0x7E]
    assert pcm16_to_ulaw(b"") == b""


def test_negative_zero_is_never_produced() -> None:
    produced = set(encode_all().tolist())
    assert set(range(256)) - produced == {0x7F}


def test_round_trip_pcm_stays_within_the_quantisation_step() -> None:
    codes = encode_all()
    decoded = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(ALL_PCM)), dtype="<i2").astype(np.int64)
    # step between neighbouring codes of the segment the sample landed in, 16-bit units
    step = 8 << ((~codes >> 4) & 0x07)
    error = np.abs(decoded - ALL_SAMPLES)
    assert np.all(error < step)
    # inside the coder's range the error is at most half a step, plus the 3 LSBs the
    # 14-bit algorithm drops (negative samples round toward -inf in the >> 2)
    in_range = np.abs(ALL_SAMPLES) <= 32124
    assert np.all(error[in_range] <= step[in_range] // 2 + 3)
    # beyond it the output saturates at the largest magnitude
    assert set(decoded[~in_range].tolist()) == {-32124, 32124}
    # and companding keeps order: louder in, never quieter out
    assert np.all(np.diff(decoded) >= 0)


def test_round_trip_codes_except_the_negative_zero_alias() -> None:
    again = np.frombuffer(pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES)), dtype=np.uint8)
    changed = {code: int(again[code]) for code in range(256) if again[code] != code}
    # 0x7F (negative zero) decodes to 0, which encodes as positive zero 0xFF
    assert changed == {0x7F: 0xFF}


@pytest.mark.parametrize("size", [1, 3, 321])
def test_odd_length_pcm_is_rejected(size: int) -> None:
    with pytest.raises(ValueError, match=rf"even number of bytes.*got {size} bytes"):
        pcm16_to_ulaw(bytes(size))
