"""Who is at the other end: the client's address, from the TCP peer or a trusted proxy.

Every deployment puts a reverse proxy in front, and the proxy is the TCP peer of every
request; it names the real client in ``X-Forwarded-For`` or ``Forwarded``. Those headers
are whatever the sender wrote, so they count only when the peer is one of the
operator's ``api.trusted_proxies`` (none by default). Then the hops are read from the
right (each proxy appends the address it saw): the first hop that is not a trusted
proxy is the client; anything to its left was written by the client and is ignored.

The address names a request's *source*: what wrong tokens and sign-ins are counted
against (an IPv6 client by its /64, which one host usually holds whole) and what the
audit trail records.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ..settings import ApiSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Hops read from the right of a forwarding header; a longer chain is cut.
MAX_HOPS = 32
#: What a request's source is when its peer has no IP address (a Unix socket).
UNKNOWN = "unknown"


def parse_address(text: str) -> IPAddress | None:
    """An address as a forwarding header or a peer gives it (quoted, bracketed, with a
    port or not), or None when it is not one (``unknown``, an obfuscated name, junk)."""
    text = text.strip().strip('"').strip()
    if len(text) > 64:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def source_key(address: str) -> str:
    """What a source is counted as: an IPv4 address, or an IPv6 address's /64."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else UNKNOWN


class TrustedProxies:
    """The operator's trusted proxies, and the client address they name."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(e.strip(), strict=False) for e in entries]

    def trusts(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)

    def client(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]
               ) -> tuple[str, str | None]:
        """The client's address, and the scheme the trusted proxy says it used (or None).

        ``headers`` are the request's raw ASGI headers.
        """
        address = parse_address(peer) if peer else None
        if address is None:
            return UNKNOWN, None
        if not self.networks or not self.trusts(address):
            return str(address), None
        hops, scheme = _hops(headers)
        for hop in reversed(hops[-MAX_HOPS:]):
            parsed = parse_address(hop)
            if parsed is None:  # the proxy did not know: the last address known
                break
            address = parsed
            if not self.trusts(parsed):
                break
        return str(address), scheme


def _hops(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[str], str | None]:
    """The hops of ``X-Forwarded-For`` (when there is one) or else ``Forwarded``, left
    to right, and the scheme named with them."""
    forwarded_for, forwarded, proto = [], [], None
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded_for += value.decode("latin-1").split(",")
        elif name == b"forwarded":
            forwarded += value.decode("latin-1").split(",")
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").strip().lower()
    if forwarded_for:
        return forwarded_for, proto if proto in ("http", "https") else None
    hops, scheme = [], None
    for element in forwarded:  # for=...;proto=...;by=... (RFC 7239)
        pairs = dict((k.strip().lower(), v) for k, _, v in
                     (pair.partition("=") for pair in element.split(";")))
        if "for" in pairs:
            hops.append(pairs["for"])
        scheme = pairs.get("proto", scheme or "").strip().strip('"').lower() or None
    return hops, scheme if scheme in ("http", "https") else None


class Peers:
    """ASGI middleware: every HTTP request and WebSocket sees its real client in
    ``scope["client"]`` (and the scheme a trusted proxy reports), as resolved by
    :class:`TrustedProxies`."""

    def __init__(self, app: Any, trusted: list[str]) -> None:
        self.app, self.proxies = app, TrustedProxies(trusted)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            client, scheme = self.proxies.client(peer[0] if peer else None, scope["headers"])
            scope["client"] = (client, peer[1] if peer else 0)
            if scheme is not None:
                scope["scheme"] = scheme if scope["type"] == "http" else \
                    scheme.replace("http", "ws")
        await self.app(scope, receive, send)


def uvicorn_options(api: ApiSettings) -> dict[str, Any]:
    """What ``raytasks serve`` gives uvicorn: trust forwarding headers from the same
    proxies as the app (uvicorn's default trusts any from loopback, where a proxy on the
    same host and every local user alike connect from)."""
    trusted = [entry.strip() for entry in api.trusted_proxies]
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}
