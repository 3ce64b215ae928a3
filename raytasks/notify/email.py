"""Email over SMTP: plain-text and HTML bodies, per-recipient rate limits with digests.

Headers are built with the standard library's :class:`EmailMessage`, whose
default policy refuses CR/LF in header values (no header injection); task
names and messages only ever go into bodies, escaped for HTML.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from ..settings import EmailSettings
from .rules import RuleFilter

DIGEST = "digest"


def _describe(payload: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(payload.get("at") or 0), tz=UTC).isoformat()
    line = f"task {payload['task_id']} ({payload.get('task_type', '')}) " \
           f"{payload.get('status', payload['kind'])} at {when}"
    error = payload.get("error")
    if error:
        line += f" — {error.get('reason')}: {error.get('type')}: {error.get('message')}"
    return line


def build_message(settings: EmailSettings, recipient: str,
                  events: list[dict[str, Any]]) -> EmailMessage:
    """One email for one event, or a digest of several."""
    msg = EmailMessage()
    if len(events) == 1:
        p = events[0]
        msg["Subject"] = f"[raytasks] task {p['task_id'][:12]} {p.get('status', p['kind'])}"
    else:
        msg["Subject"] = f"[raytasks] digest: {len(events)} task events"
    msg["From"] = settings.sender
    msg["To"] = recipient
    msg["Message-ID"] = make_msgid(domain="raytasks")
    msg["X-Raytasks-Event-Ids"] = ",".join(str(p["event_id"]) for p in events)
    lines = [_describe(p) for p in events]
    msg.set_content("\n".join(lines) + "\n\n-- raytasks\n")
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    msg.add_alternative(f"<html><body><p>raytasks</p><ul>{items}</ul></body></html>",
                        subtype="html")
    return msg


class EmailChannel:
    """Sends matching events to the configured recipients and the task's own ``notify``
    addresses; past ``rate_limit_count`` emails per window a recipient gets one digest."""

    def __init__(self, settings: EmailSettings, store: Any) -> None:
        self.settings = settings
        self.store = store
        self.name = "email"
        self.filter = RuleFilter(settings)
        self.retry_at = 0.0
        self._sent: dict[str, list[float]] = {}
        # events held for a digest are in the delivery log, so a restart keeps them
        self._held: dict[str, list[dict[str, Any]]] = {}
        for row in store.deliveries(channel=self.name, outcome=DIGEST):
            payload = {"event_id": row["event_id"], "task_id": row["detail"] or "?",
                       "kind": "status", "status": "(held for digest)", "at": row["at"]}
            self._held.setdefault(row["target"], []).append(payload)

    def recipients(self, payload: dict[str, Any]) -> list[str]:
        out = list(self.settings.recipients)
        task = self.store.get(payload["task_id"])
        for entry in task.notify if task else []:
            address = entry.removeprefix("mailto:")
            if "@" in address and address not in out:
                out.append(address)
        return out

    def deliver(self, payload: dict[str, Any], now: float) -> tuple[bool, list[dict[str, Any]]]:
        log: list[dict[str, Any]] = []
        try:
            for recipient in self.recipients(payload):
                window = [t for t in self._sent.get(recipient, [])
                          if now - t < self.settings.rate_limit_window_s]
                self._sent[recipient] = window
                if len(window) >= self.settings.rate_limit_count:
                    self._held.setdefault(recipient, []).append(payload)
                    log.append(self._row(recipient, payload["event_id"], DIGEST,
                                         payload["task_id"], now))
                    continue
                self._send(recipient, [payload])
                window.append(now)
                log.append(self._row(recipient, payload["event_id"], "delivered", "", now))
        except (OSError, smtplib.SMTPException) as exc:
            self.retry_at = now + 5.0
            log.append(self._row("*", payload["event_id"], "failed",
                                 f"{type(exc).__name__}: {exc}", now))
            return False, log
        return True, log

    def flush_digests(self, now: float) -> list[dict[str, Any]]:
        """Send each held digest once its recipient's window has room again."""
        log = []
        for recipient, held in list(self._held.items()):
            window = [t for t in self._sent.get(recipient, [])
                      if now - t < self.settings.rate_limit_window_s]
            if not held or len(window) >= self.settings.rate_limit_count:
                continue
            try:
                self._send(recipient, held)
            except (OSError, smtplib.SMTPException):
                continue
            self._sent[recipient] = [*window, now]
            del self._held[recipient]
            self.store.set_delivery_outcome(self.name, DIGEST, "sent-in-digest")
            log.append(self._row(recipient, held[-1]["event_id"], "digest-sent",
                                 f"{len(held)} events", now))
        return log

    def _send(self, recipient: str, events: list[dict[str, Any]]) -> None:
        msg = build_message(self.settings, recipient, events)
        s = self.settings
        smtp: smtplib.SMTP
        context = ssl.create_default_context(cafile=s.ca_file)  # verifies host and chain
        if s.ssl:
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with smtp:
            if s.starttls and not s.ssl:
                smtp.starttls(context=context)
            if s.username:
                password = s.password.get_secret_value() if s.password else ""
                smtp.login(s.username, password)
            smtp.send_message(msg)

    def _row(self, target: str, event_id: int, outcome: str, detail: str,
             now: float) -> dict[str, Any]:
        return {"channel": self.name, "target": target, "event_id": int(event_id),
                "attempt": 1, "outcome": outcome, "detail": detail, "at": now}
