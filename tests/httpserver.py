"""Run the raytasks HTTP app with uvicorn in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from raytasks.server.app import create_app
from raytasks.server.auth import hash_token
from raytasks.server.peers import uvicorn_options
from raytasks.settings import ApiToken

TOKENS = {"alice": "alice-token", "bob": "bob-token", "root": "root-token"}


def api_tokens() -> list[ApiToken]:
    return [ApiToken(sha256=hash_token(TOKENS["alice"]), owner="alice"),
            ApiToken(sha256=hash_token(TOKENS["bob"]), owner="bob"),
            ApiToken(sha256=hash_token(TOKENS["root"]), owner="root", role="admin")]


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


class ApiServer:
    def __init__(self, runtime: Any) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # forwarding headers count only from api.trusted_proxies, as in `raytasks serve`
        config = uvicorn.Config(create_app(runtime), host="127.0.0.1", port=self.port,
                                log_level="warning", ws_ping_interval=None,
                                **uvicorn_options(runtime.settings.api))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_api(make_service: Any, sleepy_workers: int = 1, **overrides: Any) -> ApiServer:
    """A service with the three test tokens and ``sleepy`` registered, and its HTTP API."""
    from raytasks import register_task_type
    from raytasks.settings import ApiSettings
    from tests.helpers import SleepParams, sleepy

    overrides.setdefault("api", ApiSettings(tokens=api_tokens(), max_body_bytes=64 * 1024))
    service = make_service(**overrides)
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=sleepy_workers,
                       runtime=service)
    server = ApiServer(service)
    server.service = service  # type: ignore[attr-defined]
    return server
