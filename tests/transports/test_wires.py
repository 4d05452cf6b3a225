"""Each protocol's messages, both ways, including what real clients get wrong."""

from __future__ import annotations

import base64
import json
from xml.etree import ElementTree

import pytest

from runtime.audio.mulaw import pcm16_to_ulaw
from runtime.transports.exotel import ExotelWire
from runtime.transports.generic import GenericWire
from runtime.transports.twilio import TwilioWire, connect_stream_twiml, refuse_twiml
from runtime.transports.wire import Dtmf, Ignored, Malformed, Mark, Media, Start, Stop, Typed

PCM = (b"\x10\x00\xf0\xff") * 80  # 160 samples


def twilio_start(**custom: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": "MZ1",
            "start": {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "customParameters": {"bot": "desk", "caller": "+1555", "tier": "gold", **custom},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def test_twilio_start_parameters_become_the_call() -> None:
    wire = TwilioWire()
    start = wire.decode(twilio_start())
    assert start == Start(
        stream_id="MZ1",
        call_id="CA1",
        bot="desk",
        variables={"tier": "gold"},
        caller="+1555",
        sample_rate=8000,
        echoes_marks=True,
    )


def test_twilio_media_mark_dtmf_stop_and_outbound() -> None:
    wire = TwilioWire()
    wire.decode(twilio_start())
    payload = base64.b64encode(pcm16_to_ulaw(PCM)).decode()
    media = wire.decode(json.dumps({"event": "media", "media": {"payload": payload}}))
    assert isinstance(media, Media) and len(media.pcm16) == len(PCM)
    assert wire.decode('{"event": "mark", "mark": {"name": "seg-1"}}') == Mark("seg-1")
    assert wire.decode('{"event": "dtmf", "dtmf": {"digit": "7"}}') == Dtmf("7")
    assert isinstance(wire.decode('{"event": "stop", "stop": {}}'), Stop)
    assert isinstance(wire.decode('{"event": "connected"}'), Ignored)
    out = json.loads(wire.audio(PCM))  # type: ignore[arg-type]
    assert out["event"] == "media" and out["streamSid"] == "MZ1"
    assert base64.b64decode(out["media"]["payload"]) == pcm16_to_ulaw(PCM)
    assert json.loads(wire.mark("seg-2") or "") == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "seg-2"},
    }
    assert json.loads(wire.clear() or "") == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (b"\x00\x01", "binary frame"),
        ('{"event": "media", "media": {"payload": "%%%"}}', "not valid base64"),
        ('{"event": "media", "media": {"payload": 5}}', "base64 string"),
        ('{"event": "media"}', "without a `media` object"),
        ('{"event": "start", "start": {}}', "streamSid is missing"),
        ('{"event": "dance"}', "unknown event 'dance'"),
        ('{"hello": 1}', "without `event`"),
    ],
)
def test_twilio_malformed_messages_are_named(message: str | bytes, reason: str) -> None:
    decoded = TwilioWire().decode(message)
    assert isinstance(decoded, Malformed) and reason in decoded.reason


def test_twilio_rejects_oversized_payloads_and_other_codecs() -> None:
    wire = TwilioWire()
    big = base64.b64encode(bytes(9000)).decode()  # more than a second of μ-law
    decoded = wire.decode(json.dumps({"event": "media", "media": {"payload": big}}))
    assert isinstance(decoded, Malformed) and "at most 8000" in decoded.reason
    start = json.loads(twilio_start())
    start["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000}
    decoded = wire.decode(json.dumps(start))
    assert isinstance(decoded, Malformed) and "audio/x-mulaw 8000" in decoded.reason


def test_twiml_answers_escape_what_they_carry() -> None:
    twiml = ElementTree.fromstring(
        connect_stream_twiml("wss://x.test/twilio/stream", {"caller": '+1"<5>', "bot": "desk"})
    )
    stream = twiml.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://x.test/twilio/stream"
    assert {p.get("name"): p.get("value") for p in stream} == {"caller": '+1"<5>', "bot": "desk"}
    refusal = ElementTree.fromstring(refuse_twiml("a & b"))
    assert [child.tag for child in refusal] == ["Say", "Hangup"]
    assert refusal[0].text == "a & b"


def test_exotel_pcm_batches_outbound_audio_in_chunks_of_3200_bytes() -> None:
    wire = ExotelWire(8000)
    start = wire.decode(
        json.dumps(
            {
                "event": "start",
                "stream_sid": "S1",
                "start": {
                    "stream_sid": "S1",
                    "call_sid": "C1",
                    "from": "0990",
                    "to": "0800",
                    "custom_parameters": {"bot": "desk", "lang": "hi"},
                },
            }
        )
    )
    assert start == Start(
        stream_id="S1",
        call_id="C1",
        bot="desk",
        variables={"lang": "hi"},
        caller="0990",
        callee="0800",
        sample_rate=8000,
    )
    frame = bytes(320)
    assert [wire.audio(frame) for _ in range(9)] == [None] * 9
    message = json.loads(wire.audio(frame) or "")
    assert len(base64.b64decode(message["media"]["payload"])) == 3200  # 200 ms at 8 kHz
    wire.audio(frame)
    tail = json.loads(wire.flush_audio() or "")
    assert len(base64.b64decode(tail["media"]["payload"])) == 320
    odd = base64.b64encode(b"\x00" * 321).decode()
    decoded = wire.decode(json.dumps({"event": "media", "media": {"payload": odd}}))
    assert isinstance(decoded, Malformed) and "even count" in decoded.reason
    with pytest.raises(ValueError, match="8000, 16000 or 24000"):
        ExotelWire(11025)


def test_generic_protocol_start_binary_audio_and_errors() -> None:
    wire = GenericWire()
    start = wire.decode('{"type": "start", "bot": "desk", "sample_rate": 24000, "marks": true}')
    assert isinstance(start, Start) and start.sample_rate == 24000 and start.echoes_marks
    assert wire.decode(PCM) == Media(PCM)
    assert isinstance(wire.decode(b"\x00" * 3), Malformed)
    assert isinstance(wire.decode(bytes(24000 * 2 + 2)), Malformed)
    bad_rate = wire.decode('{"type": "start", "sample_rate": 44100}')
    assert isinstance(bad_rate, Malformed) and "use one of 8000" in bad_rate.reason
    assert isinstance(wire.decode('{"type": "stop"}'), Stop)
    unknown = wire.decode('{"type": "jump"}')
    assert isinstance(unknown, Malformed)
    assert "expected start, mark, dtmf, say or stop" in unknown.reason
    assert json.loads(wire.notice("transcript", {"role": "bot", "text": "hi"}) or "") == {
        "type": "transcript",
        "role": "bot",
        "text": "hi",
    }


def test_generic_typed_lines() -> None:
    wire = GenericWire()
    assert wire.decode(json.dumps({"type": "say", "text": "  opening hours?  "})) == Typed(
        "opening hours?"
    )
    for bad, reason in [
        ({"type": "say"}, "say needs a `text`"),
        ({"type": "say", "text": "   "}, "say needs a `text`"),
        ({"type": "say", "text": 42}, "say needs a `text`"),
        ({"type": "say", "text": "x" * 2001}, "say: 2001 characters; at most 2000"),
    ]:
        assert wire.decode(json.dumps(bad)) == Malformed(reason)
