"""Locust users that stream real speech in real time over WebSocket and gRPC.

    locust -f loadtest/locustfile.py --host ws://127.0.0.1:8000 --headless -u 20 -r 5 -t 60s
    CHORUS_GRPC=127.0.0.1:50051 locust -f loadtest/locustfile.py GrpcStreamUser ...

Each user plays one utterance after another, paced in real time in 100 ms frames with the
capacity harness's accounting (loadtest/timing.py). Recorded as locust requests when the
utterance ends: "partial" (partial arrival - send time of the frame that completed its
audio_processed), "end partial" (the partials of the utterance's end: its last frame and the
flush `stop` triggers, apart), "final" (end of audio -> the stream's end), and failures for any
error. Audio: CHORUS_MANIFEST (Lhotse cuts) or sentences synthesized with espeak-ng.
"""

from __future__ import annotations

# locust first: it monkey-patches the standard library for gevent; then grpc's gevent support
import locust
from locust import User, between, events, task

import grpc
import grpc.experimental.gevent

grpc.experimental.gevent.init_gevent()

import json
import os
import time
from pathlib import Path

import gevent

from loadtest.harness import pcm_config, speech_pool
from loadtest.timing import SendLog, frames, paced_sync

POOL: list[bytes] = []


@events.test_start.add_listener
def load_audio(environment: locust.env.Environment, **_: object) -> None:
    manifest = os.environ.get("CHORUS_MANIFEST")
    POOL[:] = speech_pool(Path(manifest) if manifest else None, limit=20)


def _fire(user: User, name: str, seconds: float, exc: Exception | None = None) -> None:
    user.environment.events.request.fire(request_type="stream", name=name,
                                         response_time=seconds * 1000, response_length=0,
                                         exception=exc, context={})


def _fire_latencies(user: User, log: SendLog) -> None:
    """An utterance's partials, real-time and end-of-stream apart."""
    lat = log.latencies()
    for name, values in (("partial", lat.realtime), ("end partial", lat.end)):
        for s in values:
            _fire(user, name, s)


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
        log = SendLog()
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
                    if msg["type"] == "partial":
                        log.partial(msg["audio_processed"])
                    elif msg["type"] == "error":
                        _fire(self, "error", 0.0, RuntimeError(f"{msg['code']}: {msg['message']}"))
                        return
                    elif msg["type"] == "end":
                        _fire(self, "final", log.since_stop())
                        _fire_latencies(self, log)
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
            for f in paced_sync(frames(pcm), log):
                ws.send_binary(f)
            log.stop()
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
        log = SendLog()

        def requests():  # type: ignore[no-untyped-def]
            yield pb.StreamingRecognizeRequest(streaming_config=pcm_config(pb))
            for f in paced_sync(frames(pcm), log):
                yield pb.StreamingRecognizeRequest(audio=f)
            log.stop()  # the half-close

        try:
            for resp in self.stub.StreamingRecognize(requests(), wait_for_ready=True, timeout=120):
                for r in resp.results:
                    if not r.is_final:
                        log.partial(r.audio_processed)
            _fire(self, "final", log.since_stop())
            _fire_latencies(self, log)
        except grpc.RpcError as exc:
            _fire(self, "error", 0.0, RuntimeError(f"{exc.code().name}: {exc.details()}"))
