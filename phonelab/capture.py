"""What crossed the wire to and from the phones: UDP packets (SIP and RTP) with the kernel's
arrival times, read from an AF_PACKET socket inside the lab's network namespace.

    with Capture() as wire:                   # livekit-sip's SIP and RTP, both ways
        ...                                   # calls
    wire.sip()                                # SIP messages: INVITE, 200 OK, BYE ... and when
    wire.rtp_streams()                        # PCMU streams by (src, sport, dst, dport)

Both ends of the lab live in one namespace, so the phones' traffic to and from the stack
goes over loopback, where each packet is seen twice (going out and coming in): only the
copy coming in is kept. Packets are told apart by port (livekit-sip's SIP port and RTP
range), not address: a socket bound to 0.0.0.0 sends to a local address from that
address. Times are the kernel's receive timestamps (SO_TIMESTAMPNS), converted to
``time.monotonic()``: a packet's time is when it reached the receiving end, however late
the capture thread reads it. Needs root (the namespace's root is enough).
"""

from __future__ import annotations

import ctypes
import itertools
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from phonelab.stack import SIP_PORT

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
FRAME_SECONDS = 0.02
PCMU = 0
RTP_PORTS = (10000, 10200)  # livekit-sip's rtp_port range in phonelab.stack's config


@dataclass(frozen=True)
class Packet:
    at: float  # time.monotonic() of the kernel's receive timestamp
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass(frozen=True)
class RtpPacket:
    at: float
    seq: int
    timestamp: int
    marker: bool
    payload: bytes


@dataclass(frozen=True)
class SipMessage:
    at: float
    src: str
    sport: int
    dst: str
    dport: int
    first_line: str
    call_id: str
    body: str

    @property
    def sdp_audio(self) -> tuple[str, int] | None:
        """The (address, port) the sender's SDP offers or answers for audio."""
        address = re.search(r"(?m)^c=IN IP4 (\S+)", self.body)
        port = re.search(r"(?m)^m=audio (\d+)", self.body)
        if not (address and port):
            return None
        return address.group(1), int(port.group(1))


StreamKey = tuple[str, int, str, int]


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _udp_ports(ranges: list[tuple[int, int]]) -> tuple[_SockFprog, ctypes.Array[_SockFilter]]:
    """Classic BPF: unfragmented IPv4 UDP (Ethernet-framed, as on lo) whose source or
    destination port is in one of ``ranges`` (inclusive)."""
    head: list[tuple[int, int | str, int | str, int]] = [
        (0x28, 0, 0, 12),  # ldh [12]: EtherType
        (0x15, 0, "drop", 0x0800),  # IPv4
        (0x30, 0, 0, 23),  # ldb [23]: IP protocol
        (0x15, 0, "drop", 17),  # UDP
        (0x28, 0, 0, 20),  # ldh [20]: fragment offset
        (0x45, "drop", 0, 0x1FFF),  # the first fragment or none
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf): IP header length
    ]
    program = list(head)
    for offset in (14, 16):  # ldh [x+14]: source port, [x+16]: destination port
        program.append((0x48, 0, 0, offset))
        for low, high in ranges:
            after = f"next{len(program) + 2}"
            program.append((0x35, 0, after, low))  # port >= low, else the next range
            program.append((0x25, after, "keep", high))  # port <= high: keep
    program += [(0x06, 0, 0, 0), (0x06, 0, 0, 0x40000)]  # drop; keep the whole frame
    labels = {"drop": len(program) - 2, "keep": len(program) - 1}

    def jump(pc: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        if target.startswith("next"):
            return int(target[4:]) - pc - 1
        return labels[target] - pc - 1

    ops = [
        _SockFilter(code, jump(pc, jt), jump(pc, jf), k)
        for pc, (code, jt, jf, k) in enumerate(program)
    ]
    array = (_SockFilter * len(ops))(*ops)
    return _SockFprog(len(ops), array), array  # the array must outlive the setsockopt


class Capture:
    def __init__(
        self,
        sip_port: int = SIP_PORT,
        rtp_ports: tuple[int, int] = RTP_PORTS,
        *,
        also: tuple[int, ...] = (),
        interface: str = "lo",
    ) -> None:
        """livekit-sip's side of the phone calls (its SIP port and RTP range), and the
        ports in ``also`` (livekit-server's WebRTC port: the worker's own audio)."""
        self.ports = [(sip_port, sip_port), rtp_ports, *[(port, port) for port in also]]
        self.interface = interface
        self.packets: list[Packet] = []
        self.dropped_by_kernel = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        program, keep = _udp_ports(self.ports)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(program))
        del keep  # the kernel copied the program
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((self.interface, ETH_P_ALL))
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name="capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self.drops()
            self._sock.close()
            self._sock = None

    def drops(self) -> int:
        """Packets the kernel dropped for want of room in the socket's buffer, so far."""
        if self._sock is not None:
            stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            self.dropped_by_kernel += struct.unpack("II", stats)[1]  # reading resets them
        return self.dropped_by_kernel

    def mark(self) -> int:
        """How many packets so far: pass it as ``after`` to look at what came since."""
        with self._lock:
            return len(self.packets)

    def since(self, after: int = 0) -> list[Packet]:
        with self._lock:
            return self.packets[after:]

    # -- reading -------------------------------------------------------------------------

    def _read(self) -> None:
        assert self._sock is not None
        sock = self._sock
        space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data, ancillary, _flags, address = sock.recvmsg(65536, space)
            except OSError:
                return
            # the two clocks' offset now is the offset when the kernel stamped it
            offset = time.time() - time.monotonic()
            if address[2] == PACKET_OUTGOING:
                continue  # loopback: the same packet comes in next
            stamp = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    stamp = seconds + nanos / 1e9 - offset
            packet = _parse(data, stamp if stamp is not None else time.monotonic())
            if packet is not None:
                with self._lock:
                    self.packets.append(packet)

    # -- what was captured ---------------------------------------------------------------

    def sip(self, after: int = 0) -> list[SipMessage]:
        found = []
        for packet in self.since(after):
            text = packet.payload.decode("utf-8", "replace")
            if not (text.startswith("SIP/2.0 ") or re.match(r"[A-Z]+ sip:", text)):
                continue
            head, _, body = text.partition("\r\n\r\n")
            call_id = re.search(r"(?im)^(?:call-id|i):\s*(\S+)", head)
            found.append(
                SipMessage(
                    packet.at,
                    packet.src,
                    packet.sport,
                    packet.dst,
                    packet.dport,
                    head.split("\r\n", 1)[0],
                    call_id.group(1) if call_id else "",
                    body,
                )
            )
        return found

    def rtp_streams(self, after: int = 0) -> dict[StreamKey, list[RtpPacket]]:
        """PCMU packets by stream, in arrival order (RTCP and telephone-events left out)."""
        streams: dict[StreamKey, list[RtpPacket]] = {}
        for packet in self.since(after):
            rtp = parse_rtp(packet)
            if rtp is not None:
                key = (packet.src, packet.sport, packet.dst, packet.dport)
                streams.setdefault(key, []).append(rtp)
        return streams


def _parse(frame: bytes, at: float) -> Packet | None:
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    if ip[9] != 17:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    src = socket.inet_ntoa(ip[12:16])
    dst = socket.inet_ntoa(ip[16:20])
    sport, dport = struct.unpack("!HH", ip[header : header + 4])
    return Packet(at, src, sport, dst, dport, bytes(ip[header + 8 : total]))


def parse_rtp(packet: Packet) -> RtpPacket | None:
    data = packet.payload
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    payload_type = data[1] & 0x7F
    if payload_type != PCMU:
        return None  # RTCP (72-76 here), telephone-event, others
    start = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension
        if len(data) < start + 4:
            return None
        start += 4 + 4 * struct.unpack("!H", data[start + 2 : start + 4])[0]
    end = len(data)
    if data[0] & 0x20:  # padding
        end -= data[-1]
    seq, stamp = struct.unpack("!HI", data[2:8])
    return RtpPacket(packet.at, seq, stamp, bool(data[1] & 0x80), data[start:end])


# -- PCMU ------------------------------------------------------------------------------


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign, -magnitude, magnitude).astype(np.int16)


ULAW = _ulaw_table()


def ulaw_pcm(payload: bytes) -> np.ndarray:
    """16-bit samples of G.711 μ-law bytes."""
    return ULAW[np.frombuffer(payload, dtype=np.uint8)]


def stream_pcm(packets: list[RtpPacket]) -> bytes:
    """The stream's audio in arrival order, one 20 ms frame per packet."""
    return b"".join(ulaw_pcm(p.payload).tobytes() for p in packets)


def frame_rms(packets: list[RtpPacket]) -> np.ndarray:
    """The RMS of each packet's audio (16-bit scale)."""
    out = np.zeros(len(packets), dtype=np.float32)
    for index, packet in enumerate(packets):
        samples = ulaw_pcm(packet.payload).astype(np.float32)
        out[index] = float(np.sqrt((samples**2).mean())) if len(samples) else 0.0
    return out


def digital_silence(packet: RtpPacket) -> bool:
    """A frame of exact zeros: what livekit-sip's mixer sends with nothing buffered."""
    return bool(packet.payload) and not np.any(ulaw_pcm(packet.payload))


def lateness(packets: list[RtpPacket], indices: list[int]) -> list[float]:
    """For each packet index (after the first), arrival gap minus the gap its RTP sequence
    numbers call for (20 ms a packet), in seconds: > 0 is late."""
    out = []
    for index in indices:
        if index == 0:
            continue
        step = (packets[index].seq - packets[index - 1].seq) & 0xFFFF
        if step == 0 or step > 50:
            continue  # a duplicate, or a new talk spurt after a long pause
        gap = packets[index].at - packets[index - 1].at
        out.append(gap - step * FRAME_SECONDS)
    return out


# -- any RTP (the WebRTC legs: SRTP keeps the header in the clear) --------------------------


def rtp_header(packet: Packet) -> tuple[int, int, int, int] | None:
    """(payload type, sequence number, timestamp, SSRC) of an RTP packet; None for
    RTCP, STUN and DTLS (RTCP's packet types 200-204 read as 72-76 here)."""
    data = packet.payload
    if len(data) < 12 or data[0] >> 6 != 2 or 72 <= data[1] & 0x7F <= 76:
        return None
    seq, stamp, ssrc = struct.unpack("!HII", data[2:12])
    return data[1] & 0x7F, seq, stamp, ssrc


def sender_lateness(
    packets: list[Packet], payload_types: tuple[int, ...], clock_rate: int = 48000
) -> list[float]:
    """Per stream (SSRC) of these payload types: each packet's arrival gap to the one
    before minus the gap its RTP timestamps say (seconds; > 0 is late). A pause the sender
    makes (DTX, no speech) moves the timestamps as much as the clock: it is not late."""
    streams: dict[int, list[tuple[float, int]]] = {}
    for packet in packets:
        header = rtp_header(packet)
        if header is not None and header[0] in payload_types:
            streams.setdefault(header[3], []).append((packet.at, header[2]))
    out = []
    for stream in streams.values():
        for (at_a, ts_a), (at_b, ts_b) in itertools.pairwise(stream):
            step = (ts_b - ts_a) & 0xFFFFFFFF
            if 0 < step < clock_rate * 60:  # not a duplicate or a retransmission
                out.append((at_b - at_a) - step / clock_rate)
    return out
