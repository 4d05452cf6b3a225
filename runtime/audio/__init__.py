"""Audio helpers for telephony: G.711 codecs and PCM conversions."""
