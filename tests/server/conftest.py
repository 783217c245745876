"""A real server (App + WebSocket + gRPC) on loopback ports, in a background event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from loadtest.capacity import free_port
from server.app import App, ServerConfig


class SlowSteps:
    """A real backend that takes `delay_s` longer per step (a loaded machine)."""

    def __init__(self, inner: Any, delay_s: float = 0.1):
        self.inner = inner
        self.state_names = inner.state_names
        self.delay_s = delay_s

    def init_state(self, batch: int) -> Any:
        return self.inner.init_state(batch)

    def step(self, inputs: Any) -> Any:
        time.sleep(self.delay_s)
        return self.inner.step(inputs)


@contextmanager
def running_server(bundle: Any, *, wrap_backend: Callable[[Any], Any] | None = None,
                   **overrides: Any) -> Iterator[App]:
    """`wrap_backend(backend)`: a backend around the real one (to fail on purpose)."""
    from server.grpc_server import serve_grpc
    from server.openai_http import serve_http
    from server.vosk import serve_vosk
    from server.ws import serve_ws

    cfg = replace(ServerConfig(ws_port=free_port(), grpc_port=free_port()), **overrides)
    loop = asyncio.new_event_loop()
    app = App(cfg, bundle=bundle)
    if wrap_backend is not None:
        app.backend = app.dispatcher.backend = wrap_backend(app.backend)
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        await app.start()
        holder["server"] = await serve_ws(app)
        grpc_server = await serve_grpc(app)
        vosk = holder["vosk"] = await serve_vosk(app) if cfg.vosk_port else None
        http = await serve_http(app) if cfg.http_port else None
        started.set()
        await holder["server"].wait_closed()
        if http is not None:
            await http.close(1)
        if vosk is not None:
            vosk.close()
            await vosk.wait_closed()
        await grpc_server.stop(1)
        await app.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    app.loop = loop  # type: ignore[attr-defined]
    app.ws_server = holder["server"]  # type: ignore[attr-defined]
    try:
        yield app
    finally:
        loop.call_soon_threadsafe(holder["server"].close)
        thread.join(30)
