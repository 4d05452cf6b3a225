"""Keys the caller presses (DTMF) as a turn of the conversation, on every voice transport.

A caller who presses keys is answering, just as one who speaks. Keys pressed in quick
succession are one entry: it ends when `ENTRY_TIMEOUT` passes without another key, or at
once on ``#``. The bot then gets the entry as the caller's turn and answers it, with this
exact text (the customer entry of the transcript says the same):

    pressed 1         one key
    pressed 4711      several keys, in the order pressed (the ending ``#`` is not one of them)
    pressed #         ``#`` on its own
    pressed *0        ``*`` and ``A-D`` are keys like the digits

A `rules` LLM matches it like speech (``match = "\\bpressed 1\\b"``; several keys with
``"\\bpressed (?P<digits>[0-9*#A-D]+)"``), and a model reads it as what it is. Each key is
also a ``dtmf`` event of the timeline (``direction = "in"``, ``digit``) as it arrives.

The first key stops the bot talking, as speech would (a line said with interruptions off
keeps playing); once the call is ending, keys are recorded but not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from runtime.call import CallContext

KEYS = frozenset("0123456789*#ABCD")
END_KEY = "#"
# long enough to find the next key of a number on a phone's keypad; short enough that a
# single "press 1 for ..." answer does not feel ignored
ENTRY_TIMEOUT = 1.5


def keypad_text(keys: str) -> str:
    """The caller's turn for an entry of ``keys``: ``pressed 1``."""
    return f"pressed {keys}"


class Keypad:
    """One call's keypad: ``press`` each key as it arrives; ``close`` when the call ends."""

    def __init__(
        self, call: CallContext, session: AgentSession, *, timeout: float = ENTRY_TIMEOUT
    ) -> None:
        self.call = call
        self.session = session
        self.timeout = timeout
        self._keys = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._closed = False

    def press(self, key: str) -> None:
        """One key from the line (``0-9 * # A-D``); anything else is recorded, not used."""
        key = key.strip().upper()
        self.call.add_event("dtmf", direction="in", digit=key)
        if self._closed or key not in KEYS or self.call.end_request is not None:
            return
        if not self._keys:
            self._interrupt()  # the caller is answering: the bot stops, as for speech
        if key == END_KEY:
            self._submit(self._keys or key)
            return
        self._keys += key
        self._cancel_deadline()
        self._deadline = asyncio.get_running_loop().call_later(
            self.timeout, lambda: self._submit(self._keys)
        )

    def close(self) -> None:
        """The call is over: keys still gathering are dropped, nothing more is answered."""
        self._closed = True
        self._cancel_deadline()
        self._keys = ""

    def _submit(self, keys: str) -> None:
        self._cancel_deadline()
        self._keys = ""
        if self._closed or self.call.end_request is not None:
            return
        self._interrupt()  # whatever the bot began meanwhile (a reminder) gives way
        with contextlib.suppress(RuntimeError):  # the session is closing
            self.session.generate_reply(user_input=keypad_text(keys))

    def _interrupt(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running (yet, or any more)
            self.session.interrupt()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
