"""Two `dialplan start` workers on one LiveKit server: capacity spills calls over to the
other worker, a SIGTERM drains (the call in progress finishes and is recorded, new calls
go elsewhere), and `--watch` gives the next call the edited bot."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from phonelab.baresip import Phone
from phonelab.listening import assert_heard, wait_for_lines
from phonelab.processes import Process
from phonelab.project import Project
from phonelab.stack import LiveKitStack
from phonelab.voices import caller_line
from tests.phone.conftest import FLEET_TOML, GREETING, INBOUND_NUMBER, PHONE_IP

ONE_CALL_EACH = FLEET_TOML.replace("max_concurrent_calls = 2", "max_concurrent_calls = 1")


@contextmanager
def phones(tmp_path: Path, count: int, first: int) -> Iterator[list[Phone]]:
    """Phones with numbers +155501<first>, +155501<first + 1> …: a test's own callers."""
    with ExitStack() as stack:
        started = []
        for index in range(count):
            phone = Phone(
                tmp_path,
                f"+155501{first + index}",
                ip=PHONE_IP,
                sip_port=5100 + 2 * index,
                control_port=4460 + index,
            )
            phone.start()
            stack.callback(phone.stop)
            started.append(phone)
        yield started


@pytest.fixture(scope="module")
def fleet(
    stack: LiveKitStack, tmp_path_factory: pytest.TempPathFactory, project: Project
) -> Iterator[list[Project]]:
    """Two workers of one call each, in two directories (each has its own outbox)."""
    project.write_config(ONE_CALL_EACH)
    other = Project(tmp_path_factory.mktemp("second"), stack, ONE_CALL_EACH)
    project.start_worker(name="worker-a")
    other.start_worker(name="worker-b")
    try:
        yield [project, other]
    finally:
        project.stop_workers()
        other.stop_workers()


def answered_by(fleet: list[Project], caller: str) -> list[int]:
    return [
        index
        for index, project in enumerate(fleet)
        for record in project.records()
        if record["caller"] == caller
    ]


def test_calls_beyond_one_workers_capacity_go_to_the_other(
    fleet: list[Project], tmp_path: Path
) -> None:
    with phones(tmp_path, 2, first=20) as (first, second):
        for phone in (first, second):
            phone.dial(fleet[0].stack.sip_uri(INBOUND_NUMBER))
        for phone in (first, second):
            phone.wait_event("CALL_ESTABLISHED", timeout=30)
            greeting = wait_for_lines(phone.heard, 1, timeout=30)[0]
            assert_heard(GREETING, greeting.pcm)
        for phone in (first, second):
            phone.hang_up()
        for project in fleet:
            project.wait_records(1, lambda r: r["caller"] in (first.user, second.user))
    assert sorted(answered_by(fleet, first.user) + answered_by(fleet, second.user)) == [0, 1]


def test_sigterm_lets_the_call_finish_and_new_calls_go_elsewhere(
    fleet: list[Project], tmp_path: Path
) -> None:
    question = caller_line("Where are you located?", tmp_path / "where.wav")
    wait_available(fleet)
    workers = [worker for project in fleet for worker in project.workers]
    linked = {worker.pid: calls_linked(worker) for worker in workers}
    with phones(tmp_path, 2, first=30) as (staying, later):
        staying.dial(fleet[0].stack.sip_uri(INBOUND_NUMBER))
        staying.wait_event("CALL_ESTABLISHED", timeout=30)
        wait_for_lines(staying.heard, 1, timeout=30)
        (busy,) = [w for w in workers if calls_linked(w) > linked[w.pid]]
        owner = next(p for p in fleet if busy in p.workers)
        busy.signal(signal.SIGTERM)
        busy.wait_for_output("draining worker", timeout=10)

        staying.play(question)  # the draining worker still serves its call
        answer = wait_for_lines(staying.heard, 2, timeout=45)[1]
        assert_heard("harbour street", answer.pcm, at_least=0.5)

        later.dial(fleet[0].stack.sip_uri(INBOUND_NUMBER))  # the other worker takes it
        later.wait_event("CALL_ESTABLISHED", timeout=30)
        assert_heard(GREETING, wait_for_lines(later.heard, 1, timeout=30)[0].pcm)
        assert busy.running()
        staying.hang_up()
        later.hang_up()
        assert busy.wait(timeout=60) == 0  # drained, stored, gone: a clean exit
        (record,) = owner.wait_records(1, lambda r: r["caller"] == staying.user)
        assert record["disconnected_by"] == "customer"
        assert any("harbour street" in e["text"].lower() for e in record["transcript"])
        others = [p for p in fleet if p is not owner]
        assert others[0].wait_records(1, lambda r: r["caller"] == later.user)
    busy.stop()  # exited already: this closes its log
    owner.workers.remove(busy)


def wait_available(fleet: list[Project]) -> None:
    """Until every worker has told LiveKit it has room again. A worker reports its load
    every 0.5 s, and LiveKit does not retry a dispatch every worker refused: a call that
    arrives while the workers still say they are full rings unanswered."""
    for project in fleet:
        for worker in project.workers:
            worker.wait_until(
                lambda w=worker: (
                    w.output().count("marking as available")
                    >= w.output().count("marking as unavailable")
                ),
                "its report of free capacity",
                timeout=20,
            )


def calls_linked(worker: Process) -> int:
    """Calls whose audio a worker has linked so far (livekit logs each)."""
    return worker.output().count("RoomIO linked to participant")


def test_watch_gives_the_next_call_the_edited_bot(fleet: list[Project], tmp_path: Path) -> None:
    for project in fleet:
        project.stop_workers()
    project = fleet[0]
    worker = project.start_worker("--watch", name="watching")
    bot = project.dir / "bots" / "receptionist.toml"
    mark = len(worker.output())
    bot.write_text(
        bot.read_text().replace(
            'greeting = "Hi {{ caller_name }}, thanks for calling {{ clinic_name }}.',
            'greeting = "Good morning, you have reached the new front desk of {{ clinic_name }}.',
        )
    )
    worker.wait_for_output("[reload] ", timeout=30, after=mark)  # in effect once logged
    with phones(tmp_path, 1, first=40) as (caller,):
        caller.dial(project.stack.sip_uri(INBOUND_NUMBER))
        caller.wait_event("CALL_ESTABLISHED", timeout=30)
        greeting = wait_for_lines(caller.heard, 1, timeout=30)[0]
        caller.hang_up()
    assert_heard("you have reached the new front desk", greeting.pcm)
