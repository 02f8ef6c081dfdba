"""Where a notification goes: a receiver URL split into what a connection needs, and the
addresses its hostname resolves to (the replicas behind a Kubernetes headless Service)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import urllib3

from mlflow_hotswap_plugin.settings import redact

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, one family only: IPv4 if it has any, else IPv6.

    One family because a dual-stack name lists each replica once per family, and a receiver
    listening on one of them would otherwise be notified twice or fail once per change.
    """
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET]
    v6 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 or v6))


@dataclass(frozen=True)
class Target:
    """A receiver URL, split into what the connection needs. Its repr shows no credentials."""

    url: str = field(repr=False)
    scheme: str
    host: str
    port: int
    host_header: str
    path: str = field(repr=False)
    auth_header: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"no host in {redact(url)!r}")  # Settings checks this first
        scheme = parts.scheme
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if parts.port in (None, default_port) else f"{bracketed}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        auth = None
        if parts.username is not None:
            basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = urllib3.util.make_headers(basic_auth=basic)["authorization"]
        return cls(url, scheme, host, port, host_header, path, auth)

    @property
    def safe_url(self) -> str:
        return redact(self.url)


def addresses(target: Target, resolver: Resolver, limit: int) -> list[str]:
    """The addresses to notify for `target`, at most `limit` of them.

    Raises OSError (or UnicodeError, for a name IDNA cannot encode) when the name does not
    resolve, or resolves to nothing (a headless Service with no ready pod).
    """
    found = resolver(target.host, target.port)
    if not found:
        raise OSError(f"{target.host} resolves to no address")
    if len(found) > limit:
        # Loud: the replicas past the limit only hear of a change at their next poll.
        logger.warning("mlflow-hotswap: %s resolves to %d addresses, more than "
                       "HOTSWAP_MAX_ADDRESSES=%d: %d replica(s) are NOT notified", target.host,
                       len(found), limit, len(found) - limit)
    return found[:limit]
