"""The ``pocketsphinx`` STT provider: offline speech recognition with CMU PocketSphinx.

The default offline recognizer. Its acoustic model, language model and dictionary ship
inside the ``pocketsphinx`` wheel, so it needs no download, no network and no key.

    [stt]
    provider = "pocketsphinx"
    language = "en-us"                      # the model that ships; the only one installed
    # optional: only these phrases can be recognized (exact transcripts for demos, tests,
    # menus); without it a general English language model is used
    grammar = ["what are your opening hours", "book an appointment", "yes", "no"]
    # optional: pronunciations (ARPAbet phones) for words the dictionary lacks
    words = { zorbex = "Z AO R B EH K S" }

Audio at any rate (8 kHz telephony, 16/24/48 kHz) is resampled to the 16 kHz the model
expects. Recognition is per utterance: inside an ``AgentSession`` livekit cuts the caller's
audio into utterances with the session's VAD (``[vad]``); a bot without a ``[vad]`` table
gets the shared ``silero`` VAD with its defaults for that.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from runtime import CallContext, RegisterProvider, hookimpl

DEFAULT_LANGUAGE = "en-us"
_WORD = re.compile(r"^[a-z][a-z0-9'.\-]*$")


@functools.cache
def model_root() -> Path | None:
    """``pocketsphinx/model`` of the installed wheel, found without importing it."""
    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.cache
def installed_languages() -> tuple[str, ...]:
    """Languages with a complete model: ``<lang>/<lang>`` (acoustic model),
    ``<lang>/<lang>.lm.bin`` and ``<lang>/cmudict-<lang>.dict``."""
    root = model_root()
    if root is None or not root.is_dir():
        return ()
    return tuple(
        sorted(
            lang.name
            for lang in root.iterdir()
            if (lang / lang.name).is_dir()
            and (lang / f"{lang.name}.lm.bin").is_file()
            and (lang / f"cmudict-{lang.name}.dict").is_file()
        )
    )


@functools.cache
def model_files(language: str) -> dict[str, str]:
    """Decoder arguments for ``language``: acoustic model, language model, dictionary."""
    root = model_root()
    assert root is not None
    lang = root / language
    return {
        "hmm": str(lang / language),
        "lm": str(lang / f"{language}.lm.bin"),
        "dict": str(lang / f"cmudict-{language}.dict"),
    }


@functools.cache
def dictionary(language: str) -> tuple[frozenset[str], frozenset[str]]:
    """(words, phones) of the language's pronouncing dictionary; read only when a bot
    uses ``grammar`` or ``words`` (about 50 ms, once per process)."""
    words: set[str] = set()
    phones: set[str] = set()
    with open(model_files(language)["dict"], encoding="utf-8") as source:
        for line in source:
            parts = line.split()
            if parts:
                words.add(parts[0].split("(", 1)[0])  # "read(2)" is a second pronunciation
                phones.update(parts[1:])
    return frozenset(words), frozenset(phones)


def _check_language(language: str) -> str:
    installed = installed_languages()
    if language not in installed:
        root = model_root()
        raise ValueError(
            f"pocketsphinx has no model for language {language!r}; installed: "
            f"{', '.join(installed) or '(none)'} (a CMU Sphinx model goes in "
            f"{root / language if root else 'pocketsphinx/model/' + language})"
        )
    return language


class PocketSphinxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str = Field(
        DEFAULT_LANGUAGE,
        description="model language; the `pocketsphinx` package ships `en-us`",
    )
    words: dict[str, str] = Field(
        default_factory=dict,
        description='extra pronunciations, word -> ARPAbet phones: { zorbex = "Z AO R B EH K S" }',
    )
    grammar: list[str] | None = Field(
        None,
        description="recognize only these phrases (lowercase words the dictionary or `words` "
        "knows); default: any English through the general language model",
    )

    @field_validator("language")
    @classmethod
    def _installed(cls, value: str) -> str:
        return _check_language(value)

    @field_validator("words")
    @classmethod
    def _valid_words(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        language = info.data.get("language")
        if not value or language is None:
            return value
        _, phones = dictionary(language)
        cleaned: dict[str, str] = {}
        for word, pronunciation in value.items():
            if not _WORD.match(word):
                raise ValueError(
                    f"{word!r} is not a lowercase word (letters, digits, ' . -; "
                    "starting with a letter)"
                )
            spelled = pronunciation.upper().split()
            unknown = sorted(set(spelled) - phones)
            if not spelled or unknown:
                raise ValueError(
                    f"{word!r}: {pronunciation!r} is not a list of {language} phones "
                    f"(unknown: {', '.join(unknown) or 'none given'}; "
                    f"phones: {' '.join(sorted(phones))})"
                )
            cleaned[word] = " ".join(spelled)
        return cleaned

    @field_validator("grammar")
    @classmethod
    def _valid_grammar(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        language = info.data.get("language")
        if value is None or language is None:
            return value
        if not value:
            raise ValueError("give at least one phrase, or leave `grammar` out")
        known, _ = dictionary(language)
        extra = info.data.get("words")  # None: `words` is invalid, so unknown words may be in it
        phrases: list[str] = []
        for index, phrase in enumerate(value):
            words = phrase.lower().split()
            if not words:
                raise ValueError(f"phrase {index} is empty")
            for word in words:
                if not _WORD.match(word):
                    raise ValueError(
                        f"phrase {index} ({phrase!r}): {word!r} is not a word (write words "
                        "only: letters, digits, ' . -; no punctuation or grammar syntax)"
                    )
                if extra is not None and word not in known and word not in extra:
                    raise ValueError(
                        f"phrase {index} ({phrase!r}): {word!r} is not in the {language} "
                        f"dictionary (spell it differently, or give its pronunciation under "
                        f'`words`, e.g. words = {{ {word} = "..." }})'
                    )
            phrases.append(" ".join(words))
        return phrases

    def jsgf(self) -> str | None:
        """The grammar as JSGF: one public rule, the phrases as alternatives."""
        if not self.grammar:
            return None
        alternatives = " | ".join(f"( {phrase} )" for phrase in dict.fromkeys(self.grammar))
        return f"#JSGF V1.0;\ngrammar dialplan;\npublic <utterance> = {alternatives} ;\n"


def create_stt(options: PocketSphinxOptions, call: CallContext) -> Any:
    from plugins.stt.offline import for_session
    from plugins.stt.pocketsphinx_stt import PocketSphinxSTT

    return for_session(PocketSphinxSTT(options), call)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="stt",
        name="pocketsphinx",
        factory=create_stt,
        options=PocketSphinxOptions,
        description="offline speech recognition, CMU PocketSphinx (en-us model included)",
    )
