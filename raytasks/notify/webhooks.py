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
from ..lifecycle import retry_delay_s
from ..settings import NotifySettings, WebhookTarget
from .rules import RuleFilter

SIGNATURE_HEADER = "X-Raytasks-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver runs: constant-time comparison of the signature header."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def check_target(url: str, settings: NotifySettings) -> None:
    """Refuse webhook URLs that point at cloud metadata services or outside the allow list.

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
    except socket.gaierror as exc:
        raise NotificationError(f"webhook host {host!r} does not resolve: {exc}") from None
    networks = [ipaddress.ip_network(n) for n in settings.deny_networks]
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        for network in networks:
            if address.version == network.version and address in network:
                raise NotificationError(
                    f"webhook host {host!r} resolves to {address}, inside denied network "
                    f"{network} (cloud metadata and other internal services)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could point past the target check (at a metadata address): refuse it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookChannel:
    """Delivers events to one target in order; a failing event blocks later ones until it
    succeeds or its attempts are spent (then it is logged as given up)."""

    def __init__(self, target: WebhookTarget, settings: NotifySettings) -> None:
        self.target = target
        self.settings = settings
        self.name = "webhook:" + target.url
        self.filter = RuleFilter(target)
        self.retry_at = 0.0
        self.attempts: dict[int, int] = {}

    def deliver(self, payload: dict[str, Any], now: float) -> tuple[bool, dict[str, Any]]:
        """Try once. Returns (done, delivery-log row); done is False when a retry is due."""
        event_id = int(payload["event_id"])
        attempt = self.attempts.get(event_id, 0) + 1
        self.attempts[event_id] = attempt
        outcome, detail = "delivered", ""
        try:
            check_target(self.target.url, self.settings)
            status = self._post(payload)
            if not 200 <= status < 300:
                outcome, detail = "failed", f"HTTP {status}"
        except NotificationError as exc:
            outcome, detail = "refused", str(exc)
        except (OSError, urllib.error.URLError) as exc:
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        done = outcome in ("delivered", "refused")
        if outcome == "failed" and attempt >= self.target.max_attempts:
            outcome, done = "gave-up", True
        if done:
            self.attempts.pop(event_id, None)
            self.retry_at = 0.0
        else:
            self.retry_at = now + retry_delay_s(attempt, self.target.backoff_base_s,
                                                self.target.backoff_max_s, 0.2)
        return done, {"channel": self.name, "target": self.target.url, "event_id": event_id,
                      "attempt": attempt, "outcome": outcome, "detail": detail[:2000],
                      "at": now}

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
