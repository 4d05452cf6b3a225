"""Shared plumbing of the cloud providers (`deepgram`, `openai`, `cartesia`, `elevenlabs`):
thin wrappers over the official ``livekit-plugins-*`` packages, installed as extras.

- `CloudProvider.require()` imports the vendor's livekit plugin or raises `MissingExtra`
  with the install command;
- `CloudProvider.api_key_field()` declares the ``api_key`` option: a ``"${env:NAME}"``
  secret that defaults to the vendor's usual variable;
- `CloudProvider.api_key()` reads it when a call is built, with an error naming the variable;
- `check_known()` checks a name against the vendor's known names, with a suggestion.

The registration modules import this one, so it must stay cheap: no livekit here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from runtime.errors import CallSetupError, MissingExtra, suggest
from runtime.secrets import SecretRef

# a dated snapshot of a model: "sonic-3-2025-10-27", "gpt-4o-mini-tts-2025-12-15"
_SNAPSHOT = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class CloudProvider:
    """One provider over a ``livekit-plugins-<vendor>`` package: where it comes from and
    which key pays for it."""

    kind: str  # "stt" or "tts"
    name: str  # the provider name in bot files, "deepgram"
    label: str  # "Deepgram", for messages
    module: str  # "livekit.plugins.deepgram"
    package: str  # "livekit-plugins-deepgram"
    extra: str  # "deepgram", as in `pip install 'dialplan[deepgram]'`
    key_env: str  # the variable the vendor's own SDK reads, e.g. "DEEPGRAM_API_KEY"

    def require(self) -> None:
        """Import the livekit plugin, or raise `MissingExtra` saying how to install it.

        Only a missing plugin (or livekit itself) means a missing extra; an installed plugin
        whose own import fails raises as it is."""
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            missing = exc.name or ""
            if not missing or not (self.module == missing or self.module.startswith(missing + ".")):
                raise
            error = MissingExtra(self.name, self.package, self.extra)
            # `pip` is often not the environment's pip (uv environments have none)
            error.args = (
                f"{error} (with uv: `uv add 'dialplan[{self.extra}]'` in your project, or "
                "`uv sync --all-extras` in a dialplan checkout)",
            )
            raise error from exc

    def api_key_field(self) -> Any:
        """The ``api_key`` option: ``"${env:NAME}"``, by default the vendor's variable."""
        return Field(
            SecretRef(self.key_env),
            description=f'{self.label} API key, only as "${{env:NAME}}"; '
            f"by default the {self.key_env} environment variable",
        )

    def api_key(self, ref: SecretRef) -> str:
        """The key's value, read now: when the call is built, never at validation."""
        value = ref.get_or_none()
        if value is None:
            raise CallSetupError(
                f"{self.kind.upper()} provider {self.name!r} has no {self.label} API key: "
                f"environment variable {ref.env_name} is not set (export {ref.env_name}, or "
                f'point `api_key = "${{env:NAME}}"` in the bot\'s [{self.kind}] table at '
                "the variable that holds the key)"
            )
        return value


def check_known(value: str, known: Collection[str], *, what: str) -> str:
    """``value`` if it is one of ``known`` (or a dated snapshot of one, like
    ``sonic-3-2025-10-27``); otherwise a ValueError with a suggestion and the list."""
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if value in known:
        return value
    snapshot = _SNAPSHOT.match(value)
    if snapshot and snapshot.group("base") in known:
        return value
    raise ValueError(f"unknown {what} {value!r}; {suggest(value, sorted(known), what=what + 's')}")
