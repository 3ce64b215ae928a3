"""Webhooks: signed HTTP POSTs of the event JSON, retried with backoff, target-checked.

Body: the event as JSON (``event_id``, ``kind``, ``task_id``, ``status``,
``previous``, ``attempt``, ``priority``, ``task_type``, ``owner``, ``error``,
``at``; progress events carry ``percentage``, ``message``, ``stage``).
Headers: ``X-Raytasks-Event-Id`` (de-duplicate on it: delivery is at least
once), ``X-Raytasks-Timestamp`` and ``X-Raytasks-Signature: sha256=<hex>``, the
HMAC-SHA256 with the target's secret of ``"<timestamp>.<body>"``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
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


def check_target(url: str, settings: NotifySettings) -> None:
    """Refuse webhook URLs that point at cloud metadata services or outside the allow list.

    Every address the host resolves to is checked, and so is every IPv4 address
    embedded in an IPv6 one (:func:`embedded_ipv4`).

    Raises:
        NotificationError: saying which rule refused the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotificationError(f"webhook URL {url!r} must be http(s)://host/...")
    host = parts.hostname.lower().rstrip(".")
    if settings.allow_hosts and host not in settings.allow_hosts:
        raise NotificationError(f"webhook host {host!r} is not in notify.allow_hosts")
    if host in settings.deny_hosts:
        raise NotificationError(f"webhook host {host!r} is denied (notify.deny_hosts)")
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise NotificationError(f"webhook host {host!r} does not resolve: {exc}") from None
    networks = [ipaddress.ip_network(n) for n in settings.deny_networks]
    for info in infos:
        resolved = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        for address in [resolved, *embedded_ipv4(resolved)]:
            for network in networks:
                if address.version == network.version and address in network:
                    raise NotificationError(
                        f"webhook host {host!r} resolves to {resolved}"
                        + (f" (IPv4 {address} inside)" if address != resolved else "")
                        + f", inside denied network {network} (cloud metadata and other "
                        "internal services)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could point past the target check (at a metadata address): refuse it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookChannel:
    """Posts events to one target. A refused target dead-letters the event at once; an
    error status is retried with backoff by the dispatcher; an unreachable receiver
    pauses the channel."""

    def __init__(self, target: WebhookTarget, settings: NotifySettings) -> None:
        self.target = target
        self.settings = settings
        self.name = "webhook:" + target.url
        self.filter = RuleFilter(target)
        self.max_attempts = target.max_attempts
        self.backoff_base_s, self.backoff_max_s = target.backoff_base_s, target.backoff_max_s

    def targets(self, payload: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
        return [self.target.url], []

    def send(self, payload: dict[str, Any], target: str, now: float) -> str:
        """Post once; ``"delivered"``, or raise.

        Raises:
            Undeliverable: the target check refused the URL.
            ChannelDown: the receiver is unreachable.
            RuntimeError: the receiver answered with an error status.
        """
        try:
            check_target(self.target.url, self.settings)
        except NotificationError as exc:
            raise Undeliverable(str(exc)) from None
        try:
            status = self._post(payload)
        except (OSError, urllib.error.URLError) as exc:
            raise ChannelDown(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            raise RuntimeError(f"HTTP {status}")
        return "delivered"

    def detail(self, payload: dict[str, Any], outcome: str) -> str:
        return ""

    def flush(self, now: float) -> list[dict[str, Any]]:
        return []

    def _post(self, payload: dict[str, Any]) -> int:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        stamp = str(int(time.time()))
        request = urllib.request.Request(self.target.url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": "raytasks-webhook/1",
            "X-Raytasks-Event-Id": str(payload["event_id"]),
            "X-Raytasks-Timestamp": stamp,
            SIGNATURE_HEADER: sign(self.target.secret.get_secret_value(), stamp, body),
        })
        try:
            with _OPENER.open(request, timeout=self.target.timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
