"""`chorus serve` as a real process: SIGTERM drains (owed finals, exit 0); TLS; config layers."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import connect

from server.serve import load_server_config
from server.session import Limits
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import free_port


def start_server(tmp_path: Path, *extra: str, grpc_port: int | None = None,
                 env: dict[str, str] | None = None, bundle: Path | None = None
                 ) -> tuple[subprocess.Popen, int]:
    """`chorus serve` on free ports with `bundle` (default: a tiny random one), once listening;
    the lines it logged until then are kept as `proc.startup_lines`."""
    import os

    bundle = bundle or tiny_bundle(tmp_path / "b")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle),
                             "--ws-port", str(port), "--grpc-port", str(grpc_port or free_port()),
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    lines: list[str] = []
    proc.startup_lines = lines  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "chorus: listening on" in line:
            return proc, port
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stdout.read()}")


def test_sigterm_delivers_owed_finals_and_exits_zero(tmp_path) -> None:
    proc, port = start_server(tmp_path)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 2) * 32767).astype("<i2").tobytes()
    got = []
    with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
        ws.send(json.dumps({"type": "start", "continuous": False}))
        got.append(json.loads(ws.recv()))
        ws.send(audio)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            while True:
                got.append(json.loads(ws.recv()))
        except ConnectionClosed:
            pass
        assert ws.close_code == 1001
    assert proc.wait(60) == 0
    kinds = [m["type"] for m in got]
    assert kinds[0] == "ready" and kinds[-2:] == ["final", "error"], kinds
    assert got[-1]["code"] == "server_shutdown"
    assert got[-2]["audio_processed"] == pytest.approx(2.0, abs=0.01)


def test_sigterm_ends_grpc_streams_with_their_finals(tmp_path) -> None:
    """A gRPC stream whose client has gone quiet does not hold the drain up: it gets the final
    for the audio it sent, then UNAVAILABLE; the server exits 0."""
    import threading

    import grpc

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    grpc_port = free_port()
    proc, _ = start_server(tmp_path, grpc_port=grpc_port)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 2) * 32767).astype("<i2").tobytes()
    quiet = threading.Event()

    def requests():
        yield pb.StreamingRecognizeRequest(streaming_config=pb.StreamingConfig(
            config=pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.PCM_S16LE,
                                                              sample_rate_hertz=16000)),
            interim_results=False, continuous=False))
        yield pb.StreamingRecognizeRequest(audio=audio)
        quiet.wait(60)  # the client neither sends more nor half-closes

    threading.Timer(1.0, proc.send_signal, (signal.SIGTERM,)).start()
    results = []
    t0 = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            for resp in pb_grpc.AsrStub(ch).StreamingRecognize(requests()):
                results += resp.results
        quiet.set()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    assert "shutting down" in err.value.details()
    assert [r.is_final for r in results] == [True]
    assert results[0].audio_processed == pytest.approx(2.0, abs=0.01)
    assert proc.wait(60) == 0
    assert time.monotonic() - t0 < 20  # well inside drain_timeout_s (30 s)


def raw_ws_client(port: int):
    """A WebSocket client on a raw socket that, after the handshake, reads nothing (so it never
    answers the server's close): the connection outlives the drain unless the server ends it."""
    import socket

    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    sock = socket.create_connection(("127.0.0.1", port))
    proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/stream"))
    proto.send_request(proto.connect())
    sock.sendall(b"".join(proto.data_to_send()))
    while not proto.events_received():  # the handshake response only
        proto.receive_data(sock.recv(1))
    return sock


def test_drain_keeps_the_port_open_answering_503(tmp_path) -> None:
    """While the server drains, its port stays open: /readyz answers 503 and new WebSocket
    upgrades get 503 (not connection refused) until the drain ends; a connection that does
    not close is cut at drain_timeout_s and the server exits 0."""
    import urllib.error
    import urllib.request

    from websockets.exceptions import InvalidStatus

    drain_s = 6.0
    proc, port = start_server(tmp_path, env={"CHORUS_DRAIN_TIMEOUT_S": str(drain_s)})
    stuck = raw_ws_client(port)

    def readyz() -> int | str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:
            return type(e).__name__

    assert readyz() == 200
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # the signal takes effect when the server's loop next runs (a loaded machine: later)
    while readyz() == 200 and time.monotonic() - t0 < 3:
        time.sleep(0.02)
    t1, probes = time.monotonic(), []
    while time.monotonic() - t1 < 1.0:  # well inside the drain: the port answers, 503
        probes.append(readyz())
        time.sleep(0.05)
    assert probes and set(probes) == {503}, probes
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/v1/stream")
    assert e.value.response.status_code == 503
    assert proc.wait(30) == 0
    # the stuck connection held the drain to its timeout, and not past it
    assert drain_s - 0.5 < time.monotonic() - t0 < drain_s + 6
    stuck.close()


def test_tls(tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    grpc_port = free_port()
    proc, port = start_server(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                              "--grpc-port", str(grpc_port))
    try:
        import grpc
        import riva.client

        auth = riva.client.Auth(uri=f"127.0.0.1:{grpc_port}", use_ssl=True, ssl_root_cert=str(cert))
        cfg = riva.client.ASRService(auth).stub.GetRivaSpeechRecognitionConfig(
            riva.client.proto.riva_asr_pb2.RivaSpeechRecognitionConfigRequest())
        assert cfg.model_config
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plain:  # no TLS to a TLS port
            with pytest.raises(grpc.RpcError) as e:
                riva.client.proto.riva_asr_pb2_grpc.RivaSpeechRecognitionStub(plain) \
                    .GetRivaSpeechRecognitionConfig(
                        riva.client.proto.riva_asr_pb2.RivaSpeechRecognitionConfigRequest(), timeout=5)
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        ctx = ssl.create_default_context(cafile=str(cert))
        with connect(f"wss://127.0.0.1:{port}/v1/stream", ssl=ctx) as ws:
            ws.send(json.dumps({"type": "start"}))
            assert json.loads(ws.recv())["type"] == "ready"
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust it
            connect(f"wss://127.0.0.1:{port}/v1/stream", ssl=ssl.create_default_context())
        with pytest.raises(InvalidMessage):  # plain ws to a TLS port: no valid handshake
            connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        assert code == 0, proc.stdout.read() if proc.stdout else code


def test_config_layers(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ws_port: 9000\nmax_streams: 7\nlimits:\n  idle_timeout_s: 3\n")
    cfg = load_server_config(f, {"CHORUS_WS_PORT": "9100", "CHORUS_API_KEYS": "a,b"},
                             {"max_streams": 9, "ws_port": None})
    assert (cfg.ws_port, cfg.max_streams, cfg.api_keys) == (9100, 9, ("a", "b"))
    assert cfg.limits.idle_timeout_s == 3
    f.write_text("wsport: 1\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['wsport'\]"):
        load_server_config(f, {}, {})


def test_nested_flags_override_one_field_and_keep_the_files_others(tmp_path) -> None:
    """A flag for a nested setting (`--idle-timeout-s` -> limits.idle_timeout_s) wins over the
    YAML file for that field only; the file's other fields of the same section stand."""
    f = tmp_path / "c.yaml"
    f.write_text("limits:\n  idle_timeout_s: 3\n  max_frame_bytes: 4096\n")
    cfg = load_server_config(f, {}, {"limits.idle_timeout_s": 5.0, "send_queue": 9,
                                     "limits.max_stream_s": None})
    assert (cfg.limits.idle_timeout_s, cfg.limits.max_frame_bytes) == (5.0, 4096)
    assert cfg.limits.max_stream_s == Limits().max_stream_s and cfg.send_queue == 9
    with pytest.raises(ValueError, match=r"limits\.nope"):
        load_server_config(f, {}, {"limits.nope": 1})


def test_serve_help_shows_every_setting_with_its_default() -> None:
    """`chorus serve --help` shows each flag's default (the flags default to "not given" so
    the YAML file and environment can set them) and lists every setting a YAML file may
    hold, nested ones included, with its default; the tunables that were YAML-only have
    flags (idle timeout, frame limit, send queue, drain timeout)."""
    import dataclasses

    from server.app import ServerConfig
    from server.serve import NESTED

    out = subprocess.run([sys.executable, "-m", "clients.cli", "serve", "--help"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    flat = " ".join(out.split("options:", 1)[1].split())  # the flags' help, not the usage line
    base = ServerConfig()
    for flag, default in (("--max-streams", base.max_streams), ("--ws-port", base.ws_port),
                          ("--idle-timeout-s", base.limits.idle_timeout_s),
                          ("--max-frame-bytes", base.limits.max_frame_bytes),
                          ("--send-queue", base.send_queue),
                          ("--drain-timeout-s", base.drain_timeout_s),
                          ("--policy", base.policy)):
        assert f"{flag} " in flat, flag
        section = flat.split(f"{flag} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {default})" in section, (flag, section)
    for f in dataclasses.fields(ServerConfig):
        if f.name in NESTED:
            for sub in dataclasses.fields(NESTED[f.name]):
                value = getattr(getattr(base, f.name), sub.name)
                assert f"{f.name}.{sub.name} = {value!r}" in out, (f.name, sub.name)
        else:
            assert f"{f.name} = {getattr(base, f.name)!r}" in out, f.name


def test_vad_flag_turns_on_vad_endpointing_and_keeps_the_files_endpoint_fields(tmp_path) -> None:
    """`--vad` sets endpoint.vad and leaves the endpoint fields the YAML file gave; without it,
    the file's vad setting stands."""
    f = tmp_path / "c.yaml"
    f.write_text("endpoint:\n  vad_silence_ms: 350\n")
    cfg = load_server_config(f, {}, {"endpoint.vad": True})
    assert (cfg.endpoint.vad, cfg.endpoint.vad_silence_ms) == (True, 350)
    assert not load_server_config(f, {}, {"endpoint.vad": None}).endpoint.vad
    f.write_text("endpoint:\n  vad: true\n")
    assert load_server_config(f, {}, {"endpoint.vad": None}).endpoint.vad


def _gpu_serving_available() -> dict[str, bool]:
    import onnxruntime as ort
    import torch

    have = ort.get_available_providers()
    return {"torch": torch.cuda.is_available(),
            "onnxruntime": "CUDAExecutionProvider" in have,
            "tensorrt": "TensorrtExecutionProvider" in have}


@pytest.mark.parametrize(("flags", "needs", "says"), [
    (["--device", "cuda"], "torch", "torch.cuda.is_available() is False"),
    (["--backend", "onnxruntime", "--device", "cuda"], "onnxruntime", "CUDAExecutionProvider"),
    (["--backend", "onnxruntime", "--device", "cuda", "--ort-provider", "tensorrt"], "tensorrt",
     "TensorrtExecutionProvider"),
])
def test_gpu_serving_fails_at_start_up_with_one_line_where_there_is_no_gpu(
        tmp_path, flags, needs, says) -> None:
    """On a machine without the GPU build each GPU choice stops `chorus serve` before it
    listens, with one `chorus serve: ...` line naming what is missing, and no traceback."""
    if _gpu_serving_available()[needs]:
        pytest.skip(f"this machine can serve {needs} on the GPU")
    proc = subprocess.run([sys.executable, "-m", "clients.cli", "serve", "--bundle",
                           str(tiny_bundle(tmp_path / "b")), "--ws-port", str(free_port()),
                           "--grpc-port", str(free_port()), *flags],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chorus serve: ") and says in err[0], proc.stderr
    assert "listening" not in proc.stdout


def test_int8_server_transcribes_speech_like_fp32(tmp_path) -> None:
    """`chorus serve --int8` with the shipped model: a flite sentence streamed over WebSocket by
    the real client gets a final as good as the fp32 model's on the same audio."""
    from models.audio import load_audio
    from models.backends import make_backend
    from models.bundle import DEFAULT_BUNDLE, load
    from training.eval.metrics import error_rates
    from training.eval.parity import stream_through

    text = "please call stella and ask her to bring these things with her from the store"
    wav = tmp_path / "a.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(wav)], check=True)
    bundle = load(DEFAULT_BUNDLE)
    _, fp32 = stream_through(make_backend("torch", bundle), bundle,
                             load_audio(wav, sample_rate=16_000))
    proc, port = start_server(tmp_path, "--int8", "--decoder", "greedy", "--workers", "1",
                              bundle=DEFAULT_BUNDLE)
    assert any("(torch int8 on cpu" in line for line in proc.startup_lines)  # type: ignore[attr-defined]
    try:
        out = subprocess.run([sys.executable, "-m", "clients.cli", "client", "stream", str(wav),
                              "--url", f"ws://127.0.0.1:{port}/v1/stream", "--fast", "--json"],
                             capture_output=True, text=True, timeout=120)
    finally:
        proc.terminate()
        proc.wait(60)
    assert out.returncode == 0, out.stderr
    finals = [m["text"] for m in map(json.loads, out.stdout.splitlines()) if m["type"] == "final"]
    got = " ".join(t for t in finals if t)
    assert error_rates([text], [got]).wer <= error_rates([text], [fp32]).wer + 0.15, (got, fp32)


def test_device_and_provider_combinations_are_checked_by_name() -> None:
    from server.app import ServerConfig, backend_config

    assert backend_config(ServerConfig()).device == "cpu"
    ok = backend_config(ServerConfig(backend="onnxruntime", device="cuda", ort_provider="tensorrt"))
    assert (ok.device, ok.ort_tensorrt) == ("cuda", True)
    for bad, msg in [(ServerConfig(device="gpu"), "device must be 'cpu' or 'cuda'"),
                     (ServerConfig(ort_provider="cuda", device="cuda"),
                      "ort_provider applies to backend onnxruntime only"),
                     (ServerConfig(backend="onnxruntime", ort_provider="tensorrt"),
                      "ort_provider 'tensorrt' needs device cuda"),
                     (ServerConfig(backend="onnxruntime", device="cuda", ort_provider="cpu"),
                      "ort_provider 'cpu' needs device cpu"),
                     (ServerConfig(backend="onnxruntime", ort_provider="rocm"),
                      "ort_provider must be")]:
        with pytest.raises(ValueError, match=msg):
            backend_config(bad)


def test_every_worker_keeps_listening_until_the_whole_drain_ends(tmp_path) -> None:
    """A server of two workers drains as one: the worker with nothing left to drain keeps its
    SO_REUSEPORT listener open (answering 503) until its sibling's drain ends too, since a
    listener that closes resets the connections the kernel had already queued on it."""
    import psutil

    def listeners() -> int:
        return sum(1 for c in psutil.net_connections(kind="tcp")
                   if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN)

    drain_s = 6.0
    proc, port = start_server(tmp_path, "--workers", "2",
                              env={"CHORUS_DRAIN_TIMEOUT_S": str(drain_s)})
    stuck = raw_ws_client(port)  # lands on one worker and holds its drain to the timeout
    assert listeners() == 2
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(2.0)  # the idle worker's own drain is long over; its sibling's is not
    assert listeners() == 2
    assert proc.wait(30) == 0
    assert time.monotonic() - t0 > drain_s - 0.5
    stuck.close()
