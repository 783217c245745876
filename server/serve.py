"""`chorus serve`: configuration (file < environment < flags), TLS, signals and drain.

Config file: YAML with ServerConfig fields (`limits:` and `endpoint:` as mappings). Environment:
CHORUS_<FIELD> for top-level fields (e.g. CHORUS_WS_PORT=8001, CHORUS_API_KEYS=a,b). SIGTERM
or SIGINT: stop accepting (new connections get 503 while the port stays open), let open
streams deliver the finals owed for the audio they sent, close, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any

from server.app import App, ServerConfig
from server.session import EndpointConfig, Limits

log = logging.getLogger("chorus.serve")
NESTED = {"limits": Limits, "endpoint": EndpointConfig}


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def load_server_config(path: Path | None, env: dict[str, str], flags: dict[str, Any]) -> ServerConfig:
    import yaml

    base = ServerConfig()
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {} if path else {}
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    unknown = set(raw) - fields
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}; known: {sorted(fields)}")
    for name, cls in NESTED.items():
        if name in raw:
            sub = raw[name] or {}
            known = {f.name for f in dataclasses.fields(cls)}
            if set(sub) - known:
                raise ValueError(f"{path}: {name}: unknown field(s) {sorted(set(sub) - known)}")
            raw[name] = cls(**sub)
    for name in fields - set(NESTED):
        key = f"CHORUS_{name.upper()}"
        if key in env:
            raw[name] = _coerce(env[key], getattr(base, name))
    for key, value in flags.items():  # "section.field" for a nested setting; None: not given
        if value is None:
            continue
        name, _, sub = key.partition(".")
        if name not in fields or bool(sub) != (name in NESTED):
            raise ValueError(f"unknown setting {key!r}")
        if sub:
            section = raw.get(name, getattr(base, name))
            if sub not in {f.name for f in dataclasses.fields(section)}:
                raise ValueError(f"unknown setting {key!r}")
            raw[name] = dataclasses.replace(section, **{sub: value})
        else:
            raw[name] = value
    if isinstance(raw.get("api_keys"), str):  # `api_keys: a,b` in YAML: keys, not characters
        raw["api_keys"] = _coerce(raw["api_keys"], ())
    if "api_keys" in raw:
        raw["api_keys"] = tuple(raw["api_keys"])
    return dataclasses.replace(base, **raw)


def settings_listing() -> str:
    """Every setting a config file may hold, `name = default` per line (nested sections as
    section.field), for `chorus serve --help`: generated, so it cannot fall behind the code."""
    base = ServerConfig()
    lines = []
    for f in dataclasses.fields(ServerConfig):
        value = getattr(base, f.name)
        if f.name in NESTED:
            lines += [f"  {f.name}.{sub.name} = {getattr(value, sub.name)!r}"
                      for sub in dataclasses.fields(value)]
        else:
            lines.append(f"  {f.name} = {value!r}")
    return "\n".join(lines)


def setting_default(key: str) -> Any:
    """The built-in default of a setting (`section.field` for a nested one)."""
    name, _, sub = key.partition(".")
    value = getattr(ServerConfig(), name)
    return getattr(value, sub) if sub else value


def tls_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    if not cfg.tls_cert and not cfg.tls_key:
        return None
    if not (cfg.tls_cert and cfg.tls_key):
        raise ValueError("TLS needs both tls_cert and tls_key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


async def serve(cfg: ServerConfig, *, ready_file: Path | None = None, worker: Any = None,
                shared: Any = None, quiet: bool = False) -> int:
    """Serve until SIGTERM / SIGINT, then drain; the exit code. `worker` / `shared`: this
    process is one of several (server.workers: SO_REUSEPORT ports, private Unix sockets,
    shared admission); `quiet`: the supervisor announces instead."""
    from server.grpc_server import serve_grpc
    from server.openai_http import serve_http
    from server.vosk import serve_vosk
    from server.ws import serve_ws, serve_ws_private

    app = App(cfg, worker=worker, shared=shared)
    await app.start()
    ws_server = await serve_ws(app, ssl=tls_context(cfg))
    private = await serve_ws_private(app) if worker is not None else None
    grpc_server = await serve_grpc(app)
    vosk_server = await serve_vosk(app, ssl=tls_context(cfg)) if cfg.vosk_port else None
    http_server = await serve_http(app, ssl=tls_context(cfg)) if cfg.http_port else None
    scheme = "wss" if cfg.tls_cert else "ws"
    log.info("serving %s (%s on %s, policy %s) on %s://%s:%d/v1/stream", app.bundle.path,
             cfg.backend + (" int8" if cfg.int8 else ""), cfg.device, cfg.policy, scheme,
             cfg.host, cfg.ws_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before announcing: a signal right away drains
        loop.add_signal_handler(sig, stop.set)
    say = (lambda *a, **k: None) if quiet else print
    say(f"chorus: listening on {scheme}://{cfg.host}:{cfg.ws_port}/v1/stream and gRPC "
          f"{cfg.host}:{cfg.grpc_port}"
          + (f" and Vosk {scheme}://{cfg.host}:{cfg.vosk_port}" if vosk_server else "")
          + (f" and OpenAI-compatible http{'s' if cfg.tls_cert else ''}://{cfg.host}:"
             f"{cfg.http_port}/v1" if http_server else ""), flush=True)
    if ready_file:
        ready_file.write_text("ready\n")
    await stop.wait()
    log.info("signal received: draining %d stream(s)", app.dispatcher.active_streams)
    say("chorus: draining", flush=True)
    await drain(app, ws_server, grpc_server, vosk_server)
    if private is not None:  # siblings' relays and metrics scrapes end with this worker
        private.close()
        await private.wait_closed()
    if http_server is not None:  # requests in flight finish (new ones got 503 while draining)
        await http_server.close()
    await app.stop()
    say("chorus: stopped", flush=True)
    return 0


SIBLING_GRACE_S = 2.0  # past its own deadline, how long a worker waits for its siblings' drains


async def drain(app: App, ws_server: Any, grpc_server: Any, vosk_server: Any = None) -> None:
    """Stop admitting while the listeners stay open, so load balancers and clients are told
    (/readyz and WebSocket upgrades 503, gRPC health NOT_SERVING) rather than refused: open
    streams deliver their owed finals and close, WebSocket connections end, in-flight RPCs
    finish; only then do the ports close. All within drain_timeout_s: what is still open at
    the deadline is cut. A worker of several closes its ports only when every worker's drain
    is done (server.workers.Slots.all_drained), so the server's port answers 503 throughout."""
    deadline = time.monotonic() + app.cfg.drain_timeout_s
    health = getattr(app, "grpc_health", None)
    if health is not None:
        await health.enter_graceful_shutdown()  # load balancers see NOT_SERVING
    await app.drain()  # streams end (owed finals first), bounded by drain_timeout_s
    ws_servers = [ws_server] + ([vosk_server] if vosk_server is not None else [])
    # every connection ends on the drain event
    handlers = [t for srv in ws_servers for t in srv.handlers.values()]
    if handlers:
        await asyncio.wait(handlers, timeout=max(0.0, deadline - time.monotonic()))
    await grpc_server.stop(max(0.0, deadline - time.monotonic()))  # in-flight RPCs finish
    for srv in ws_servers:
        for conn, task in list(srv.handlers.items()):
            if not task.done():  # e.g. a client that never answers the close: cut it
                conn.transport.abort()
    slots = getattr(app, "slots", None)
    if slots is not None:  # one of several workers: the port stays open until all drained
        slots.drained()
        while not slots.all_drained and time.monotonic() < deadline + SIBLING_GRACE_S:
            await asyncio.sleep(0.05)  # new upgrades still get 503 here
    for srv in ws_servers:
        srv.close()  # only now are the WebSocket ports closed
        await srv.wait_closed()


def main(config: Path | None, flags: dict[str, Any]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cfg = load_server_config(config, dict(os.environ), flags)
    from server.workers import resolve_count, supervise

    count = resolve_count(cfg.workers, cfg)
    if count > 1:
        return supervise(cfg, count)
    return asyncio.run(serve(cfg))
