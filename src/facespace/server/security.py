"""Which requests the server answers at all: the Host check and the Origin check.

A web page the user visits can send requests to a server on their machine: a form POST needs
no permission from it, and a DNS name that the page's owner points at 127.0.0.1 (DNS
rebinding) makes the server look like the page's own. So, before anything else:

- a request whose ``Host`` header is not an allowed host is refused: 400 ``bad_host``;
- a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, without one, the
  origin of its ``Referer``) is neither the server's own (its scheme and the ``Host`` it was
  asked by) nor an allowed origin is refused: 403 ``bad_origin``. Requests without either
  header (curl, httpx, scripts) are not browser requests from another site and pass.

An allowed host is a name (``localhost``, ``[::1]``, ``faces.example.org``) that matches on
any port, or ``name:port`` that matches on that port only; ``*`` allows any. An allowed origin
is ``scheme://host[:port]``; ``*`` allows any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class Security:
    """The hosts the server answers to and the origins, besides its own, it takes changes from."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def for_server(cls, host: str, port: int, allowed_hosts: Iterable[str] = (),
                   allowed_origins: Iterable[str] = ()) -> "Security":
        """The loopback names and ``host`` (the address listened on), each at ``port``, and any others."""
        own = dict.fromkeys(f"{name}:{port}" for name in (*LOOPBACK_HOSTS, _bracketed(host)))
        return cls(tuple(own) + tuple(allowed_hosts), tuple(allowed_origins))

    def host_allowed(self, host: str, scheme: str = "http") -> bool:
        name, port = _split_host(host, scheme)
        for entry in self.allowed_hosts:
            if entry == "*":
                return True
            allowed_name, allowed_port = _split_host(entry, None)
            if name == allowed_name and allowed_port in (None, port):
                return True
        return False

    def origin_allowed(self, origin: str, host: str, scheme: str = "http") -> bool:
        origin = _normal_origin(origin)
        if origin == _normal_origin(f"{scheme}://{host}"):
            return True
        return any(entry == "*" or _normal_origin(entry) == origin for entry in self.allowed_origins)

    def refusal(self, method: str, headers: Headers, scheme: str = "http") -> tuple[int, str, str] | None:
        """(status, type, message) refusing this request, or None to answer it."""
        host = headers.get("host")
        if not host or not self.host_allowed(host, scheme):
            return 400, "bad_host", (f"this server does not answer to the host {host!r} "
                                     "(start it with --allowed-hosts to add names)")
        if method.upper() not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        if origin is None and headers.get("referer"):
            parts = urlsplit(headers["referer"])
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin is not None and not self.origin_allowed(origin, host, scheme):
            return 403, "bad_origin", (f"requests from the web origin {origin!r} may not change this server "
                                       "(start it with --allowed-origins to allow one)")
        return None


class SecurityMiddleware:
    """ASGI middleware refusing, before any other work, the requests :meth:`Security.refusal` refuses."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app, self.security = app, security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.security.refusal(scope["method"], Headers(scope=scope), scope.get("scheme", "http"))
            if refused is not None:
                await error_response(*refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _bracketed(host: str) -> str:
    """An IPv6 address as it stands in a Host header: ``::1`` -> ``[::1]``."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split_host(host: str, scheme: str | None) -> tuple[str, str | None]:
    """(name, port) of ``host[:port]``, lower-cased; a missing port is the scheme's default (None without one)."""
    host = host.strip().lower()
    name, sep, port = host.rpartition(":")
    if not sep or (":" in name and not name.endswith("]")):
        name, port = host, ""  # no port: an IPv6 literal's own colons are not one
    return name, port or _DEFAULT_PORTS.get(scheme or "")


def _normal_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, without a default port or a trailing slash."""
    parts = urlsplit(origin.strip().lower().rstrip("/"))
    if not parts.scheme or not parts.netloc:
        return origin.strip().lower()  # "null" and the like: compared as they are
    name, port = _split_host(parts.netloc, parts.scheme)
    default = _DEFAULT_PORTS.get(parts.scheme)
    return f"{parts.scheme}://{name}" + (f":{port}" if port and port != default else "")
