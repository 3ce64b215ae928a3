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
    """A real SMTP server (aiosmtpd) that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.original_content or envelope.content)
                msg["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
                sink.messages.append(msg)
                return "250 OK"

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
