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
from tests.server.conftest import SlowSteps, running_server


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
        for gauge in ("chorus_asyncio_tasks", "chorus_threads", "process_resident_memory_bytes",
                      "process_open_fds"):  # what a soak run samples
            assert f"\n{gauge} " in text, gauge
        assert http(port, "/nope")[0] == 404
        assert http(port, "/")[0] == 200


def test_a_websocket_opened_on_another_path_is_told_the_stream_path(bundle) -> None:
    """A WebSocket handshake on / (the browser page's path) or any other path is refused with
    404 and a body that names /v1/stream, instead of the page's HTML (an HTTP 200 no WebSocket
    client can use)."""
    from websockets.exceptions import InvalidStatus

    with running_server(bundle) as app:
        for path in ("", "/", "/stream"):
            with pytest.raises(InvalidStatus) as info, connect(
                    f"ws://127.0.0.1:{app.cfg.ws_port}{path}"):
                pass
            response = info.value.response
            assert response.status_code == 404 and b"/v1/stream" in response.body, path


def test_results_carry_the_servers_processing_latency(bundle, speech) -> None:
    """Every partial and final says how long the server took to make it (its chunk's queue
    wait, model step and decoding): each step takes 50 ms more here. /metrics has the
    histogram, one observation per result."""
    from loadtest.harness import parse_metrics

    with running_server(bundle, wrap_backend=lambda b: SlowSteps(b, 0.05)) as app:
        port = app.cfg.ws_port
        msgs = stream_audio(f"ws://127.0.0.1:{port}/v1/stream", speech)
        metrics = parse_metrics(http(port, "/metrics")[1])
    results = [m for m in msgs if m["type"] in ("partial", "final")]
    partials = [m for m in results if m["type"] == "partial"]
    assert partials and results[-1]["type"] == "final", msgs
    took = [m["processing_latency_ms"] for m in results]
    assert all(50 <= ms < 5000 for ms in took), took
    name = "chorus_processing_latency_seconds"
    assert metrics[f'{name}_count{{result="partial"}}'] == len(partials)
    assert metrics[f'{name}_count{{result="final"}}'] == 1
    assert metrics[f'{name}_bucket{{le="0.02",result="partial"}}'] == 0  # all took >= 50 ms
    assert metrics[f'{name}_sum{{result="partial"}}'] == pytest.approx(
        sum(m["processing_latency_ms"] for m in partials) / 1000, rel=1e-3)


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
# a WAV header whose 'fmt ' chunk is 4 bytes long (16 at least are needed), then a data chunk
SHORT_FMT_WAV = (b"RIFF" + (28).to_bytes(4, "little") + b"WAVE" + b"fmt " + (4).to_bytes(4, "little")
                 + b"\x01\x00\x01\x00" + b"data" + (0).to_bytes(4, "little"))
DEEP_JSON = "[" * 3000 + "]" * 3000  # json.loads: RecursionError (and under 2 x max_frame_bytes)


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
    pytest.param([{**START, "format": {"encoding": "wav"}}, SHORT_FMT_WAV], "bad_audio", 1007,
                 "'fmt ' chunk of 4 bytes; expected at least 16", id="wav-fmt-4-bytes"),
    pytest.param([DEEP_JSON], "invalid_json", 1007, "nested too deeply", id="deep-json"),
    pytest.param(['{"type": "start", "max_alternatives": ' + "9" * 5000 + "}"], "invalid_json",
                 1007, "JSON the server cannot read", id="json-huge-integer"),
    pytest.param(["[]"], "invalid_json", 1007, "expected a JSON object", id="json-array"),
    pytest.param(["null"], "invalid_json", 1007, "got a JSON null", id="json-null"),
    pytest.param(["3"], "invalid_json", 1007, "expected a JSON object", id="json-number"),
    pytest.param([{**START, "interim_results": "false"}], "bad_config", 1007,
                 "interim_results must be a JSON boolean (true or false), got 'false'",
                 id="bool-as-string"),
    pytest.param([{**START, "continuous": "no"}], "bad_config", 1007,
                 "continuous must be a JSON boolean", id="bool-as-no"),
    pytest.param([{**START, "hotwords": "abc"}], "bad_config", 1007, "hotwords must be a list",
                 id="hotwords-string"),
    pytest.param([{**START, "hotwords": [{"phrase": 5, "boost": 1}]}], "bad_config", 1007,
                 "hotwords must be a list", id="hotword-phrase-number"),
    pytest.param([{**START, "max_alternatives": True}], "bad_config", 1007,
                 "max_alternatives must be", id="alternatives-bool"),
    pytest.param([{**START, "format": {"channels": True}}], "bad_config", 1007,
                 "channels must be", id="channels-bool"),
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


def test_api_keys_match_whole_keys_only(bundle, tmp_path) -> None:
    """Keys are compared whole (hmac.compare_digest against each key): a prefix, a single
    character or a non-ASCII token is refused over WebSocket and gRPC; the right key works.
    A YAML `api_keys: KEY` (one string) is one key, not one key per character."""
    import grpc
    from websockets.exceptions import InvalidStatus

    from server.grpc_codegen import generated
    from server.serve import load_server_config

    f = tmp_path / "c.yaml"
    f.write_text("api_keys: s3cret,other\n")
    keys = load_server_config(f, {}, {}).api_keys
    assert keys == ("s3cret", "other")
    pb, pb_grpc = generated()
    with running_server(bundle, api_keys=keys) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        for token in ("s", "s3c", "s3cret2", "%C3%A9", "", "s3cret,other"):
            with pytest.raises(InvalidStatus) as e:
                connect(f"{url}?token={token}")
            assert e.value.response.status_code == 401, token
        with pytest.raises(InvalidStatus) as e:
            connect(url, additional_headers={"Authorization": "Bearer ot"})
        assert e.value.response.status_code == 401
        for token in ("s3cret", "other"):
            with connect(f"{url}?token={token}") as ws:
                ws.send(json.dumps(START))
                assert json.loads(ws.recv())["type"] == "ready"
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)
            req = pb.RecognizeRequest(config=pb.RecognitionConfig(format=pb.AudioFormat(
                encoding=pb.PCM_S16LE, sample_rate_hertz=16000)), audio=b"\x00\x00" * 1600)
            for meta in ([("x-api-key", "s")], [("x-api-key", "s3c")],
                         [("authorization", "Bearer other2")], [("x-api-key", "é".encode().hex())]):
                with pytest.raises(grpc.RpcError) as e:
                    stub.Recognize(req, metadata=meta)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, meta
            stub.Recognize(req, metadata=[("x-api-key", "s3cret")])
            stub.Recognize(req, metadata=[("authorization", "Bearer other")])


def test_probes_and_bare_connections_do_not_flood_the_log(bundle, caplog) -> None:
    """Health probes are not "rejected connections", and a bare TCP connect (a load balancer's
    check, a port scan) logs no traceback. Real refusals (401) are still logged."""
    import logging
    import socket
    import time

    with caplog.at_level(logging.INFO), running_server(bundle, api_keys=("k",)) as app:
        port = app.cfg.ws_port
        for _ in range(3):
            assert http(port, "/healthz")[0] == 200 and http(port, "/readyz")[0] == 200
            assert http(port, "/metrics")[0] == 200
        for _ in range(3):
            socket.create_connection(("127.0.0.1", port)).close()  # connect, then close
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")  # half a request, then gone
        assert http(port, "/v1/stream")[0] == 401
        time.sleep(0.3)
        assert http(port, "/healthz")[0] == 200  # still serving
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    text = "\n".join(r.getMessage() for r in records)
    assert "connection rejected (200" not in text, text
    assert "connection rejected (401" in text, text
    assert not [r for r in records if r.exc_info], text
    assert not [r for r in records if r.levelno >= logging.WARNING], text


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_client_that_goes_away_frees_its_slot_at_once(bundle, speech, how) -> None:
    """A client sends 10 s of audio (about 3 s of model steps here) and goes away (a clean
    close, or the TCP connection dropped): its slot is free at once, not after its buffered
    audio is computed, and a concurrent stream is untouched. With resume off: a dropped
    stream is otherwise held for resume_window_s (tests/server/test_resume.py)."""
    import socket
    import time

    rng = np.random.default_rng(0)
    noise = pcm16(0.1 * rng.standard_normal(16000 * 10))
    with running_server(bundle, wrap_backend=SlowSteps, resume_window_s=0) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        good: list = []
        worker = threading.Thread(target=lambda: good.extend(stream_audio(url, speech)))
        worker.start()
        ws = connect(url)
        ws.send(json.dumps(START))
        sid = json.loads(ws.recv())["stream_id"]
        for i in range(0, len(noise), 32000):
            ws.send(noise[i : i + 32000])
        deadline = time.monotonic() + 10
        while app.dispatcher.metrics.steps < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # its audio is being computed
        if how == "close":
            ws.close()
        else:  # no close frame: the TCP connection just ends
            ws.socket.shutdown(socket.SHUT_RDWR)
        t0 = time.monotonic()
        while app.dispatcher.is_open(sid) and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        freed_s = time.monotonic() - t0
        worker.join(60)
    assert freed_s < 0.5, freed_s
    finals = [m["text"] for m in good if m["type"] == "final"]
    assert good[-1]["type"] == "end" and finals == [offline_text(bundle, speech)]
