"""Real network peers for notification tests: an HTTP webhook receiver and an SMTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from raytasks.notify import verify


class WebhookReceiver:
    """Records POSTs; verifies signatures; can fail the first N tries of each event."""

    def __init__(self, secret: str, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.secret, self.fail_first, self.delay_s = secret, fail_first, delay_s
        self.tries: Counter[int] = Counter()
        self.accepted: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(receiver.secret, self.headers["X-Raytasks-Timestamp"], body,
                            self.headers["X-Raytasks-Signature"])
                event_id = int(self.headers["X-Raytasks-Event-Id"])
                time.sleep(receiver.delay_s)
                with receiver._lock:
                    receiver.tries[event_id] += 1
                    if not ok:
                        receiver.bad_signatures += 1
                    failing = receiver.tries[event_id] <= receiver.fail_first
                    if ok and not failing:
                        receiver.accepted.append(json.loads(body))
                self.send_response(500 if failing or not ok else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def unique_accepted(self) -> dict[int, dict[str, Any]]:
        """What a receiver keeps after de-duplicating on the event id."""
        with self._lock:
            return {p["event_id"]: p for p in self.accepted}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps every message it receives.

    With ``tls`` (an ``ssl.SSLContext``) it requires STARTTLS; with ``login`` (user,
    password) it requires authentication; addresses in ``refuse`` are refused (550).
    """

    def __init__(self, tls: Any = None, login: tuple[str, str] | None = None,
                 refuse: tuple[str, ...] = ()) -> None:
        self.messages: list[Message] = []
        self.refused: list[str] = []  # RCPT TO addresses answered with 550
        sink = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: Any) -> str:
                if address in refuse:
                    sink.refused.append(address)
                    return "550 no such user here"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.original_content or envelope.content)
                msg["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
                sink.messages.append(msg)
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        extra: dict[str, Any] = {}
        if tls is not None:
            extra.update(tls_context=tls, require_starttls=True)
        if login is not None:
            def check(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
                ok = (auth_data.login.decode(), auth_data.password.decode()) == login
                return AuthResult(success=ok)

            extra.update(authenticator=check, auth_required=True,
                         auth_require_tls=tls is not None)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **extra)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


def self_signed(directory: Any, name: str = "127.0.0.1") -> tuple[Any, str]:
    """A server TLS context whose certificate names ``name`` only (an IP address or a host
    name), and the path of that certificate (the CA to trust)."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)
