"""The gRPC port: native `chorus.asr.v1.Asr`, Riva-compatible ASR, health and reflection."""

from __future__ import annotations

from typing import Any

from server.app import App


async def serve_grpc(app: App) -> Any:
    """Start the grpc.aio server on app.cfg.grpc_port; returns it (stop(grace) to end)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from server.grpc_common import AuthInterceptor
    from server.grpc_native import NativeAsr, pb, pb_grpc
    from server.grpc_riva import RivaAsr, _pb

    rasr, rasr_grpc = _pb()
    limit = 2 * app.cfg.limits.max_frame_bytes + (64 << 20)  # whole files in Recognize
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(app.cfg.api_keys)],
        options=[("grpc.max_receive_message_length", limit),
                 ("grpc.max_send_message_length", 16 << 20)])
    pb_grpc.add_AsrServicer_to_server(NativeAsr(app), server)
    rasr_grpc.add_RivaSpeechRecognitionServicer_to_server(RivaAsr(app), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [pb.DESCRIPTOR.services_by_name["Asr"].full_name,
             rasr.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    address = f"{app.cfg.host}:{app.cfg.grpc_port}"
    if app.cfg.tls_cert and app.cfg.tls_key:
        with open(app.cfg.tls_key, "rb") as k, open(app.cfg.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        server.add_secure_port(address, creds)
    else:
        server.add_insecure_port(address)
    if app.worker is not None:  # relayed resumes from sibling workers (server.workers)
        server.add_insecure_port(app.worker.grpc_target())
    await server.start()
    await _accepting(app.cfg.host, app.cfg.grpc_port)
    for name in ["", *names[:2]]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    app.grpc_health = health_servicer  # type: ignore[attr-defined]
    return server


async def _accepting(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Wait until the port takes connections: grpc.aio's start() can return a moment before the
    listener accepts, and a client connecting in that moment is refused."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    while True:
        try:
            _, writer = await asyncio.open_connection(probe_host, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gRPC server did not start accepting on {host}:{port}") from None
            await asyncio.sleep(0.02)
