"""A room line whose audio stays in this process: the edge no test machine can reach.

There is no LiveKit media server here, so the party's audio goes into the session through
the same `CallerAudioInput` the WebSocket transports use, and the bot's audio is paced out
to a list. Everything else — routing, plugins, the AgentSession, watchdogs, the record,
deleting the room through the server API — is the real code. The party speaks tone bursts
that the scripted STT hears as its next line.

Safe across threads: a LiveKit job runs on its own thread and loop, the test on another.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from livekit import api
from livekit.agents import AgentSession

from runtime.call_control import SimulatedControl
from runtime.fleet.room_line import Party, delete_room
from runtime.transports.media import CallerAudioInput, MediaSink, PacedAudioOutput
from tests.voice_fakes import tone

RATE = 16000
FRAME = RATE // 50 * 2  # 20 ms of 16-bit mono


class _CollectingSink(MediaSink):
    def __init__(self) -> None:
        self.audio = bytearray()

    async def send_audio(self, pcm16: bytes) -> None:
        self.audio.extend(pcm16)


class LocalLine:
    def __init__(
        self,
        room_name: str,
        attributes: Mapping[str, str] | None = None,
        *,
        is_sip: bool = True,
        identity: str = "sip_caller",
        api_factory: Callable[[], api.LiveKitAPI] | None = None,
        joins: bool = True,
        speech_at: tuple[float, ...] = (),
    ) -> None:
        self.room_name = room_name
        self.party = Party(identity, dict(attributes or {}), is_sip)
        self.api_factory = api_factory
        self.joins = joins
        self.speech_at = speech_at
        self.connected = False
        self.hung_up = threading.Event()
        self.bound = threading.Event()
        self.sink = _CollectingSink()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._left: asyncio.Event | None = None
        self._audio_in: CallerAudioInput | None = None
        self._speaker: asyncio.Task[None] | None = None
        self._recording: Path | None = None
        self.session: AgentSession | None = None
        self.session_started_at: float | None = None  # time.monotonic(), for the figures
        self.line_control = SimulatedControl()  # what the bot asked of the line
        self._press: Callable[[str], None] | None = None

    # -- RoomLine ------------------------------------------------------------------------

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._left = asyncio.Event()
        self.connected = True

    async def wait_for_party(self, identity: str | None, *, answered: bool = False) -> Party:
        if not self.joins or (identity is not None and identity != self.party.identity):
            await asyncio.Event().wait()  # nobody comes; the caller's timeout decides
        return self.party

    def bind(self, session: AgentSession, party: Party) -> dict[str, Any]:
        self.session = session
        self._audio_in = CallerAudioInput(RATE)
        session.input.audio = self._audio_in
        session.output.audio = PacedAudioOutput(self.sink, RATE, echoes_marks=False)
        self._speaker = asyncio.create_task(self._speak())
        session.on("agent_state_changed", self._first_state)
        self.bound.set()
        return {}

    def control(self, party: Party) -> SimulatedControl:
        return self.line_control

    def on_key(self, party: Party, press: Callable[[str], None]) -> Callable[[], None]:
        self._press = press

        def stop() -> None:
            self._press = None

        return stop

    async def party_left(self, party: Party) -> str:
        assert self._left is not None
        await self._left.wait()
        return "participant left (CLIENT_INITIATED)"

    async def hang_up(self) -> None:
        if self._speaker is not None:
            self._speaker.cancel()
        if self._audio_in is not None:
            self._audio_in.close()
        if self.api_factory is not None:
            await delete_room(self.api_factory, self.room_name)
        self.hung_up.set()

    def recording(self) -> Path | None:
        recorder = self.session._recorder_io if self.session is not None else None
        path = getattr(recorder, "output_path", None)
        return Path(path) if path else None

    def _first_state(self, _event: object) -> None:
        # the agent's first state change: its activity runs, the session has started
        if self.session_started_at is None:
            self.session_started_at = time.monotonic()

    # -- the test's hands ----------------------------------------------------------------

    def leave(self) -> None:
        """The party hangs up (callable from any thread)."""
        assert self._loop is not None and self._left is not None
        self._loop.call_soon_threadsafe(self._left.set)

    def press(self, keys: str) -> None:
        """The party presses keys, as LiveKit reports SIP DTMF (callable from any thread)."""
        assert self._loop is not None
        for key in keys:
            self._loop.call_soon_threadsafe(self._key, key)

    def _key(self, key: str) -> None:
        if self._press is not None:
            self._press(key)

    async def _speak(self) -> None:
        """Silence, with a 0.6 s tone at each of ``speech_at`` seconds."""
        assert self._audio_in is not None
        speech = tone(0.6, RATE, 300.0)
        clock, pending = 0.0, sorted(self.speech_at)
        while True:
            if pending and clock >= pending[0]:
                pending.pop(0)
                for i in range(0, len(speech), FRAME):
                    self._audio_in.push(speech[i : i + FRAME])
                    await asyncio.sleep(0.02)
                    clock += 0.02
                continue
            self._audio_in.push(bytes(FRAME))
            await asyncio.sleep(0.02)
            clock += 0.02
