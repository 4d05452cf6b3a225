"""dialplan runtime: the public surface plugins import.

Importing this package is cheap: it never imports livekit or litellm.
"""

from __future__ import annotations

from runtime.call import CallContext, CallOverrides, CallRequest, RenderedPrompt
from runtime.errors import (
    BotInvalid,
    CallSetupError,
    DialplanError,
    DuplicateName,
    MissingExtra,
    PluginError,
    PluginLoadError,
    Problem,
    UnknownName,
)
from runtime.hookspecs import hookimpl
from runtime.livekit_exit import release_late_handles_quietly
from runtime.phone_numbers import NotDialable, dial_target
from runtime.record import CallEvent, CallRecord, DisconnectedBy, TranscriptEntry
from runtime.registry import NoOptions, RegisterProvider, RegisterTool
from runtime.secrets import SecretRef
from runtime.snippets import check_snippet, render_snippet, snippet_attributes, snippet_names
from runtime.speech_vocabulary import SpeechContext, regex_phrases
from runtime.tools import ToolDefinition, ToolFailure, typed_tool

# before anything creates livekit's native runtime, so its exit comes first (see the module)
release_late_handles_quietly()

__all__ = [
    "BotInvalid",
    "CallContext",
    "CallEvent",
    "CallOverrides",
    "CallRecord",
    "CallRequest",
    "CallSetupError",
    "DialplanError",
    "DisconnectedBy",
    "DuplicateName",
    "MissingExtra",
    "NoOptions",
    "NotDialable",
    "PluginError",
    "PluginLoadError",
    "Problem",
    "RegisterProvider",
    "RegisterTool",
    "RenderedPrompt",
    "SecretRef",
    "SpeechContext",
    "ToolDefinition",
    "ToolFailure",
    "TranscriptEntry",
    "UnknownName",
    "check_snippet",
    "dial_target",
    "hookimpl",
    "regex_phrases",
    "render_snippet",
    "snippet_attributes",
    "snippet_names",
    "typed_tool",
]
