"""Watchdogs: the reasons a call ends without anyone deciding to end it.

livekit-agents ends a session when asked to; it has no wall-clock limit and its
``user_away_timeout`` only marks the user away. Here each watchdog asks the call to end
with its own ``disconnected_by``, and the transport then tears the line down:

- ``limits.max_duration`` (wall clock, whatever the audio is doing) → ``timeout``;
- ``limits.silence_timeout`` of dead air, with ``silence_reminders`` spread evenly inside
  it → ``rnr``;
- ``limits.max_provider_errors`` unrecoverable provider errors in a row (livekit closes the
  session on the next one) → ``error``, with the raw provider error as the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from runtime.record import DisconnectedBy

if TYPE_CHECKING:
    from livekit.agents import AgentSession, SpeechHandle
    from livekit.agents.voice.events import (
        AgentStateChangedEvent,
        CloseEvent,
        UserStateChangedEvent,
    )

    from runtime.call import CallContext
    from runtime.resolve import EndingLines
    from runtime.schema import Limits

log = logging.getLogger("dialplan.lifecycle")

# the bot's states in which nobody is talking and nothing is on its way
_QUIET_AGENT_STATES = frozenset({"listening", "idle"})


class Watchdogs:
    """The timers of one call. ``start`` arms them; ``close`` disarms them."""

    def __init__(
        self,
        session: AgentSession,
        call: CallContext,
        limits: Limits,
        lines: EndingLines,
        *,
        timers: bool = True,
    ) -> None:
        """``timers=False`` (a text chat: no line, and a person typing is not dead air)
        keeps only the provider-error watchdog."""
        self.session = session
        self.call = call
        self.limits = limits
        self.lines = lines
        self.timers = timers
        self._timers: list[asyncio.TimerHandle] = []
        self._silence_timer: asyncio.TimerHandle | None = None
        self._quiet_since: float | None = None
        self._reminders_said = 0
        self._reminder: SpeechHandle | None = None
        self._user_speaking = False
        self._agent_quiet = False
        self._closed = False

    def start(self) -> None:
        self.session.on("close", self._session_closed)
        if self.timers:
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(self.limits.max_duration, self._max_duration))
            self.session.on("user_state_changed", self._user_state)
            self.session.on("agent_state_changed", self._agent_state)
            self._agent_quiet = self.session.agent_state in _QUIET_AGENT_STATES
            self._update_quiet()

    def close(self) -> None:
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        if self._silence_timer is not None:
            self._silence_timer.cancel()
        self.session.off("close", self._session_closed)
        if self.timers:
            self.session.off("user_state_changed", self._user_state)
            self.session.off("agent_state_changed", self._agent_state)

    # -- max duration ------------------------------------------------------------------

    def _max_duration(self) -> None:
        if self.call.end_request is not None:
            return
        limit = self.limits.max_duration
        # cut the bot off: the limit is the limit, not "after this sentence"
        with contextlib.suppress(RuntimeError):
            self.session.interrupt(force=True)
        self.call.request_end(
            DisconnectedBy.TIMEOUT,
            cause=f"limits.max_duration ({limit:g} s) reached",
            goodbye=self.lines.timeout or None,
        )

    # -- dead air ----------------------------------------------------------------------

    def _user_state(self, event: UserStateChangedEvent) -> None:
        self._user_speaking = event.new_state == "speaking"
        if self._user_speaking:
            self._reminders_said = 0  # the caller is there: reminders start over
        self._update_quiet()

    def _agent_state(self, event: AgentStateChangedEvent) -> None:
        quiet = event.new_state in _QUIET_AGENT_STATES
        if not quiet and self._reminder is not None and not self._reminder.done():
            return  # the bot saying a reminder is not conversation: keep counting
        self._agent_quiet = quiet
        self._update_quiet()

    def _update_quiet(self) -> None:
        quiet = self._agent_quiet and not self._user_speaking
        if quiet and self._quiet_since is None:
            self._quiet_since = time.monotonic()
            self._arm_silence()
        elif not quiet and self._quiet_since is not None:
            self._quiet_since = None
            if self._silence_timer is not None:
                self._silence_timer.cancel()
                self._silence_timer = None

    def _arm_silence(self) -> None:
        """Wake at the next reminder, or at the hang-up when none is left."""
        if self._closed or self._quiet_since is None:
            return
        steps = len(self.lines.silence_reminders) + 1
        due = self._quiet_since + self.limits.silence_timeout * (self._reminders_said + 1) / steps
        loop = asyncio.get_running_loop()
        delay = max(0.0, due - time.monotonic())
        self._silence_timer = loop.call_later(delay, self._silence_step)

    def _silence_step(self) -> None:
        self._silence_timer = None
        if self._closed or self.call.end_request is not None or self._quiet_since is None:
            return
        reminders = self.lines.silence_reminders
        if self._reminders_said < len(reminders):
            text = reminders[self._reminders_said]
            self._reminders_said += 1
            self.call.add_event("silence_reminder", index=self._reminders_said, text=text)
            try:
                self._reminder = self.session.say(text)
            except RuntimeError:  # the session is closing: nothing to remind
                return
            self._arm_silence()
            return
        silent = time.monotonic() - self._quiet_since
        self.call.request_end(
            DisconnectedBy.RNR, cause=f"no one spoke for {silent:.1f} s (limits.silence_timeout)"
        )

    # -- provider errors ---------------------------------------------------------------

    def _session_closed(self, event: CloseEvent) -> None:
        if event.error is None:
            return
        error: Any = event.error
        source = type(getattr(error, "source", None)).__name__
        cause = f"{error.type}: {error.error} (from {source})"
        self.call.add_event("provider_failed", kind=error.type, error=str(error.error))
        self.call.request_end(DisconnectedBy.ERROR, cause=cause)


def apology_possible(call: CallContext) -> bool:
    """An apology needs a working voice: not when TTS is what failed."""
    return not any(
        event.type == "provider_failed" and event.data.get("kind") == "tts_error"
        for event in call.events
    )
