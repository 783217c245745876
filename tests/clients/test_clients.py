"""The command-line clients against a real server: `chorus client stream` (WebSocket) and
`chorus client transcribe` (gRPC), and `chorus demo`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.audio import load_audio
from models.bundle import load
from models.streaming import StreamingTranscriber
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    out = []
    for i, text in enumerate(["good morning", "where is the station"]):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(d / f"{i}.wav"), text], check=True)
        out.append(d / f"{i}.wav")
    return out


def pcm16_text(bundle, wav) -> str:
    """What the server makes of the file sent as 16 kHz PCM16 (the stream client's way)."""
    audio = load_audio(wav, sample_rate=16_000)
    t = StreamingTranscriber(bundle)
    t.accept_waveform((np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768)
    return t.finalize().text


def chorus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_client_stream(bundle, wavs) -> None:
    with running_server(bundle, api_keys=("key",)) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        proc = chorus("client", "stream", "--url", url, "--api-key", "key", "--json", "--fast",
                      *map(str, wavs))
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
        assert [x["source"] for x in lines] == [str(w) for w in wavs]
        assert [x["text"] for x in lines] == [pcm16_text(bundle, w) for w in wavs]
        paced = chorus("client", "stream", "--url", url, "--api-key", "key", str(wavs[0]))
        assert paced.returncode == 0 and paced.stdout.strip() == pcm16_text(bundle, wavs[0])
        denied = chorus("client", "stream", "--url", url, str(wavs[0]))
        assert denied.returncode != 0 and "401" in denied.stderr
    nomic = chorus("client", "stream", "--mic", "--url", url)
    assert nomic.returncode != 0 and "no usable input device" in nomic.stderr


def test_client_stream_takes_a_server_address_without_path_or_with_http_scheme(bundle, wavs) -> None:
    """`--url ws://host:port` (path left off), `http://host:port` and `http://host:port/v1/stream`
    all reach /v1/stream and give the file's transcript; a URL of another scheme is refused in
    one line that says what is expected, without a traceback."""
    want = pcm16_text(bundle, wavs[0])
    with running_server(bundle) as app:
        port = app.cfg.ws_port
        for url in (f"ws://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{port}",
                    f"http://127.0.0.1:{port}/v1/stream"):
            proc = chorus("client", "stream", "--url", url, "--fast", str(wavs[0]))
            assert proc.returncode == 0 and proc.stdout.strip() == want, (url, proc.stderr)
    for url in ("ftp://127.0.0.1:1/v1/stream", "127.0.0.1:8000"):
        bad = chorus("client", "stream", "--url", url, "--fast", str(wavs[0]))
        assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
        assert "--url" in bad.stderr and "ws://HOST:PORT" in bad.stderr, bad.stderr


def test_client_transcribe_jsonl_resume_and_srt(bundle, wavs, tmp_path) -> None:
    flac = tmp_path / "x.flac"  # not a WAV: decoded by the client
    import soundfile as sf

    sf.write(flac, load_audio(wavs[1], sample_rate=16_000), 16_000)
    files = [*map(str, wavs), str(flac)]
    with running_server(bundle) as app:
        grpc_addr = f"127.0.0.1:{app.cfg.grpc_port}"
        out = tmp_path / "r.jsonl"
        proc = chorus("client", "transcribe", "--grpc", grpc_addr, "--out", str(out), files[0])
        assert proc.returncode == 0, proc.stderr
        proc = chorus("client", "transcribe", "--grpc", grpc_addr, "--out", str(out),
                      "--concurrency", "2", *files)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert sorted(r["path"] for r in rows) == sorted(files)  # first file not redone
        assert {r["path"]: r["text"] for r in rows}[str(flac)] == pcm16_text(bundle, wavs[1])
        proc = chorus("client", "transcribe", "--grpc", grpc_addr, "--out", str(tmp_path / "subs.srt"),
                      *files)
        assert proc.returncode == 0, proc.stderr
        srts = sorted((tmp_path / "subs").glob("*.srt"))
        assert [p.name for p in srts] == ["0.srt", "1.srt", "x.srt"]
        text = srts[0].read_text()
        assert not text or (text.startswith("1\n00:00:") and " --> " in text)


def test_demo_runs_offline(bundle) -> None:
    proc = chorus("demo", "--bundle", str(bundle.path), "--text", "hello there")
    assert proc.returncode == 0, proc.stderr
    assert "said (en-us): hello there" in proc.stdout and "heard:" in proc.stdout


def abort_connections(app) -> None:
    """Drop every WebSocket connection of the server without a close frame (a network cut)."""
    def abort() -> None:
        for conn in list(app.ws_server.connections):
            conn.transport.abort()

    app.loop.call_soon_threadsafe(abort)


def test_stream_library_resumes_after_dropped_connections(bundle, wavs) -> None:
    """clients.client_stream.stream: the connection is cut three times mid-stream; the client
    reconnects, resumes from the last acked offset and returns the finals of an uninterrupted
    run (several, in order, none twice)."""
    import time

    from clients.client_stream import stream
    from server.session import EndpointConfig

    audio = np.concatenate([load_audio(w, sample_rate=16_000) for w in wavs] * 2)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    frames = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    with running_server(bundle, endpoint=EndpointConfig(max_utterance_s=1.0)) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        want = stream(url, iter(frames), continuous=True)
        assert len(want) >= 3

        def cut_frames():
            for k, frame in enumerate(frames):
                if k in (5, 17, 30):
                    abort_connections(app)
                    time.sleep(0.05)
                yield frame

        tries: list = []
        got = stream(url, cut_frames(), continuous=True, backoff_s=0.05,
                     on_reconnect=lambda n, exc: tries.append(n))
        assert app.metrics.resumes.labels("resumed")._value.get() == 3
    assert tries == [1, 1, 1]  # each drop resumed at the first try
    assert [f["text"] for f in got] == [f["text"] for f in want]
    assert [f["seq"] for f in got] == list(range(len(want)))


def test_client_stream_cli_survives_a_forced_disconnect(bundle, wavs) -> None:
    """`chorus client stream` (paced in real time) loses its connection half-way: it resumes
    by itself and prints the transcript of an uninterrupted stream."""
    import threading
    import time

    with running_server(bundle) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        seconds = app.metrics.audio_seconds._value

        def cut_half_way() -> None:
            deadline = time.monotonic() + 60
            while seconds.get() < 0.5 and time.monotonic() < deadline:
                time.sleep(0.01)
            abort_connections(app)

        cutter = threading.Thread(target=cut_half_way)
        cutter.start()
        proc = chorus("client", "stream", "--url", url, str(wavs[1]))
        cutter.join(60)
        resumed = app.metrics.resumes.labels("resumed")._value.get()
    assert proc.returncode == 0, proc.stderr
    assert "resuming (try 1 of 5)" in proc.stderr and resumed == 1
    assert proc.stdout.strip() == pcm16_text(bundle, wavs[1])
