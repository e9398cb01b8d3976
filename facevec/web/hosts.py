"""Which names the server answers to: the defence against DNS rebinding.

A page of another site cannot read this server's answers (no CORS), unless its own
name is made to point here: ``evil.example`` resolves to the attacker's machine, the
page loads, then the name is re-resolved to 127.0.0.1 and the page's requests reach
this server as same-origin requests, with ``Host: evil.example``. So every request
must name the server by a name it was told it has:

- an IP address it listens on; for a loopback bind also ``localhost`` and the other
  loopback address; for an all-interfaces bind (``0.0.0.0``, ``::``) any IP address
  (an address is no name an attacker can re-point) and this machine's host name;
- a name it listens on (``--host NAME``), and every ``--allowed-host``
  (``*.example.org`` for its subdomains, ``*`` for any name: the check is then off).

The port is not compared (a proxy may forward another); the name is, case-insensitive
and without a trailing dot. Any other Host, or none, gets 400 before the request
reaches a route.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InvalidParameterError

LOOPBACK = ("localhost", "127.0.0.1", "::1")
ALL_INTERFACES = ("0.0.0.0", "::", "")


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def normal_name(name: str) -> str:
    """A host name as compared: lower case, no brackets around IPv6, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") else name


def name_of(host_header: str) -> str | None:
    """The name in a Host header (``name``, ``name:port``, ``[v6]``, ``[v6]:port``);
    None when it is not one."""
    value = host_header.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        name, port = value[1:end], value[end + 2 :]
    elif value.count(":") > 1:  # an IPv6 address without brackets is no valid Host
        return None
    else:
        name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    name = normal_name(name)
    return name or None


class AllowedHosts:
    """The names a server bound to `bind` answers to, with the `extra` ones."""

    def __init__(self, bind: str, extra: Iterable[str] = ()) -> None:
        bind = normal_name(bind)
        names: set[str] = set()
        patterns: list[str] = []
        self.any_name = False
        self.any_address = bind in ALL_INTERFACES
        address = _address(bind)
        if self.any_address:
            names.update(LOOPBACK)
            names.update(normal_name(n) for n in {socket.gethostname(), socket.getfqdn()} if n)
        elif bind == "localhost" or (address is not None and address.is_loopback):
            names.update((*LOOPBACK, bind))
        else:
            names.add(bind)
        for given in extra:
            name = normal_name(given)
            if name == "*":
                self.any_name = True
            elif name.startswith("*.") and len(name) > 2:
                patterns.append(name[1:])  # ".example.org"
            elif not name or "*" in name or "/" in name or " " in name:
                raise InvalidParameterError(
                    f"allowed host {given!r} is not a host name, an address, *.DOMAIN or *"
                )
            else:
                names.add(name)
        self.names = frozenset(names)
        self.suffixes = tuple(patterns)

    def allows(self, name: str | None) -> bool:
        if name is None:
            return False
        if self.any_name or name in self.names:
            return True
        if self.any_address and _address(name) is not None:
            return True
        return any(name.endswith(suffix) for suffix in self.suffixes)

    def described(self) -> str:
        shown = sorted(self.names) + [f"*{suffix}" for suffix in self.suffixes]
        if self.any_address:
            shown.append("any IP address")
        return ", ".join(shown)


class HostCheck:
    """ASGI middleware: a request whose Host header is not an allowed name gets 400."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed.any_name:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host")
        text = header.decode("latin-1") if header is not None else None
        if self.allowed.allows(name_of(text) if text is not None else None):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if text is None:
            detail = "the request names no host (a Host header is required)"
        else:
            detail = (
                f"this server does not answer to the host {text!r}: it answers to "
                f"{self.allowed.described()}; if that is its name, start facevec serve "
                "with --allowed-host NAME"
            )
        response = JSONResponse({"error": "HTTPError", "detail": detail}, 400)
        await response(scope, receive, send)
