"""WebSocket /v1/stream and HTTP routes on a real server, with real synthesized speech."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.sync.client import connect

from models.audio import load_audio
from models.audio import to_pcm16 as pcm16
from models.bundle import load
from models.streaming import StreamingTranscriber
from server.session import Limits
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    wav = tmp_path_factory.mktemp("w") / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "call the office and say hello"],
                   check=True)
    return load_audio(wav, sample_rate=16_000)


def stream_audio(url: str, audio: np.ndarray, start: dict | None = None, piece: int = 3200,
                 headers: dict | None = None) -> list[dict]:
    msgs = []
    with connect(url, additional_headers=headers) as ws:
        ws.send(json.dumps({"type": "start", **(start or {"continuous": False})}))
        msgs.append(json.loads(ws.recv()))
        data = pcm16(audio)
        for i in range(0, len(data), piece):
            ws.send(data[i : i + piece])
        ws.send(json.dumps({"type": "stop"}))
        for raw in ws:
            msgs.append(json.loads(raw))
    return msgs


def offline_text(bundle, audio: np.ndarray) -> str:
    t = StreamingTranscriber(bundle)
    t.accept_waveform((np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768)
    return t.finalize().text


def test_stream_partials_and_final_equal_offline(bundle, speech) -> None:
    with running_server(bundle) as app:
        msgs = stream_audio(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream", speech)
    assert msgs[0]["type"] == "ready" and msgs[-1]["type"] == "end"
    finals = [m for m in msgs if m["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"] == offline_text(bundle, speech)
    assert msgs[-1]["audio_processed"] == pytest.approx(speech.size / 16000, abs=0.01)
    assert all(set(w) == {"word", "start", "end", "confidence"} for w in finals[0]["words"])


def http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_routes(bundle, speech) -> None:
    with running_server(bundle) as app:
        port = app.cfg.ws_port
        stream_audio(f"ws://127.0.0.1:{port}/v1/stream", speech)
        assert http(port, "/healthz") == (200, "ok\n")
        assert http(port, "/readyz") == (200, "ready\n")
        status, text = http(port, "/metrics")
        assert status == 200 and "chorus_dispatch_batch_size_bucket" in text
        assert "chorus_finals_total 1.0" in text and "chorus_audio_seconds_total" in text
        assert http(port, "/nope")[0] == 404
        assert http(port, "/")[0] == 200


def expect_error(url: str, messages: list, code: str, close_code: int) -> dict:
    from websockets.exceptions import ConnectionClosed

    got = []
    with connect(url) as ws:
        try:
            for m in messages:
                ws.send(m if isinstance(m, bytes) else json.dumps(m) if isinstance(m, dict) else m)
            while True:
                got.append(json.loads(ws.recv()))
        except ConnectionClosed:
            pass
        assert ws.close_code == close_code, (got, ws.close_code)
    err = got[-1]
    assert err["type"] == "error" and err["code"] == code, got
    return {"messages": got, "error": err}


START = {"type": "start", "continuous": False}


@pytest.mark.parametrize("messages, code, close_code, text", [
    (["{nope"], "invalid_json", 1007, "not JSON"),
    ([{"type": "pause"}], "unknown_type", 1008, "unknown message type 'pause'"),
    ([b"\x00\x00"], "audio_before_start", 1008, "before the start"),
    ([START, b"\x00\x01\x02"], "bad_audio", 1007, "got a frame of 3 bytes"),
    ([{**START, "format": {"encoding": "opus"}}], "bad_config", 1007, "encoding must be one of"),
    ([{**START, "format": {"sample_rate": 0}}], "bad_config", 1007, "got 0"),
    ([{**START, "format": {"sample_rate": -8000}}], "bad_config", 1007, "got -8000"),
    ([{**START, "format": {"sample_rate": 10**7}}], "bad_config", 1007, "got 10000000"),
    ([{**START, "beam": 3}], "bad_config", 1007, "unknown start field(s) ['beam']"),
    ([START, b"\x00" * 5000], "frame_too_large", 1009, "exceeds max_frame_bytes=4000"),
    ([START] + [b"\x00" * 4000] * 5, "stream_too_long", 1008, "max_stream_s=0.5"),
])
def test_bad_input_gets_a_specific_error_and_others_continue(bundle, speech, messages, code,
                                                             close_code, text) -> None:
    limits = Limits(max_frame_bytes=4000, max_stream_s=0.5, idle_timeout_s=30)
    with running_server(bundle, limits=limits) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        good: list = []
        worker = threading.Thread(target=lambda: good.extend(
            stream_audio(url, speech[:7000], piece=2000)))
        worker.start()
        result = expect_error(url, messages, code, close_code)
        worker.join(60)
    assert text in result["error"]["message"]
    assert good and good[-1]["type"] == "end" and any(m["type"] == "final" for m in good)


def test_owed_final_is_delivered_before_the_error(bundle, speech) -> None:
    limits = Limits(max_frame_bytes=40000, max_stream_s=1.0, idle_timeout_s=30)
    with running_server(bundle, limits=limits) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        data = pcm16(speech)
        r = expect_error(url, [START, data[:20000], data[20000:40000]], "stream_too_long", 1008)
    kinds = [m["type"] for m in r["messages"]]
    assert kinds[0] == "ready" and kinds[-2:] == ["final", "error"]


def test_idle_timeout(bundle) -> None:
    with running_server(bundle, limits=Limits(idle_timeout_s=0.5)) as app:
        r = expect_error(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream", [START], "idle_timeout", 1008)
    assert "idle_timeout_s" in r["error"]["message"]


def test_api_keys_and_capacity(bundle, speech) -> None:
    from websockets.exceptions import InvalidStatus

    with running_server(bundle, api_keys=("s3cret",), max_streams=1) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        with pytest.raises(InvalidStatus) as e:
            connect(url)
        assert e.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            connect(url + "?token=wrong")
        msgs = stream_audio(url + "?token=s3cret", speech[:8000])
        assert msgs[-1]["type"] == "end"
        with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as first:
            first.send(json.dumps(START))
            assert json.loads(first.recv())["type"] == "ready"
            with pytest.raises(InvalidStatus) as e:
                connect(url + "?token=s3cret")
            assert e.value.response.status_code == 503
            assert e.value.response.headers["Retry-After"] == "1"


def test_hotwords_and_alternatives_in_start(bundle, speech) -> None:
    with running_server(bundle) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        msgs = stream_audio(url, speech, start={"continuous": False, "max_alternatives": 3,
                                                "hotwords": ["office", {"phrase": "say hello",
                                                                        "boost": 2.0}]})
        final = next(m for m in msgs if m["type"] == "final")
        assert 1 <= len(final["alternatives"]) <= 3
        assert final["alternatives"][0]["text"] == final["text"]
        r = expect_error(url, [{**START, "hotwords": [{"phrase": "x"}]}], "bad_config", 1007)
        assert "hotwords must be a list" in r["error"]["message"]
        r = expect_error(url, [{**START, "hotwords": [{"phrase": "x", "boost": 99}]}],
                         "bad_config", 1007)
        assert "boost must be in (0, 20]" in r["error"]["message"]



def test_a_client_that_stops_reading_is_closed_and_others_continue(bundle, speech) -> None:
    """Backpressure: results queue up for a client that does not read; past send_queue the
    server closes it with client_too_slow (1008) while a concurrent stream is unaffected.
    The client speaks WebSocket through the websockets sans-I/O protocol over a raw socket with
    a tiny receive window, and reads nothing until the server has given up."""
    import socket
    import time

    from websockets.client import ClientProtocol
    from websockets.frames import Close, Opcode
    from websockets.uri import parse_uri

    with running_server(bundle, send_queue=4, ws_send_buffer=8192,
                        limits=Limits(idle_timeout_s=60)) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        good: list = []
        worker = threading.Thread(target=lambda: good.extend(stream_audio(url, speech)))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny TCP window
        sock.connect(("127.0.0.1", app.cfg.ws_port))
        proto = ClientProtocol(parse_uri(url), max_size=None)
        proto.send_request(proto.connect())
        sock.sendall(b"".join(proto.data_to_send()))
        while not proto.events_received():  # the handshake response only
            proto.receive_data(sock.recv(1))
        proto.send_text(json.dumps({"type": "start", "continuous": False}).encode())
        sock.sendall(b"".join(proto.data_to_send()))
        worker.start()
        too_slow = app.metrics.errors.labels("client_too_slow")._value
        data = pcm16(np.tile(speech, 30))  # plenty of partials (one per chunk, each longer)
        sock.settimeout(5)
        deadline = time.monotonic() + 90
        sent = 0
        while time.monotonic() < deadline and too_slow.get() < 1:
            if sent < len(data):
                proto.send_binary(data[sent : sent + 6400])
                sock.sendall(b"".join(proto.data_to_send()))
                sent += 6400
            else:
                time.sleep(0.1)  # all sent: the server is still working through it
        assert too_slow.get() == 1, f"sent {sent} of {len(data)} bytes"
        close = None
        with contextlib.suppress(OSError):
            while close is None and (chunk := sock.recv(65536)):  # read the backlog, then close
                proto.receive_data(chunk)
                for frame in proto.events_received():
                    if frame.opcode is Opcode.CLOSE:
                        close = Close.parse(frame.data)
        sock.close()
        assert close is not None and (close.code, close.reason) == (1008, "client_too_slow")
        worker.join(60)
    assert good and good[-1]["type"] == "end" and any(m["type"] == "final" for m in good)
