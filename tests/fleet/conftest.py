"""Fleet fixtures: a local LiveKit server API per test and a real client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit import api

from tests.fleet.agent_conftest import agent_dispatcher  # noqa: F401  (a fixture)
from tests.fleet.livekit_server import LiveKitTestServer


@pytest.fixture
async def livekit_server() -> AsyncIterator[LiveKitTestServer]:
    async with LiveKitTestServer() as server:
        yield server


@pytest.fixture
async def livekit_api(livekit_server: LiveKitTestServer) -> AsyncIterator[api.LiveKitAPI]:
    client = livekit_server.api()
    try:
        yield client
    finally:
        await client.aclose()
