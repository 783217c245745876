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
