"""A call server on a loopback port with the instant fake voice providers."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime.call_results import CallResults
from runtime.catalog import load_catalog
from runtime.registry import load_registry
from runtime.transports.server import CallServer, ServerConfig
from tests.conftest import REPO
from tests.voice_fakes import FakeVoicePlugin

FAKE_BOT = """
[prompt]
system = "You answer the test line."
greeting = "Hello, this is the test line."
[llm]
provider = "rules"
default = "Sorry, say that again?"
[[llm.rules]]
match = "hours"
reply = "We are open nine to five."
[[llm.rules]]
match = "bye"
tool = "end_call"
[[tools]]
use = "end_call"
goodbye = "Goodbye now."
[stt]
provider = "scripted"
lines = {lines}
[tts]
provider = "tone"
[vad]
provider = "energy"
[turn]
min_endpointing_delay = "0.2s"
"""


@pytest.fixture
def fake_bot(bot_dir: Callable[..., Path]) -> Callable[..., Path]:
    def write(lines: list[str], name: str = "line", variables: str = "") -> Path:
        """``variables``: the body of a [variables] table, e.g. 'tier = "none"'."""
        quoted = "[" + ", ".join(f'"{line}"' for line in lines) + "]"
        declared = f"\n[variables]\n{variables}\n" if variables else ""
        return bot_dir(name, FAKE_BOT.replace("{lines}", quoted) + declared)

    return write


# the fake voice for a shipped bot that names none (its own tables are left as they are)
FAKE_VOICE = """
[stt]
provider = "scripted"
lines = {lines}
[tts]
provider = "tone"
[vad]
provider = "energy"
[turn]
min_endpointing_delay = "0.2s"
"""


@pytest.fixture
def dentist_bot(tmp_path: Path) -> Callable[[list[str]], Path]:
    """The shipped dentist bot (a flow: triage -> booking -> ...) with its prompts, the
    fake voice hearing ``lines``, and its calendar under tmp_path; returns the bots dir."""

    def write(lines: list[str]) -> Path:
        bots = tmp_path / "bots"
        bots.mkdir(exist_ok=True)
        shutil.copytree(REPO / "prompts", tmp_path / "prompts", dirs_exist_ok=True)
        toml = (REPO / "bots" / "dentist.toml").read_text(encoding="utf-8")
        calendar = json.dumps(str(tmp_path / "dentist-calendar.sqlite"))
        toml = toml.replace('"var/dentist-calendar.sqlite"', calendar)
        toml += FAKE_VOICE.replace("{lines}", json.dumps(lines))
        (bots / "dentist.toml").write_text(toml, encoding="utf-8")
        return bots

    return write


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., CallServer]]:
    servers: list[CallServer] = []

    async def start(
        bots: Path,
        plugins: tuple[tuple[str, object], ...] = (),
        results: CallResults | None = None,
        **config: object,
    ) -> CallServer:
        registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin()), *plugins])
        snapshot = load_catalog(bots, registry)
        assert not snapshot.problems, snapshot.problems
        options = {"port": 0, "recordings_dir": tmp_path / "recordings", **config}
        config_ = ServerConfig(**options)  # type: ignore[arg-type]
        server = CallServer(lambda: snapshot, registry, config_, results=results)
        await server.start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()
