"""Whole-audio recognition on a server started with the VAD (server/whole.py): the silence is
skipped (the model never steps through it) and every result is in the file's seconds; driven
by the unmodified `openai` package and the native gRPC stub against a real server on loopback,
with real synthesized speech."""

from __future__ import annotations

import subprocess

import grpc
import numpy as np
import pytest
import soundfile as sf

from loadtest.capacity import free_port
from models.audio import load_audio
from models.bundle import load
from server.session import EndpointConfig
from tests.server.conftest import running_server

openai = pytest.importorskip("openai")
GAP_S = 6.0


@pytest.fixture(scope="module")
def shipped():
    return load()


@pytest.fixture(scope="module")
def two_commands(tmp_path_factory):
    """'turn on the lights', 6 s of silence, 'set a timer for ten minutes' (16 kHz WAV) ->
    (path, where the silence starts, where it ends)."""
    tmp = tmp_path_factory.mktemp("wv")
    parts = []
    for i, text in enumerate(["turn on the lights", "set a timer for ten minutes"]):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp / f"{i}.wav"), text],
                       check=True)
        x = load_audio(tmp / f"{i}.wav", sample_rate=16_000)
        voiced = np.flatnonzero(np.abs(x) > 0.01)
        parts.append(x[voiced[0] : voiced[-1] + 1])
    lead = np.zeros(8000, np.float32)
    audio = np.concatenate([lead, parts[0], np.zeros(int(GAP_S * 16000), np.float32), parts[1],
                            lead])
    sf.write(tmp / "both.wav", audio, 16_000, subtype="PCM_16")
    gap_start = (lead.size + parts[0].size) / 16_000
    return tmp / "both.wav", gap_start, gap_start + GAP_S


@pytest.fixture(scope="module")
def server(shipped):
    with running_server(shipped, http_port=free_port(), endpoint=EndpointConfig(vad=True)) as app:
        yield app


def _computed_s(app) -> float:
    """Audio seconds the model has stepped through so far (chunks x chunk length)."""
    return app.dispatcher.metrics.chunks * app.bundle.decoding.chunk_frames / 100


def _outside_the_gap(spans: list[tuple[float, float]], gap: tuple[float, float]) -> bool:
    a, b = gap[0] + 0.4, gap[1] - 0.4  # segments are padded 200 ms; decoding adds a little
    return all(end <= a or start >= b for start, end in spans)


def test_openai_transcription_skips_the_silence_in_file_seconds(server, two_commands) -> None:
    path, *gap = two_commands
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.cfg.http_port}/v1",
                           api_key="none", max_retries=0, timeout=120)
    before = _computed_s(server)
    with open(path, "rb") as f:
        r = client.audio.transcriptions.create(model="chorus", file=f,
                                               response_format="verbose_json",
                                               timestamp_granularities=["word", "segment"])
    assert _computed_s(server) - before < r.duration - GAP_S + 1.5  # the silence not computed
    assert "lights" in r.text and "timer" in r.text, r.text
    assert r.duration == pytest.approx(sf.info(path).duration, abs=0.01)
    assert len(r.segments) >= 2 and " ".join(s.text for s in r.segments) == r.text
    assert _outside_the_gap([(s.start, s.end) for s in r.segments], gap), (r.segments, gap)
    assert _outside_the_gap([(w.start, w.end) for w in r.words], gap)
    after = [w for w in r.words if w.start > gap[1] - 0.4]
    assert after and after[0].word == "set", r.words  # the second command, at its file time


def test_native_grpc_recognize_skips_the_silence_in_file_seconds(server, two_commands) -> None:
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    path, *gap = two_commands
    before = _computed_s(server)
    with grpc.insecure_channel(f"127.0.0.1:{server.cfg.grpc_port}") as ch:
        cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
        r = pb_grpc.AsrStub(ch).Recognize(pb.RecognizeRequest(config=cfg,
                                                              audio=path.read_bytes()))
    assert _computed_s(server) - before < sf.info(path).duration - GAP_S + 1.5
    assert "lights" in r.text and "timer" in r.text, r.text
    assert [x.seq for x in r.results] == list(range(len(r.results)))
    assert _outside_the_gap([(x.start, x.end) for x in r.results], gap)
    words = [w for x in r.results for w in x.words]
    assert _outside_the_gap([(w.start, w.end) for w in words], gap)
    assert min(w.start for w in words if w.word == "set") > gap[1] - 0.4
    with grpc.insecure_channel(f"127.0.0.1:{server.cfg.grpc_port}") as ch:  # bad bytes
        cfg = pb.RecognitionConfig(format=pb.AudioFormat(encoding=pb.WAV))
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.AsrStub(ch).Recognize(pb.RecognizeRequest(config=cfg, audio=b"RIFF??junk"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
