"""A TCP proxy a test owns between raytasks and its PostgreSQL, to cut the way to a server
that stays up (a network partition, a failover's switch of address)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class CuttableProxy:
    """Forwards ``127.0.0.1:port`` to ``target_port``. :meth:`cut` resets every connection
    and from then on resets each new one at once; :meth:`mend` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_now = False
        self.refused = 0  # connections reset while cut
        self._open: set[asyncio.WriteTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="store-proxy")
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._started.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = [writer.transport, up_writer.transport]
        self._open.update(pair)  # type: ignore[arg-type]
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:  # closing: end quietly
            pass
        finally:
            for t in pair:
                self._open.discard(t)  # type: ignore[arg-type]
                t.abort()

    def cut(self) -> None:
        """Reset every connection now and every new one until :meth:`mend`."""
        def now() -> None:
            self.cut_now = True
            for t in list(self._open):
                t.abort()
        self._call(now)

    def mend(self) -> None:
        def now() -> None:
            self.cut_now = False
        self._call(now)

    def _call(self, fn: Any) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()
        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.cut()
        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
