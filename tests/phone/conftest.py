"""The real phone path: livekit-server and livekit-sip built from their Go modules, Redis,
`dialplan start` workers and baresip/sipp as the phones, in a private network namespace.

Run by `make phone-tests` (part of `make test`), which builds the stack and enters the
namespace (`.ci/in-private-net`). One stack serves the whole session; each test module has
its own project directory (bots, dialplan.toml, records) and workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonelab.baresip import Phone
from phonelab.processes import LabError, Process
from phonelab.project import Project
from phonelab.stack import LiveKitStack

PHONE_IP = "10.77.0.2"  # the far end of the namespace's veth pair: "another machine"
INBOUND_NUMBER = "+15550100"
CALLER_NUMBER = "+15550111"
CALLEE_NUMBER = "+15550123"
GREETING = "Hi there, thanks for calling Bright Smile Dental. How can I help you today?"

FLEET_TOML = f"""\
[worker]
agent_name = "dialplan-lab"
bots = "bots"
max_concurrent_calls = 2
drain_timeout = "90s"
port = 0

[results]
outbox = "outbox.db"
jsonl = "records.jsonl"

[[trunks.inbound]]
name = "lab"
numbers = ["{INBOUND_NUMBER}"]

[[trunks.outbound]]
name = "lab-out"
address = "{PHONE_IP}:5080"
numbers = ["+15550199"]

[[routes]]
number = "{INBOUND_NUMBER}"
bot = "receptionist"
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.environ.get("DIALPLAN_PRIVATE_NET"):
        raise pytest.UsageError(
            "tests/phone run the real LiveKit stack inside a private network namespace: "
            "`make phone-tests` (or `.ci/in-private-net .venv/bin/pytest tests/phone`)"
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitStack]:
    with LiveKitStack(tmp_path_factory.mktemp("livekit")) as started:
        yield started


@pytest.fixture(scope="module")
def project(stack: LiveKitStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    lab = Project(tmp_path_factory.mktemp("project"), stack, FLEET_TOML)
    lab.provision()
    try:
        yield lab
    finally:
        lab.stop_workers()


@pytest.fixture(scope="module")
def worker(project: Project) -> Iterator[Process]:
    process = project.start_worker()
    yield process
    project.stop_workers()


def _phone(path: Path, user: str, **options: object) -> Iterator[Phone]:
    phone = Phone(path, user, ip=PHONE_IP, **options)  # type: ignore[arg-type]
    phone.start()
    try:
        yield phone
    finally:
        phone.stop()
        if phone.process is not None and phone.process.running():
            raise LabError(f"baresip {user} did not stop")


@pytest.fixture
def caller(tmp_path: Path) -> Iterator[Phone]:
    """A phone that places calls from CALLER_NUMBER."""
    yield from _phone(tmp_path, CALLER_NUMBER, sip_port=5070, control_port=4444)


@pytest.fixture
def callee(tmp_path: Path) -> Iterator[Phone]:
    """A phone that answers calls to CALLEE_NUMBER at once (outbound calls' far end)."""
    yield from _phone(tmp_path, CALLEE_NUMBER, sip_port=5080, control_port=4445, auto_answer=True)
