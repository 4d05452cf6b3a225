"""What the SIP benches share: the lab (LiveKit stack, a dialplan project, its worker), the
phones, a clock for the WAV files baresip writes as a call goes, and the wire's view of a
call (its SIP messages and its two RTP streams, from phonelab.capture).

Run inside the lab's private network namespace (`.ci/in-private-net`), as root there.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phonelab.baresip import Phone
from phonelab.capture import Capture, RtpPacket, frame_rms, stream_pcm
from phonelab.listening import SPEECH_RMS, Line, lines
from phonelab.processes import Process
from phonelab.project import DIALPLAN, Project
from phonelab.stack import LiveKitStack

PHONE_IP = "10.77.0.2"  # the far end of the namespace's veth pair, as in tests/phone
INBOUND_NUMBER = "+15550100"
RATE = 8000
FRAME_SECONDS = 0.02
WAV_HEADER = 44
WEBRTC_PORT = 7882  # livekit-server's rtc.udp_port in phonelab.stack's config


def fleet_toml(max_calls: int) -> str:
    """tests/phone's fleet: one inbound number routed to the receptionist."""
    return f"""\
[worker]
agent_name = "dialplan-lab"
bots = "bots"
max_concurrent_calls = {max_calls}
drain_timeout = "90s"
port = 0

[results]
outbox = "outbox.db"
jsonl = "records.jsonl"

[[trunks.inbound]]
name = "lab"
numbers = ["{INBOUND_NUMBER}"]

[[routes]]
number = "{INBOUND_NUMBER}"
bot = "receptionist"
"""


@contextlib.contextmanager
def lab(
    workdir: Path, *, max_calls: int = 2, worker_core: int | None = None
) -> Iterator[tuple[LiveKitStack, Project, Process]]:
    """The stack, a provisioned project and one `dialplan start` worker (on one core, if
    ``worker_core`` is given: taskset pins it and every thread it starts)."""
    with LiveKitStack(workdir / "livekit") as stack:
        project = Project(workdir / "project", stack, fleet_toml(max_calls))
        project.provision()
        try:
            if worker_core is None:
                worker = project.start_worker()
            else:
                worker = Process(
                    "worker",
                    ["taskset", "-c", str(worker_core), DIALPLAN, "start"],
                    project.dir / "worker.log",
                    cwd=project.dir,
                    env=project.env(),
                )
                project.workers.append(worker)
                worker.wait_for_output("registered worker", timeout=120)
            yield stack, project, worker
        finally:
            project.stop_workers()


@contextlib.contextmanager
def phones(workdir: Path, users: list[str]) -> Iterator[list[Phone]]:
    started: list[Phone] = []
    try:
        for index, user in enumerate(users):
            phone = Phone(
                workdir, user, ip=PHONE_IP, sip_port=5100 + 10 * index, control_port=4500 + index
            )
            started.append(phone)
            phone.start()
        yield started
    finally:
        for phone in started:
            phone.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_ports(pid: int) -> set[int]:
    """The local ports of the process's UDP sockets (its WebRTC legs, one per call)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# -- the WAV files baresip writes as a call goes -----------------------------------------


class FileClock:
    """Polls the growing WAV files in a phone's recordings folder and ties each file's
    position to wall time: baresip writes 8 kHz audio in real time from the file's start,
    so start = min over polls of (poll time - seconds written), the poll just after a
    write being the closest. ``first_loud`` also remembers when a poll first saw a frame
    above the speech floor (the cruder measure, late by up to a poll)."""

    def __init__(self, folder: Path, interval: float = 0.005) -> None:
        self.folder = folder
        self.interval = interval
        self.starts: dict[str, float] = {}
        self.first_loud: dict[str, float] = {}
        self._checked: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="file-clock", daemon=True)

    def __enter__(self) -> FileClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def files(self) -> set[str]:
        return {path.name for path in self.folder.glob("*.wav")}

    def start_of(self, name: str) -> float | None:
        with self._lock:
            return self.starts.get(name)

    def loud_seen(self, name: str) -> float | None:
        with self._lock:
            return self.first_loud.get(name)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.folder.glob("*.wav"):
                with contextlib.suppress(OSError):
                    size = path.stat().st_size
                    now = time.monotonic()
                    if size > WAV_HEADER:
                        start = now - (size - WAV_HEADER) / 2 / RATE
                        with self._lock:
                            self.starts[path.name] = min(self.starts.get(path.name, start), start)
                    if path.name.endswith("-dec.wav") and path.name not in self.first_loud:
                        self._check_loud(path, size, now)
            time.sleep(self.interval)

    def _check_loud(self, path: Path, size: int, now: float) -> None:
        frame = FRAME_SECONDS * RATE * 2
        checked = self._checked.get(path.name, WAV_HEADER)
        whole = WAV_HEADER + int((size - WAV_HEADER) // frame * frame)
        if whole <= checked:
            return
        with path.open("rb") as wav:
            wav.seek(checked)
            data = wav.read(whole - checked)
        samples = np.frombuffer(data, dtype=np.int16).astype(np.float32)
        frames = samples.reshape(-1, int(frame // 2))
        if np.any(np.sqrt((frames**2).mean(axis=1)) > SPEECH_RMS):
            with self._lock:
                self.first_loud[path.name] = now
        self._checked[path.name] = whole


def new_call_files(clock: FileClock, before: set[str], timeout: float = 10.0) -> tuple[str, str]:
    """The (dec, enc) files of the call placed after ``before`` was taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = clock.files() - before
        dec = [name for name in new if name.endswith("-dec.wav")]
        enc = [name for name in new if name.endswith("-enc.wav")]
        if dec and enc:
            return dec[0], enc[0]
        time.sleep(0.01)
    raise TimeoutError(f"no new recording in {clock.folder} within {timeout:g} s")


def wav_pcm(path: Path) -> bytes:
    data = path.read_bytes()
    return data[WAV_HEADER:] if len(data) > WAV_HEADER else b""


def file_lines(path: Path) -> list[Line]:
    return lines(wav_pcm(path))


# -- the wire's view of one call ---------------------------------------------------------


@dataclass
class WireCall:
    invite_at: float  # the phone's INVITE left
    ok_at: float  # livekit-sip's 200 OK reached the phone
    to_phone: list[RtpPacket]  # the bot's audio, as it reached the phone
    from_phone: list[RtpPacket]  # the caller's audio, as it reached livekit-sip

    def bot_lines(self) -> list[Line]:
        return packet_lines(self.to_phone)

    def caller_lines(self) -> list[Line]:
        return packet_lines(self.from_phone)


def wire_call(capture: Capture, phone: Phone, after: int = 0) -> WireCall:
    """The phone's call placed after packet ``after``: its INVITE (the phone's RTP port in
    its SDP), the 200 OK (livekit-sip's port) and the RTP between those two ports."""
    messages = capture.sip(after)
    invite = next(
        (m for m in messages if m.first_line.startswith("INVITE ") and m.sport == phone.sip_port),
        None,
    )
    if invite is None:
        raise LookupError(f"{phone.user}: no INVITE on the wire")
    ok = next(
        (
            m
            for m in messages
            if m.call_id == invite.call_id
            and m.first_line.startswith("SIP/2.0 200")
            and m.sdp_audio is not None
        ),
        None,
    )
    if ok is None:
        raise LookupError(f"{phone.user}: the call was not answered")
    assert invite.sdp_audio is not None and ok.sdp_audio is not None
    phone_port, sip_port = invite.sdp_audio[1], ok.sdp_audio[1]
    streams = capture.rtp_streams(after)
    to_phone = [p for key, s in streams.items() if key[1:4:2] == (sip_port, phone_port) for p in s]
    from_phone = [
        p for key, s in streams.items() if key[1:4:2] == (phone_port, sip_port) for p in s
    ]
    return WireCall(invite.at, ok.at, to_phone, from_phone)


def packet_lines(packets: list[RtpPacket]) -> list[Line]:
    """Lines in a stream (one 20 ms frame a packet): ``Line.start * 50`` is a packet index."""
    return lines(stream_pcm(packets))


def packet_at(packets: list[RtpPacket], seconds: float) -> float:
    """Arrival time of the packet at ``seconds`` into the stream (a line's start or end)."""
    index = min(len(packets) - 1, max(0, round(seconds * 50)))
    return packets[index].at


def first_loud_after(packets: list[RtpPacket], at: float) -> float | None:
    """Arrival of the first packet at or after ``at`` whose frame is above the speech floor."""
    later = [p for p in packets if p.at >= at]
    loud = np.nonzero(frame_rms(later) > SPEECH_RMS)[0]
    return later[int(loud[0])].at if len(loud) else None
