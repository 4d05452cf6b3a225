"""G.711 μ-law codec: μ-law bytes <-> 16-bit little-endian signed PCM, bit-exact with audioop.

Telephony media (Twilio Media Streams, SIP/RTP payload type 0) carries 8 kHz μ-law: one byte
per sample, 160 bytes per 20 ms frame. Both directions are a single numpy table lookup, the
tables built once at import, so a frame costs a few microseconds.

The reference is ITU-T G.711 μ-law as implemented by Sun Microsystems' public-domain
``g711.c``, in the form CPython's ``audioop.lin2ulaw`` / ``audioop.ulaw2lin`` carry it
(``st_14linear2ulaw`` / ``st_ulaw2linear16`` in ``Modules/audioop.c``). The tests compare
every one of the 65536 16-bit inputs and all 256 codes against ``audioop`` where it still
exists (Python < 3.13) and the decode table against the formula in the standard.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["BIAS", "CLIP", "pcm16_to_ulaw", "ulaw_to_pcm16"]

BIAS: Final = 0x84
"""The bias added to the magnitude before companding (132 in the 16-bit domain)."""
CLIP: Final = 32635
"""g711.c's clip level; never reached by the 14-bit algorithm (see ``_encode_table``)."""

# Upper end of each of the 8 segments (chords) for the *14-bit* biased magnitude, as
# ``seg_uend`` in g711.c / audioop.c. The segment of a value is the first entry >= it.
_SEG_UEND: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)


def _decode_table() -> npt.NDArray[np.int16]:
    """All 256 codes decoded, as ``st_ulaw2linear16`` does it.

    The code is transmitted complemented, so the bits are inverted first; then
    ``sign | exponent (3 bits) | mantissa (4 bits)``, and the magnitude is
    ``(((mantissa << 3) + BIAS) << exponent) - BIAS``: the midpoint of the quantisation
    interval, in the 16-bit domain. Negative zero (0x7F) and positive zero (0xFF) both
    decode to 0; the extremes are ±32124 (0x00 / 0x80).
    """
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS
    linear = np.where(codes & 0x80, -magnitude, magnitude)
    # '<i2': little-endian on every host, so ``tobytes()`` is the wire format directly.
    return linear.astype("<i2")


def _encode_table() -> npt.NDArray[np.uint8]:
    """The μ-law code of every 16-bit sample, indexed by the sample's bits read as uint16.

    This replays ``audioop.lin2ulaw`` for width 2, which calls g711.c's
    ``st_14linear2ulaw(sample >> 2)``: the algorithm works on 14-bit values, so

    * the sample is first shifted right by 2 *arithmetically* (C ``>>`` on a negative int,
      numpy's ``>>`` on int32 alike), which rounds negative samples toward -inf. That is why
      this differs from Sun's original 16-bit ``linear2ulaw`` (``BIAS - pcm_val`` on the
      unshifted value) on 381 negative inputs right at decision boundaries, by one code;
      we follow audioop, the de-facto reference in Python land;
    * the sign is taken, and the magnitude of the 14-bit value (at most 8192) is clipped to
      CLIP = 32635 — dead code kept from g711.c, since 8192 < 32635; the real saturation
      happens in the segment search below;
    * BIAS >> 2 = 33 (the bias in the 14-bit domain) is added and the segment is the first
      ``_SEG_UEND`` entry >= the biased magnitude (``search()`` in g711.c; numpy's
      ``searchsorted(side="left")`` is the same rule). A magnitude past 0x1FFF lands in
      segment 8: "out of range", coded as the largest magnitude (0x7F before the mask);
    * otherwise the code is ``segment << 4 | (biased >> (segment + 1)) & 0xF`` and the whole
      byte is complemented (XOR 0xFF for positive, 0x7F for negative, so the sign bit is
      1 for positive values).

    As in audioop, the all-zero code 0x00 is *not* suppressed (some T1 equipment replaces
    it with 0x02 for ones density; RTP and Twilio want the plain code), and code 0x7F
    (negative zero) is never produced: 0 encodes to 0xFF and -1 (-1 >> 2 == -1) to 0x7E.
    """
    # Index i is the uint16 bit pattern of a sample, so view it back as int16 to get the
    # value the table entry is for; widen to int32 so negation of -8192 cannot overflow.
    samples = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)
    pcm14 = samples.astype(np.int32) >> 2
    negative = pcm14 < 0
    magnitude = np.minimum(np.where(negative, -pcm14, pcm14), CLIP) + (BIAS >> 2)
    mask = np.where(negative, 0x7F, 0xFF)
    segment = np.searchsorted(_SEG_UEND, magnitude, side="left").astype(np.int32)
    in_range = segment < 8
    chord = np.minimum(segment, 7)  # keeps the shift defined where segment == 8
    code = (chord << 4) | ((magnitude >> (chord + 1)) & 0x0F)
    code = np.where(in_range, code, 0x7F) ^ mask
    return code.astype(np.uint8)


_DECODE: Final = _decode_table()
_ENCODE: Final = _encode_table()
_DECODE.setflags(write=False)
_ENCODE.setflags(write=False)
# dtype objects made once: parsing a dtype string on every call is a measurable share of
# a 160-sample frame. ``take`` is also faster than fancy indexing for arrays this small.
_CODE_DTYPE: Final = np.dtype(np.uint8)
_SAMPLE_BITS_DTYPE: Final = np.dtype("<u2")


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode μ-law bytes to 16-bit little-endian signed PCM (twice as many bytes)."""
    codes = np.frombuffer(data, dtype=_CODE_DTYPE)
    return _DECODE.take(codes).tobytes()


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode 16-bit little-endian signed PCM to μ-law bytes (half as many bytes).

    Raises ValueError if ``data`` has an odd number of bytes (not whole samples).
    """
    if len(data) % 2:
        raise ValueError(
            f"16-bit PCM needs an even number of bytes (2 per sample), got {len(data)} bytes"
        )
    # The table is indexed by the sample's bit pattern: reading the little-endian int16
    # bytes as little-endian uint16 is that index, with no arithmetic per sample.
    samples = np.frombuffer(data, dtype=_SAMPLE_BITS_DTYPE)
    return _ENCODE.take(samples).tobytes()
