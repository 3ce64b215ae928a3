"""Email over SMTP: plain-text and HTML bodies, per-recipient rate limits with digests.

Headers are built with the standard library's :class:`EmailMessage`, whose
default policy refuses CR/LF in header values (no header injection); task
names and messages only ever go into bodies, escaped for HTML. Recipients are
the operator's ``recipients`` plus a task's own ``notify`` addresses that the
operator's allow-list admits (:func:`allowed`); rate limits count on the
normalised address, so ``Victim@X`` and ``victim@x`` are one recipient.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from ..inputs import normalise_address, rate_key
from ..settings import EmailSettings
from .rules import ChannelDown, RuleFilter, Undeliverable, delivery_row

DIGEST = "digest"


def allowed(settings: EmailSettings | None, address: str) -> bool:
    """May a task send to ``address`` (normalised)? Only inside the operator's allow-list."""
    if settings is None:
        return False
    key = rate_key(address)
    domain = key.rpartition("@")[2]
    return any(key == rate_key(a) for a in settings.allow_addresses) or \
        any(domain == d.lower().lstrip("@") for d in settings.allow_domains)


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


# the server refused this message or recipient; any other OSError (connection,
# TLS, login) means the server or the network failed and the whole channel waits
_MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused,
                   smtplib.SMTPDataError)


class EmailChannel:
    """Sends matching events to the configured recipients and the task's own allowed
    ``notify`` addresses; past ``rate_limit_count`` emails per window a recipient gets
    one digest at the end of the window."""

    def __init__(self, settings: EmailSettings, store: Any) -> None:
        self.settings = settings
        self.store = store
        self.name = "email"
        self.filter = RuleFilter(settings)
        self.max_attempts = settings.max_attempts
        self.backoff_base_s, self.backoff_max_s = settings.backoff_base_s, settings.backoff_max_s
        self._sent: dict[str, list[float]] = {}  # by rate key: send times in the window
        self._pruned_at = float("-inf")
        # by rate key; events held for a digest are in the delivery log, so a restart
        # keeps them
        self._held: dict[str, list[dict[str, Any]]] = {}
        for row in store.deliveries(channel=self.name, outcome=DIGEST, limit=100_000):
            payload = {"event_id": row["event_id"], "task_id": row["detail"] or "?",
                       "kind": "status", "status": "(held for digest)", "at": row["at"]}
            self._held.setdefault(rate_key(row["target"]), []).append(payload)

    def targets(self, payload: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
        """(addresses to send to, [(entry, why it is refused)]) for one event."""
        out, refused = [], []
        for entry in self.settings.recipients:  # the operator's own: trusted, still normalised
            out.append(normalise_address(entry))
        task = self.store.get(payload["task_id"])
        for entry in task.notify if task else []:
            try:
                address = normalise_address(entry)
            except ValueError as exc:
                refused.append((entry[:320], str(exc)))
                continue
            if not allowed(self.settings, address):
                refused.append((address, "not in notify.email.allow_domains/allow_addresses"))
            elif rate_key(address) not in {rate_key(a) for a in out}:
                out.append(address)
        return out, refused

    def send(self, payload: dict[str, Any], target: str, now: float) -> str:
        """Mail one event to one recipient, or hold it for the digest; the outcome.

        Raises:
            ChannelDown: the SMTP server is unreachable or refused the session.
            Exception: this message failed (it is retried, then dead-lettered).
        """
        key = rate_key(target)
        self._forget_quiet(now)
        window = [t for t in self._sent.get(key, []) if now - t < self.settings.rate_limit_window_s]
        self._sent[key] = window
        if len(window) >= self.settings.rate_limit_count:
            self._held.setdefault(key, []).append(payload)
            return DIGEST
        self._send(target, [payload])
        window.append(now)
        return "delivered"

    def _forget_quiet(self, now: float) -> None:
        """Drop the recipients whose sends are all older than the window (they hold no
        limit back), at most once per window: ``_sent`` stays the recipients of one."""
        if now - self._pruned_at < self.settings.rate_limit_window_s:
            return
        self._pruned_at = now
        self._sent = {k: window for k, window in self._sent.items()
                      if window and now - window[-1] < self.settings.rate_limit_window_s}

    def detail(self, payload: dict[str, Any], outcome: str) -> str:
        return str(payload["task_id"]) if outcome == DIGEST else ""

    def flush(self, now: float) -> list[dict[str, Any]]:
        """Send each held digest once its recipient's window has room again."""
        log = []
        for recipient, held in list(self._held.items()):
            window = [t for t in self._sent.get(recipient, [])
                      if now - t < self.settings.rate_limit_window_s]
            if not held or len(window) >= self.settings.rate_limit_count:
                continue
            try:
                self._send(recipient, held)
            except Undeliverable as exc:  # it would fail the same way every tick
                del self._held[recipient]
                log.append(delivery_row(self.name, recipient, held[-1]["event_id"], 1,
                                        "dead-letter", str(exc), now))
                continue
            except Exception:  # the digest stays held, tried next tick
                continue
            self._sent[recipient] = [*window, now]
            del self._held[recipient]
            log.append(delivery_row(self.name, recipient, held[-1]["event_id"], 1,
                                    "digest-sent", f"{len(held)} events", now))
        if log and not self._held:  # every held event is out: the log holds none any more
            self.store.set_delivery_outcome(self.name, DIGEST, "sent-in-digest")
        return log

    def _send(self, recipient: str, events: list[dict[str, Any]]) -> None:
        try:
            msg = build_message(self.settings, recipient, events)
        except Exception as exc:  # the same input fails the same way: never retry it
            raise Undeliverable(f"the message cannot be built: {type(exc).__name__}: "
                                f"{exc}") from None
        s = self.settings
        smtp: smtplib.SMTP
        context = ssl.create_default_context(cafile=s.ca_file)  # verifies host and chain
        try:
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
        except _MESSAGE_ERRORS:
            raise  # this message or recipient was refused: retried, then dead-lettered
        except OSError as exc:  # smtplib's errors are OSErrors too
            raise ChannelDown(f"{type(exc).__name__}: {exc}") from None
