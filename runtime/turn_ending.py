"""When has the caller finished? An end-of-turn judge that reads the words heard.

The VAD says when the caller went quiet; it cannot tell a finished sentence from a pause in
the middle of one. Waiting long after every silence makes every reply slow; answering after
a short one cuts off callers who stop to think ("I'd like to book, um ..."). livekit-agents
asks a turn detector for the probability that the turn is over: when it is unlikely, it
waits up to `turn.max_endpointing_delay` for more speech instead of `min_endpointing_delay`.
Its own detector is a model fetched from the network; this one needs none. It reads the
transcript the way a listener would: a sentence ending on "and", "the", "um", "to" or a
comma is not finished; one ending on a full stop or a question mark is.

English only; for other languages livekit falls back to the VAD alone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from livekit.agents import llm

UNLIKELY = 0.3  # below this the caller is likely mid-sentence: wait for more
# words a finished sentence almost never ends on (and only those: "Who am I speaking with?",
# "Can I come in?", "Yes, I can." are finished, so prepositions and verbs are not here)
HESITATIONS = ("um", "umm", "uh", "uhm", "er", "erm", "hmm")
CONJUNCTIONS = ("and", "but", "or", "because", "cause", "if", "than")
DETERMINERS = ("a", "an", "the", "my", "your", "our", "their", "his", "her", "its")
PREPOSITIONS = ("to", "of", "from", "into", "onto")  # those that always want what follows
OPENINGS = ("i'm", "i'd", "i'll", "i've", "let's", "wanna", "gonna", "like")
UNFINISHED_ENDINGS = frozenset(
    (*HESITATIONS, *CONJUNCTIONS, *DETERMINERS, *PREPOSITIONS, *OPENINGS)
)
_LAST_WORD = re.compile(r"([a-z']+)\W*$")


def end_of_turn_probability(text: str) -> float:
    """How likely the caller has finished, from what they said this turn."""
    text = text.strip().lower()
    if not text:
        return 0.5  # nothing to judge: the VAD's word stands
    found = _LAST_WORD.search(text)
    if found is not None and found.group(1) in UNFINISHED_ENDINGS:
        return 0.05
    if text.endswith((",", "-", "...", "…", ":")):
        return 0.1
    if text.endswith((".", "?", "!")):
        return 0.95
    return 0.6  # no punctuation (a recognizer that writes none): not a reason to wait


class TranscriptTurnDetector:
    """livekit-agents' turn-detector protocol, answered from the transcript alone."""

    @property
    def model(self) -> str:
        return "transcript-endings"

    @property
    def provider(self) -> str:
        return "dialplan"

    async def unlikely_threshold(self, language: str | None) -> float | None:
        return UNLIKELY

    async def supports_language(self, language: str | None) -> bool:
        return language is None or str(language).lower().startswith("en")

    async def predict_end_of_turn(
        self, chat_ctx: llm.ChatContext, *, timeout: float | None = None
    ) -> float:
        return end_of_turn_probability(_this_turn(chat_ctx))


def _this_turn(chat_ctx: llm.ChatContext) -> str:
    """The caller's words since the bot last spoke (livekit passes the conversation with
    the turn so far as its last user message)."""
    for item in reversed(chat_ctx.items):
        if getattr(item, "type", None) != "message":
            continue
        if item.role != "user":  # type: ignore[union-attr]
            return ""
        return item.text_content or ""  # type: ignore[union-attr]
    return ""
