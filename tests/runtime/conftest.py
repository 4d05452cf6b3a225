"""Fixtures for the runtime tests: a real PostgreSQL server for the results-store tests."""

from tests.pg_server import pg_dsn, postgres_server  # noqa: F401 (fixtures)
