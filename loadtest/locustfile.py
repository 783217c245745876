"""Locust users that stream real speech in real time over WebSocket and gRPC.

    locust -f loadtest/locustfile.py --host ws://127.0.0.1:8000 --headless -u 20 -r 5 -t 60s
    CHORUS_GRPC=127.0.0.1:50051 locust -f loadtest/locustfile.py GrpcStreamUser ...

Each user plays one utterance after another, paced in real time in 100 ms frames. Recorded as
locust requests: "partial" (partial arrival - send time of the frame that completed its audio,
from the partial's audio_processed), "final" (end of audio -> final result), and failures for
any error. Audio: CHORUS_MANIFEST (Lhotse cuts) or sentences synthesized with espeak-ng.
"""

from __future__ import annotations

# locust first: it monkey-patches the standard library for gevent; then grpc's gevent support
import locust
from locust import User, between, events, task

import grpc
import grpc.experimental.gevent

grpc.experimental.gevent.init_gevent()

import bisect
import json
import os
import time
from pathlib import Path

import gevent

FRAME_S = 0.1
FRAME_BYTES = 3200  # 100 ms of 16 kHz PCM16
POOL: list[bytes] = []


@events.test_start.add_listener
def load_audio(environment: locust.env.Environment, **_: object) -> None:
    from loadtest.capacity import audio_pool

    manifest = os.environ.get("CHORUS_MANIFEST")
    POOL[:] = audio_pool(Path(manifest) if manifest else None)


def _fire(user: User, name: str, seconds: float, exc: Exception | None = None) -> None:
    user.environment.events.request.fire(request_type="stream", name=name,
                                         response_time=seconds * 1000, response_length=0,
                                         exception=exc, context={})


class WsStreamUser(User):
    """WebSocket /v1/stream (websocket-client, gevent-friendly)."""

    wait_time = between(0.1, 0.5)

    @task
    def utterance(self) -> None:
        import websocket  # websocket-client

        pcm = POOL[int(time.time() * 1000) % len(POOL)]
        url = self.host.rstrip("/") + "/v1/stream"
        key = os.environ.get("CHORUS_API_KEY")
        headers = [f"Authorization: Bearer {key}"] if key else None
        sent: list[tuple[float, float]] = []
        done = gevent.event.Event()
        try:
            ws = websocket.create_connection(url, header=headers, timeout=30)
        except Exception as exc:  # noqa: BLE001
            _fire(self, "connect", 0.0, exc)
            return

        def reader() -> None:
            try:
                while True:
                    raw = ws.recv()
                    if not raw:  # closed (the user was stopped mid-utterance)
                        return
                    msg = json.loads(raw)
                    now = time.perf_counter()
                    if msg["type"] == "partial":
                        k = bisect.bisect_left([a for a, _ in sent], msg["audio_processed"] - 1e-6)
                        if k < len(sent):
                            _fire(self, "partial", now - sent[k][1])
                    elif msg["type"] == "error":
                        _fire(self, "error", 0.0, RuntimeError(f"{msg['code']}: {msg['message']}"))
                        return
                    elif msg["type"] == "end":
                        _fire(self, "final", now - sent[-1][1] if sent else 0.0)
                        return
            except Exception as exc:  # noqa: BLE001
                _fire(self, "receive", 0.0, exc)
            finally:
                done.set()

        try:
            ws.send(json.dumps({"type": "start", "continuous": True}))
            if json.loads(ws.recv())["type"] != "ready":
                raise RuntimeError("no ready message")
            gevent.spawn(reader)
            t0 = time.perf_counter()
            for k, i in enumerate(range(0, len(pcm), FRAME_BYTES)):
                gevent.sleep(max(0.0, t0 + k * FRAME_S - time.perf_counter()))
                ws.send_binary(pcm[i : i + FRAME_BYTES])
                sent.append(((k + 1) * FRAME_S, time.perf_counter()))
            ws.send(json.dumps({"type": "stop"}))
            done.wait(60)
        except Exception as exc:  # noqa: BLE001
            _fire(self, "send", 0.0, exc)
        finally:
            ws.close()


class GrpcStreamUser(User):
    """Native gRPC StreamingRecognize (CHORUS_GRPC=host:port)."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        from server.grpc_codegen import generated

        self.pb, pb_grpc = generated()
        self.channel = grpc.insecure_channel(os.environ.get("CHORUS_GRPC", "127.0.0.1:50051"))
        self.stub = pb_grpc.AsrStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def utterance(self) -> None:
        pb = self.pb
        pcm = POOL[int(time.time() * 1000) % len(POOL)]
        sent: list[tuple[float, float]] = []
        cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.PCM_S16LE,
                                                         sample_rate_hertz=16000))

        def requests():  # type: ignore[no-untyped-def]
            yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
                config=cfg, interim_results=True, continuous=True))
            t0 = time.perf_counter()
            for k, i in enumerate(range(0, len(pcm), FRAME_BYTES)):
                gevent.sleep(max(0.0, t0 + k * FRAME_S - time.perf_counter()))
                yield pb.StreamingRecognizeRequest(audio=pcm[i : i + FRAME_BYTES])
                sent.append(((k + 1) * FRAME_S, time.perf_counter()))

        try:
            for resp in self.stub.StreamingRecognize(requests(), wait_for_ready=True, timeout=120):
                now = time.perf_counter()
                for r in resp.results:
                    if not r.is_final:
                        k = bisect.bisect_left([a for a, _ in sent], r.audio_processed - 1e-6)
                        if k < len(sent):
                            _fire(self, "partial", now - sent[k][1])
            _fire(self, "final", time.perf_counter() - sent[-1][1] if sent else 0.0)
        except grpc.RpcError as exc:
            _fire(self, "error", 0.0, RuntimeError(f"{exc.code().name}: {exc.details()}"))
