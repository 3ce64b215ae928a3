"""Webhooks: signed HTTP POSTs of the event JSON, retried with backoff, target-checked.

Body: the event as JSON (``event_id``, ``kind``, ``task_id``, ``status``,
``previous``, ``attempt``, ``priority``, ``task_type``, ``owner``, ``error``,
``at``; progress events carry ``percentage``, ``message``, ``stage``).
Headers: ``X-Raytasks-Event-Id`` (de-duplicate on it: delivery is at least
once), ``X-Raytasks-Timestamp`` and ``X-Raytasks-Signature: sha256=<hex>``, the
HMAC-SHA256 with the target's secret of ``"<timestamp>.<body>"``.

The host is resolved once per post, by the target check, and the post connects
only to the addresses that check vetted: a DNS answer that changes between the
check and the connection (DNS rebinding) cannot move the post to a denied
address. The ``Host`` header names the URL's host; for https, the handshake sends
it as SNI and the certificate is verified against it. The resolver is a
parameter (:data:`Resolve`, the system's by default), so tests can play the
attacker's DNS server.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import NotificationError
from ..settings import NotifySettings, WebhookTarget
from .rules import ChannelDown, RuleFilter, Undeliverable

SIGNATURE_HEADER = "X-Raytasks-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver runs: constant-time comparison of the signature header."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, by every standard embedding.

    IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64
    (``64:ff9b::/96``), 6to4 (``2002::/16``) and Teredo (``2001::/32``: the server,
    and the client, stored XOR ``0xffffffff``). A deny list of IPv4 networks must
    see these, or ``[::ffff:169.254.169.254]`` walks past ``169.254.0.0/16``.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    value = int(address)
    if 1 < value < 2**32:  # IPv4-compatible; :: and ::1 are IPv6's own
        found.append(ipaddress.IPv4Address(value))
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client) with the client un-XORed
    return found


Sockaddr = tuple[int, tuple[Any, ...]]
"""An address to connect to: ``(family, sockaddr)`` as :func:`socket.getaddrinfo` gives them."""

Resolve = Callable[[str, int], Sequence[Sockaddr]]
"""Looks up ``(ascii_host, port)`` for TCP; raises :class:`socket.gaierror` when it cannot."""


def resolve_system(host: str, port: int) -> list[Sockaddr]:
    """The system resolver (:func:`socket.getaddrinfo`), TCP addresses in its order."""
    return [(int(info[0]), tuple(info[4]))
            for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


_DEFAULT_PORTS = {"http": http.client.HTTP_PORT, "https": http.client.HTTPS_PORT}


@dataclass(frozen=True)
class VettedTarget:
    """A webhook URL that passed :func:`check_target`, and where a post to it may connect.

    ``host`` is the URL's host in lower case, IDNA-encoded, without a trailing dot:
    what the ``Host`` header names and TLS verifies. ``sockaddrs`` are the resolved
    ``(family, sockaddr)`` pairs the check passed, in resolution order.
    """

    scheme: str
    host: str
    port: int
    sockaddrs: tuple[Sockaddr, ...]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The vetted ``(ip, port)`` pairs, in resolution order."""
        return [(str(sockaddr[0]), int(sockaddr[1])) for _, sockaddr in self.sockaddrs]


def check_target(url: str, settings: NotifySettings,
                 resolve: Resolve = resolve_system) -> VettedTarget:
    """Refuse webhook URLs that point at cloud metadata services or outside the allow list.

    Every address ``resolve`` gives for the host is checked, and so is every IPv4
    address embedded in an IPv6 one (:func:`embedded_ipv4`); one denied address
    refuses the URL.

    Returns:
        the host, port and the addresses that passed; connect to those only, since
        resolving the host again may give another answer (DNS rebinding).

    Raises:
        NotificationError: saying which rule refused the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotificationError(f"webhook URL {url!r} must be http(s)://host/...")
    if parts.username is not None:
        raise NotificationError(f"webhook URL for {parts.hostname!r} must not carry a user "
                                "name or password (receivers check the signature instead)")
    host = parts.hostname.lower().rstrip(".")
    if settings.allow_hosts and host not in settings.allow_hosts:
        raise NotificationError(f"webhook host {host!r} is not in notify.allow_hosts")
    if host in settings.deny_hosts:
        raise NotificationError(f"webhook host {host!r} is denied (notify.deny_hosts)")
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[parts.scheme]
    try:
        ascii_host = host.encode("idna").decode("ascii")  # what getaddrinfo looks up
        sockaddrs = tuple((int(family), tuple(sockaddr))
                          for family, sockaddr in resolve(ascii_host, port))
    except (socket.gaierror, UnicodeError) as exc:
        raise NotificationError(f"webhook host {host!r} does not resolve: {exc}") from None
    if not sockaddrs:
        raise NotificationError(f"webhook host {host!r} does not resolve to any address")
    networks = [ipaddress.ip_network(n) for n in settings.deny_networks]
    for _, sockaddr in sockaddrs:
        resolved = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        for address in [resolved, *embedded_ipv4(resolved)]:
            for network in networks:
                if address.version == network.version and address in network:
                    raise NotificationError(
                        f"webhook host {host!r} resolves to {resolved}"
                        + (f" (IPv4 {address} inside)" if address != resolved else "")
                        + f", inside denied network {network} (cloud metadata and other "
                        "internal services)")
    return VettedTarget(parts.scheme, ascii_host, port, sockaddrs)


def _connect(target: VettedTarget, timeout_s: float) -> socket.socket:
    """A TCP connection to the first vetted address that accepts, tried in resolution order.

    Raises:
        OSError: the first address's error when none accepts (as
            :func:`socket.create_connection` does).
    """
    errors: list[OSError] = []
    for family, sockaddr in target.sockaddrs:
        sock: socket.socket | None = None
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout_s)
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
    raise errors[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a vetted target: the ``Host`` header names the host, the TCP connection
    goes to a vetted address, and the host is never resolved again."""

    def __init__(self, target: VettedTarget, timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self.target, self.timeout_s = target, timeout_s

    def connect(self) -> None:
        self.sock = _connect(self.target, self.timeout_s)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to a vetted target: TCP to a vetted address, while the TLS handshake sends
    the host as SNI and verifies the certificate against it (the default context)."""

    default_port = http.client.HTTPS_PORT

    def __init__(self, target: VettedTarget, timeout_s: float) -> None:
        super().__init__(target, timeout_s)
        self.tls = ssl.create_default_context()
        self.tls.set_alpn_protocols(["http/1.1"])  # as http.client's own default

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.target.host)


class WebhookChannel:
    """Posts events to one target. A refused target dead-letters the event at once; an
    error status is retried with backoff by the dispatcher; an unreachable receiver
    pauses the channel. Redirects are never followed: one could point past the target
    check (at a metadata address), so a 3xx is an error status like any other.

    ``resolve`` looks the host up, once per post (:func:`check_target`); the post
    connects only to what that lookup gave and the check passed.
    """

    def __init__(self, target: WebhookTarget, settings: NotifySettings,
                 resolve: Resolve = resolve_system) -> None:
        self.target = target
        self.settings = settings
        self.resolve = resolve
        self.name = "webhook:" + target.url
        self.filter = RuleFilter(target)
        self.max_attempts = target.max_attempts
        self.backoff_base_s, self.backoff_max_s = target.backoff_base_s, target.backoff_max_s

    def targets(self, payload: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
        return [self.target.url], []

    def send(self, payload: dict[str, Any], target: str, now: float) -> str:
        """Post once, to an address the target check vetted; ``"delivered"``, or raise.

        Raises:
            Undeliverable: the target check refused the URL.
            ChannelDown: the receiver is unreachable.
            RuntimeError: the receiver answered with an error status.
        """
        try:
            vetted = check_target(self.target.url, self.settings, self.resolve)
        except NotificationError as exc:
            raise Undeliverable(str(exc)) from None
        try:
            status = self._post(vetted, payload)
        except OSError as exc:
            raise ChannelDown(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise RuntimeError(f"HTTP {status}")
        return "delivered"

    def detail(self, payload: dict[str, Any], outcome: str) -> str:
        return ""

    def flush(self, now: float) -> list[dict[str, Any]]:
        return []

    def _post(self, vetted: VettedTarget, payload: dict[str, Any]) -> int:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        stamp = str(int(time.time()))
        parts = urlsplit(self.target.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection_class = (_PinnedHTTPSConnection if vetted.scheme == "https"
                            else _PinnedHTTPConnection)
        connection = connection_class(vetted, self.target.timeout_s)
        try:
            connection.request("POST", path, body=body, headers={
                "Content-Type": "application/json",
                "User-Agent": "raytasks-webhook/1",
                "Connection": "close",
                "X-Raytasks-Event-Id": str(payload["event_id"]),
                "X-Raytasks-Timestamp": stamp,
                SIGNATURE_HEADER: sign(self.target.secret.get_secret_value(), stamp, body),
            })
            return int(connection.getresponse().status)
        finally:
            connection.close()
