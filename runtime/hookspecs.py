"""The plugin contract: every hook a dialplan plugin may implement.

Hooks are synchronous. Work that must be async (a network call, streaming) lives in the
objects the hooks return: provider instances, tool handlers, awaitables.

Grouped by phase: registration (once per plugin manager), templates (once per catalog
build), call (once per call).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

    from runtime.call import CallRecord, CallRequest
    from runtime.registry import RegisterProvider, RegisterTool

PROJECT_NAME = "dialplan"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- registration ----------------------------------------------------------------------


@hookspec
def register_providers(register: RegisterProvider) -> None:
    """Register STT, LLM, TTS or VAD providers.

    Call ``register(kind="llm", name="rules", factory=make_llm, options=RulesOptions)``
    once per provider. ``options`` is a pydantic model (``extra="forbid"``) validated from
    the bot's ``[llm]`` table; ``factory(options, call)`` returns a livekit-agents
    ``stt.STT`` / ``llm.LLM`` / ``tts.TTS`` / ``vad.VAD`` for one call. Registering a name
    another plugin already registered is an error naming both plugins.
    """


@hookspec
def register_tools(register: RegisterTool) -> None:
    """Register tools a bot can bind with ``[[tools]] use = "<name>"``.

    Call ``register(name="end_call", factory=make_tool, options=EndCallOptions)``;
    ``factory(options, call)`` returns a ``runtime.ToolDefinition`` for one call.
    With ``per_call=False`` the definition follows from the options alone (its handler
    gets the call when invoked): the factory runs once per bot version, with
    ``call=None``, and every call of the version shares it.
    """


# -- templates -------------------------------------------------------------------------


@hookspec
def prepare_jinja_environment(env: SandboxedEnvironment) -> None:
    """Add filters, tests or globals to the sandboxed environment prompts render in."""


# -- call ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def resolve_call(request: CallRequest) -> CallRequest | None:
    """Return a changed request (variables, overrides, bot id) for this call, or None.

    The first plugin that returns a request wins, e.g. one that asks an HTTP config
    endpoint for per-call settings.
    """


@hookspec
def call_started(call: Any) -> None:
    """A call's session is built and about to converse (``call`` is the CallContext)."""


@hookspec
def call_ended(record: CallRecord) -> None:
    """A call ended; ``record`` is final apart from post-call analysis and delivery."""


@hookspec(firstresult=True)
def store_recording(record: CallRecord, path: str) -> str | Awaitable[str] | None:
    """Store the call's recording file and return its key (or an awaitable of it, for an
    upload), or None to pass. The first plugin that returns a key wins; with none, the
    file stays where it was written and its path is the key."""


@hookspec
def deliver_result(record: CallRecord) -> Awaitable[None] | None:
    """Deliver a finished call record somewhere (a queue, a CRM). May return an awaitable."""
