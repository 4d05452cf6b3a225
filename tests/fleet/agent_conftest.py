"""The ``agent_dispatcher`` fixture, for conftests that test a real livekit-agents worker.

from tests.fleet.agent_conftest import agent_dispatcher  # noqa: F401
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from tests.fleet.agent_dispatcher import AgentDispatcher

TEST_API_KEY = "APIdialplantest"
# at least 32 bytes: PyJWT warns about shorter HMAC keys (see agent_dispatcher)
TEST_API_SECRET = "dialplan-test-secret-0123456789abcdef"

# AgentServer.run() writes its url and credentials into os.environ (for its job
# processes), and may point SSL_CERT_FILE at certifi; none of it may outlive the test
WORKER_WRITTEN_ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "SSL_CERT_FILE")


@contextmanager
def restored_environ(names: tuple[str, ...]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
async def agent_dispatcher() -> AsyncIterator[AgentDispatcher]:
    """A started dispatcher on 127.0.0.1; workers use ``.url`` and the TEST_API_* pair."""
    with restored_environ(WORKER_WRITTEN_ENV):
        async with AgentDispatcher(api_key=TEST_API_KEY, api_secret=TEST_API_SECRET) as dispatcher:
            yield dispatcher
