"""The command-line clients against a real server: `chorus stream` (WebSocket), `chorus batch`
(gRPC BatchRecognize), and `chorus demo`."""

from __future__ import annotations

import json
import subprocess
import sys

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


def offline(bundle, wav) -> str:
    import numpy as np

    audio = load_audio(wav, sample_rate=16_000)
    t = StreamingTranscriber(bundle)
    t.accept_waveform((np.clip(audio, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768)
    return t.finalize().text


def chorus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_stream_and_batch_clients(bundle, wavs) -> None:
    with running_server(bundle, api_keys=("key",)) as app:
        url = f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"
        proc = chorus("stream", "--url", url, "--api-key", "key", "--format", "jsonl",
                      *map(str, wavs))
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
        assert [x["text"] for x in lines] == [offline(bundle, w) for w in wavs]
        denied = chorus("stream", "--url", url, str(wavs[0]))
        assert denied.returncode != 0 and "401" in denied.stderr
        proc = chorus("batch", "--server", f"127.0.0.1:{app.cfg.grpc_port}", "--api-key", "key",
                      *map(str, wavs))
        assert proc.returncode == 0, proc.stderr
        got = {x["path"]: x["text"] for x in map(json.loads, proc.stdout.splitlines())}
        assert got == {str(w): offline(bundle, w) for w in wavs}


def test_demo_runs_offline(bundle) -> None:
    proc = chorus("demo", "--bundle", str(bundle.path), "--text", "hello there")
    assert proc.returncode == 0, proc.stderr
    assert "said (en-us): hello there" in proc.stdout and "heard:" in proc.stdout
