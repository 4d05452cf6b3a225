"""What callers of a bot are expected to say, for recognizers that can be biased toward it.

A bot file already says a lot about what its callers will say: the words its `rules`
listen for, the transitions' `when` sentences and the values a step captures, the names in
its variables, and, above all, the question the bot has just asked. A recognizer that is
told this (Whisper's prompt, a keyword list) hears "Tuesday" after "Which day suits you
best?" where, without it, it hears "two days". Nothing here limits what can be recognized:
it only makes the expected words likelier, so free speech still comes through.

The part that depends on the bot version and the step is worked out once per version and
step (`CompiledBot.derived`); the call adds its variables and the bot's last line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.call import CallContext
    from runtime.compiler import CompiledBot
    from runtime.flow.schema import CaptureSpec

# what almost every phone call hears, whatever the bot
PHONE_PHRASES = (
    "hello",
    "yes",
    "no",
    "okay",
    "sure",
    "sorry",
    "thank you",
    "bye",
    "could you repeat that",
)
MAX_PHRASES = 60  # a Whisper prompt holds about 220 tokens; the last line must fit too
MAX_VARIABLE_CHARS = 40  # longer values are sentences, not names a caller would say

_GROUP_NAME = re.compile(r"\(\?P<\w+>|\(\?P=\w+\)|\(\?[:=!]|\(\?<[=!]|\(\?[aiLmsux-]+\)")
_ESCAPE = re.compile(r"\\[bBdDsSwWAZ]|\\[0-9]+")
_CLASS = re.compile(r"\[(?:\\.|[^\]])*\]")
_QUANTIFIER = re.compile(r"\{\d*,?\d*\}|[?*+]")
_PHRASE = re.compile(r"[a-z][a-z' \-]*[a-z]|[a-z]")
# glue words a pattern spells out around what matters ("book (me )?(at )?..."): no help to
# a recognizer, and they crowd the prompt
GLUE_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "me",
        "my",
        "i",
        "in",
        "at",
        "on",
        "of",
        "for",
        "to",
        "is",
        "it",
        "be",
        "by",
        "or",
        "and",
        "with",
        "from",
    ]
)


def regex_phrases(pattern: str) -> list[str]:
    """The literal words and phrases a regular expression listens for, in order:
    ``\\b(hours|open|closing)\\b`` gives hours, open, closing; ``check-?up`` gives check-up;
    ``my name is (?P<name>[a-z]+)`` gives "my name is". Character classes, escapes and
    quantifiers carry no words and are dropped."""
    text = _GROUP_NAME.sub("(", pattern)
    text = _CLASS.sub(" ", text)
    text = _ESCAPE.sub(" ", text)
    text = _QUANTIFIER.sub("", text)
    text = text.replace("\\", "")
    phrases: list[str] = []
    for piece in re.split(r"[|()^$.]", text.lower()):
        for found in _PHRASE.findall(piece):
            phrase = " ".join(found.split())
            if len(phrase) > 1 and phrase not in GLUE_WORDS:
                phrases.append(phrase)
    return phrases


@dataclass(frozen=True)
class SpeechContext:
    """What a recognizer may be told before it hears the caller's next utterance."""

    phrases: tuple[str, ...]  # words and phrases this bot, in this step, expects to hear
    last_bot_line: str | None  # what the bot said last: usually the question being answered

    def as_prompt(self, description: str | None = None) -> str:
        """One text in the style of the conversation, the bot's last line at the end (a
        prompt-conditioned recognizer such as Whisper reads it as what came before)."""
        parts = []
        if description:
            parts.append(description.rstrip(".") + ".")
        if self.phrases:
            parts.append(", ".join(self.phrases) + ".")
        if self.last_bot_line:
            parts.append(self.last_bot_line)
        return " ".join(parts)


def speech_context(call: CallContext) -> SpeechContext:
    phrases = _dedupe(
        [*bot_phrases(call.bot, call.step), *_variable_phrases(call.variables.values())]
    )
    return SpeechContext(phrases=tuple(phrases[:MAX_PHRASES]), last_bot_line=_last_bot_line(call))


def bot_phrases(bot: CompiledBot, step: str | None) -> tuple[str, ...]:
    """The bot version's expected words in ``step`` (None: a bot without a flow, or before
    its first step): worked out once per version and step."""
    return bot.derived(f"speech_vocabulary:{step}", lambda bot: _work_out(bot, step))


def _work_out(bot: CompiledBot, step: str | None) -> tuple[str, ...]:
    phrases: list[str] = []
    options = bot.provider_options.get("llm")
    vocabulary = getattr(options, "vocabulary", None)
    if callable(vocabulary):  # a provider's options may say what its configuration expects
        phrases.extend(str(phrase) for phrase in vocabulary(step))
    current = bot.bot.steps.get(step) if step is not None else None
    if current is not None:
        for transition in current.next:
            if transition.when:
                phrases.append(transition.when)
            phrases.extend(_capture_phrases(transition.capture))
        phrases.extend(_capture_phrases(current.capture))
    phrases.extend(PHONE_PHRASES)
    return tuple(_dedupe(phrases))


def _capture_phrases(capture: Mapping[str, CaptureSpec]) -> list[str]:
    """The allowed values of captured fields (``type = ["cleaning", "check-up"]``)."""
    phrases: list[str] = []
    for spec in capture.values():
        if isinstance(spec.type, list | tuple):
            phrases.extend(str(value) for value in spec.type)
    return phrases


def _variable_phrases(values: Iterable[Any]) -> list[str]:
    """Short text values (a clinic's name, a caller's name): names the caller may say."""
    return [
        value.strip()
        for value in values
        if isinstance(value, str)
        and 1 < len(value.strip()) <= MAX_VARIABLE_CHARS
        and not any(ch.isdigit() or ch in "{}<>@:/" for ch in value)
    ]


def _last_bot_line(call: CallContext) -> str | None:
    """The bot's last words; before it has said any, its greeting (unless the call began
    in a later step, where the greeting is not what the caller answers)."""
    for entry in reversed(call.transcript):
        if entry.role == "bot" and entry.text.strip():
            return entry.text.strip()
    started_later = (
        call.step is not None
        and call.bot.flow is not None
        and call.steps[:1] != [call.bot.flow.start]
    )
    return None if started_later else call.prompt.greeting.strip() or None


def _dedupe(phrases: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept: list[str] = []
    for phrase in phrases:
        key = phrase.lower().strip()
        if key and key not in seen:
            seen.add(key)
            kept.append(phrase.strip())
    return kept
