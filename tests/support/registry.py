"""Registry changes made the way people make them, plus the environments the plugin tests need.

- `ui_*`: the MLflow UI's own requests (`ajax-api/2.0/...`), sent with plain HTTP.
- `light_versions`: model versions without artifacts (an `s3://` source the server accepts as is),
  for tests that watch notifications rather than serve models: milliseconds, not seconds.
- `fake_dns_env`: make one hostname resolve to several loopback addresses inside a child Python
  process (the `mlflow server`), as a Kubernetes headless Service name does, without /etc/hosts.
- `postgres_database`: a fresh PostgreSQL database for one test module, dropped afterwards, on
  the session's server (tests/support/postgres.py: the system one or an embedded one).
"""

from __future__ import annotations

import json
import os
import secrets
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.support.postgres import PostgresServer


def _post(url: str, path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    response = requests.request(method, f"{url}/ajax-api/2.0/mlflow/{path}", json=body, timeout=30)
    if response.status_code != 200:
        raise AssertionError(f"{method} {path} {body} -> {response.status_code} {response.text}")
    return response.json()


def ui_transition(url: str, name: str, version: str, stage: str,
                  archive_existing: bool = False) -> dict[str, Any]:
    """What the UI's stage dropdown sends (the "new model registry UI" toggle off)."""
    return _post(url, "model-versions/transition-stage",
                 {"name": name, "version": str(version), "stage": stage,
                  "archive_existing_versions": archive_existing})


def ui_set_alias(url: str, name: str, alias: str, version: str) -> None:
    _post(url, "registered-models/alias", {"name": name, "alias": alias, "version": str(version)})


def ui_delete_alias(url: str, name: str, alias: str) -> None:
    _post(url, "registered-models/alias", {"name": name, "alias": alias}, method="DELETE")


def light_versions(url: str, name: str, count: int) -> list[str]:
    """Create a registered model with `count` artifact-less versions; return their numbers."""
    _post(url, "registered-models/create", {"name": name})
    return [str(_post(url, "model-versions/create",
                      {"name": name, "source": f"s3://hotswap-tests/{name}/{i}"})
                ["model_version"]["version"]) for i in range(count)]


def fake_dns_env(workdir: Path, names: dict[str, list[str]]) -> dict[str, str]:
    """Environment for a child Python process in which each name resolves to its addresses.

    A `sitecustomize` module on PYTHONPATH wraps `socket.getaddrinfo` for those names only: the
    plugin's real resolution path runs unchanged, the way a headless Service's DNS answers.
    """
    directory = workdir / "fake-dns"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(textwrap.dedent(f"""\
        import socket

        _NAMES = {json.dumps(names)}
        _real_getaddrinfo = socket.getaddrinfo


        def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            if isinstance(host, bytes):
                host = host.decode()
            if host in _NAMES:
                port = int(port or 0)
                return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
                        for a in _NAMES[host]]
            return _real_getaddrinfo(host, port, family, type, proto, flags)


        socket.getaddrinfo = _getaddrinfo
        """))
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


@contextmanager
def postgres_database(server: PostgresServer) -> Iterator[str]:
    """Create `hotswap_test_<random>` on `server` (the session's `postgres` fixture), yield its
    SQLAlchemy URI (psycopg2); drop it afterwards."""
    name = f"hotswap_test_{secrets.token_hex(4)}"
    admin = server.connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield server.sqlalchemy_uri(name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
