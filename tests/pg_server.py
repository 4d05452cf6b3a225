"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` into a temporary
directory, ``postgres`` on 127.0.0.1 with a free port (its unix socket in that directory),
stopped and removed at the end. No mocks: the results-store tests talk to the real thing.

``start_postgres``/``stop_postgres`` are plain functions (bench/pg_outbox.py uses them);
the fixtures on top give each test session one server and each test a fresh database.

The server binaries come from Debian's ``postgresql`` package (``make postgres`` installs
it). initdb and postgres refuse to run as root, so as root they run as the ``postgres``
system user, which then owns the temporary directory.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

SERVER_USER = "postgres"  # the database superuser initdb creates, and the system user
START_TIMEOUT_S = 30
# a test server loses nothing that matters when the machine crashes, so it need not wait
# for the disk: without fsync, initdb, CREATE DATABASE and every commit take
# milliseconds instead of a flush each
THROWAWAY_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class PostgresServer:
    directory: Path  # data/, the socket and the log live here; removed by stop_postgres
    port: int
    bin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SERVER_USER} dbname={dbname}"


def find_server_binaries() -> Path:
    """Debian keeps them in /usr/lib/postgresql/<major>/bin, off PATH; the newest wins."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name)
    )
    for directory in reversed(candidates):
        if (Path(directory) / "initdb").is_file():
            return Path(directory)
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).parent
    raise PostgresMissing(
        "the PostgreSQL server binaries (initdb, postgres) are not installed: run "
        "`make postgres`, which installs Debian's postgresql package"
    )


def start_postgres(*, parent: Path | None = None, durable: bool = False) -> PostgresServer:
    """A new cluster under ``parent`` (default: the system temp dir), running and accepting
    connections. ``durable``: keep PostgreSQL's fsync settings (for benchmarks of durable
    commits); otherwise the throwaway settings above."""
    bin_dir = find_server_binaries()
    directory = Path(tempfile.mkdtemp(prefix="dialplan-pg-", dir=parent))
    try:
        _hand_to_server_user(directory)
        _run_as_server_user(
            bin_dir / "initdb",
            *("-D", str(directory / "data"), "-U", SERVER_USER, "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-instructions"),
            *(() if durable else ("--no-sync",)),
        )
        return _start(bin_dir, directory, durable)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def stop_postgres(server: PostgresServer) -> None:
    """Stop at once (nothing in a throwaway cluster needs a checkpoint) and remove it."""
    try:
        _run_as_server_user(
            server.bin_dir / "pg_ctl", "stop", "-D", str(server.data_dir), "-m", "immediate", "-w"
        )
    finally:
        shutil.rmtree(server.directory, ignore_errors=True)


def create_database(server: PostgresServer, name: str) -> str:
    """A new, empty database; returns its DSN."""
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server.dsn(name)


def drop_database(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        # FORCE: a test that failed half-way may have left a connection open
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start(bin_dir: Path, directory: Path, durable: bool) -> PostgresServer:
    settings = ["listen_addresses=127.0.0.1", f"unix_socket_directories={directory}"]
    if not durable:
        settings.extend(THROWAWAY_SETTINGS)
    for _ in range(3):  # another process may take the free port before postgres binds it
        server = PostgresServer(directory, _free_port(), bin_dir)
        options = " ".join([f"-p {server.port}", *(f"-c {setting}" for setting in settings)])
        started = subprocess.run(
            _as_server_user(
                bin_dir / "pg_ctl",
                *("start", "-D", str(server.data_dir), "-l", str(server.log_file)),
                *("-w", "-t", str(START_TIMEOUT_S), "-o", options),
            ),
            capture_output=True,
            text=True,
        )
        if started.returncode == 0:
            return server
    log = server.log_file.read_text(errors="replace") if server.log_file.exists() else ""
    raise RuntimeError(f"postgres did not start: {started.stderr.strip()}\n{log[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _hand_to_server_user(directory: Path) -> None:
    if os.getuid() == 0:
        shutil.chown(directory, SERVER_USER, SERVER_USER)


def _as_server_user(program: Path, *args: str) -> list[str]:
    command = [str(program), *args]
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.getuid() == 0 else command


def _run_as_server_user(program: Path, *args: str) -> None:
    finished = subprocess.run(_as_server_user(program, *args), capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{program.name} failed: {finished.stderr.strip()}")


# -- pytest fixtures -------------------------------------------------------------------

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session; missing binaries fail, never skip."""
    try:
        server = start_postgres()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a database created for this test alone."""
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    dsn = create_database(postgres_server, name)
    try:
        yield dsn
    finally:
        drop_database(postgres_server, name)
