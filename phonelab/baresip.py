"""A real SIP phone: baresip, driven over its ctrl_tcp socket.

    phone = Phone(workdir, "caller", ip="10.77.0.2", voice=silence_wav)
    phone.start()
    phone.dial("sip:+15550100@10.77.0.1:5060")
    phone.wait_event("CALL_ESTABLISHED")
    phone.play(question_wav)                 # what the caller says next
    phone.send_dtmf("1")                     # RFC 4733 telephone-events
    phone.hang_up()
    phone.heard()                            # 8 kHz PCM the phone received

The phone speaks a WAV through `aufile` and records what it receives with `sndfile`
(the decoded side of each call, written as the audio arrives). Auto-answer makes it a
callee for outbound calls. baresip answers only calls whose Request-URI user is its
account user, so a callee's account is its number.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phonelab.processes import LabError, Process

MODULES = "/usr/lib/baresip/modules"
RATE = 8000


def write_wav(path: Path, pcm16: bytes, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16)
    return path


def silence(seconds: float, rate: int = RATE) -> bytes:
    return b"\0\0" * int(seconds * rate)


class Phone:
    def __init__(
        self,
        workdir: Path,
        user: str,
        *,
        ip: str,
        sip_port: int = 5070,
        control_port: int = 4444,
        auto_answer: bool = False,
        ringing_users: tuple[str, ...] = (),
    ) -> None:
        self.dir = workdir / f"baresip-{user}"
        self.user = user
        self.ip = ip
        self.sip_port = sip_port
        self.control_port = control_port
        self.auto_answer = auto_answer
        # more numbers this phone answers, each ringing until `accept()` or `hang_up()`
        # (which refuses it: 486 Busy Here)
        self.ringing_users = ringing_users
        self.process: Process | None = None
        self._sock: socket.socket | None = None
        self._events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._lock = threading.Condition()
        self._token = 0
        self._reader: threading.Thread | None = None
        self._files: list[Path] = []

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.ip}:{self.sip_port}"

    @property
    def recordings(self) -> Path:
        return self.dir / "heard"

    def start(self, voice: Path | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        self.silence = write_wav(self.dir / "silence.wav", silence(600))
        source = voice or self.silence
        answer = "auto" if self.auto_answer else "manual"
        accounts = [(self.user, answer), *((user, "manual") for user in self.ringing_users)]
        (self.dir / "accounts").write_text(
            "".join(
                f"<sip:{user}@{self.ip}>;regint=0;audio_codecs=PCMU;answermode={mode}\n"
                for user, mode in accounts
            )
        )
        (self.dir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen {self.ip}:{self.sip_port}",
                    f"audio_source aufile,{source}",
                    # aufile only reads; the bridge is a player nothing listens to, the
                    # sndfile filter keeps what arrives
                    "audio_player aubridge,nobody",
                    "audio_alert aubridge,nobody",
                    "ausrc_srate 8000",
                    "auplay_srate 8000",
                    f"snd_path {self.recordings}",
                    f"module_path {MODULES}",
                    "module g711.so",
                    "module aufile.so",
                    "module aubridge.so",
                    "module sndfile.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.control_port}",
                    "",
                ]
            )
        )
        self.process = Process(
            f"baresip {self.user}", ["baresip", "-f", self.dir], self.dir / "baresip.log"
        )
        self.process.wait_until(self._connect, "its control socket", timeout=20)
        self._reader = threading.Thread(target=self._read, name=f"baresip-{self.user}", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self.command("quit", timeout=2)
            with contextlib.suppress(OSError):
                self._sock.close()
        if self.process is not None:
            self.process.stop(timeout=5)

    # -- control -------------------------------------------------------------------------

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def hang_up(self) -> None:
        """End the call, or refuse the one ringing."""
        self.command("hangup")

    def accept(self) -> None:
        """Answer the call ringing."""
        self.command("accept")

    def send_dtmf(self, digits: str, gap: float = 0.3) -> None:
        for digit in digits:
            self.command("sndcode", digit)
            time.sleep(gap)  # each digit is its own telephone-event

    def play(self, wav: Path) -> None:
        """From now on the phone speaks this file (then silence, if it is padded)."""
        self.command("ausrc", f"aufile,{wav}")

    def quiet(self) -> None:
        """Speak silence again: what `play` chose stays the source of later calls too."""
        self.play(self.silence)

    def command(self, name: str, params: str = "", timeout: float = 10.0) -> dict[str, Any]:
        assert self._sock is not None, "start() the phone first"
        with self._lock:
            self._token += 1
            token = str(self._token)
        payload = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(payload), payload))
        deadline = time.monotonic() + timeout
        with self._lock:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"baresip did not answer {name!r} within {timeout:g} s")
                self._lock.wait(left)
            return self._responses.pop(token)

    # -- events --------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def wait_event(self, kind: str, timeout: float = 30.0, *, after: int = 0) -> dict[str, Any]:
        """The first event of this type (CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED …)
        from index ``after`` on."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for event in self._events[after:]:
                    if event.get("type") == kind:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [event.get("type") for event in self._events]
                    raise LabError(
                        f"baresip {self.user}: no {kind} within {timeout:g} s (events: {seen})"
                    )
                self._lock.wait(min(left, 0.5))

    # -- what the phone heard ------------------------------------------------------------

    def heard_files(self) -> list[Path]:
        """The received-audio files of this phone's calls, in the order the calls began."""
        found = sorted(self.recordings.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)
        self._files += [path for path in found if path not in self._files]
        return list(self._files)

    def heard(self, call: int | None = None) -> bytes:
        """The 8 kHz 16-bit PCM received in a call (``call``: its index in
        `heard_files`; default the latest), as far as it is written."""
        files = self.heard_files()
        if call is None:
            call = len(files) - 1
        if not 0 <= call < len(files):
            return b""
        data = files[call].read_bytes()
        return data[44:] if len(data) > 44 else b""  # the header's sizes come at close

    # -- internals -----------------------------------------------------------------------

    def _connect(self) -> bool:
        try:
            self._sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=1)
        except OSError:
            return False
        self._sock.settimeout(None)
        return True

    def _read(self) -> None:
        assert self._sock is not None
        for message in _netstrings(self._sock):
            with self._lock:
                if message.get("response"):
                    self._responses[str(message.get("token", ""))] = message
                elif message.get("event"):
                    message["at"] = time.monotonic()
                    self._events.append(message)
                self._lock.notify_all()


def _netstrings(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while True:
            colon = buffer.find(b":")
            if colon < 0:
                break
            size = int(buffer[:colon])
            if len(buffer) < colon + 1 + size + 1:
                break
            payload = buffer[colon + 1 : colon + 1 + size]
            buffer = buffer[colon + 2 + size :]
            with contextlib.suppress(ValueError):
                yield json.loads(payload)
