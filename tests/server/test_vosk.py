"""The Vosk-compatible WebSocket (server/vosk.py): vosk-server's own client exchanges replayed
against a real server on loopback, with real synthesized speech."""

from __future__ import annotations

import json
import subprocess
import threading
import wave

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from loadtest.capacity import free_port
from models.bundle import load
from models.decoding import Word
from server.session import EndpointConfig, Final, Limits, Partial, SessionError
from server.vosk import Replies, VoskOptions, parse_message
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server

WORD_KEYS = {"word", "start", "end", "conf"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


@pytest.fixture(scope="module")
def wav_path(tmp_path_factory):
    """A WAV file as vosk-server's scripts read it (espeak-ng writes 22050 Hz mono PCM16)."""
    wav = tmp_path_factory.mktemp("w") / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav),
                    "call the office and say hello. then turn on the lights"], check=True)
    return wav


@pytest.fixture(scope="module")
def server(bundle):
    # the random-weight model never stops changing its text: utterances are cut every second,
    # so results come mid-stream too (replies to audio frames), not only after eof
    with running_server(bundle, vosk_port=free_port(),
                        endpoint=EndpointConfig(max_utterance_s=1.0)) as app:
        yield app


def vosk_client(url: str, wav_path, config: str | None, frames: int = 4000,
                headers: dict | None = None) -> tuple[list[dict], dict, int | None]:
    """What test_simple.py / test_words.py / test_alternatives.py do: config, then the WAV's
    frames (4000 frames = 8000 bytes), one reply read per frame sent, then eof and one reply.
    -> (replies to audio, the reply to eof, the close code)."""
    replies = []
    with connect(url, additional_headers=headers) as ws, wave.open(str(wav_path), "rb") as wf:
        if config is not None:
            ws.send(config % wf.getframerate() if "%d" in config else config)
        while data := wf.readframes(frames):
            ws.send(data)
            replies.append(json.loads(ws.recv()))
        ws.send('{"eof" : 1}')
        last = json.loads(ws.recv())
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        return replies, last, ws.close_code


def native_finals(app, wav_path, **start) -> list[dict]:
    with wave.open(str(wav_path), "rb") as wf:
        rate, data = wf.getframerate(), wf.readframes(wf.getnframes())
    with connect(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream") as ws:
        ws.send(json.dumps({"type": "start", "format": {"sample_rate": rate}, **start}))
        for i in range(0, len(data), 3200):
            ws.send(data[i : i + 3200])
        ws.send(json.dumps({"type": "stop"}))
        return [m for m in map(json.loads, ws) if m["type"] == "final"]


def texts(results: list[dict]) -> str:
    out = []
    for r in results:
        t = r["alternatives"][0]["text"] if "alternatives" in r else r.get("text")
        if t:
            out.append(t)
    return " ".join(out)


def test_simple_replays_vosk_exchange_and_equals_native(server, wav_path) -> None:
    url = f"ws://127.0.0.1:{server.cfg.vosk_port}"
    replies, last, close = vosk_client(url, wav_path, '{ "config" : { "sample_rate" : %d } }')
    assert close == 1000
    assert replies and all(set(r) in ({"partial"}, {"text"}) for r in replies), replies
    assert set(last) == {"text"}
    assert sum("text" in r for r in replies) >= 2  # utterances ended mid-stream
    native = native_finals(server, wav_path)
    assert len(native) >= 3 and texts(replies + [last]) == " ".join(f["text"] for f in native)


def test_no_config_means_16000_hz(server, wav_path, tmp_path) -> None:
    import numpy as np
    import soxr

    with wave.open(str(wav_path), "rb") as wf:
        rate, pcm = wf.getframerate(), np.frombuffer(wf.readframes(wf.getnframes()), "<i2")
    audio = soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000)
    wav16 = tmp_path / "a16.wav"
    with wave.open(str(wav16), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    replies, last, close = vosk_client(f"ws://127.0.0.1:{server.cfg.vosk_port}", wav16, None)
    assert close == 1000
    assert texts(replies + [last]) == " ".join(f["text"] for f in native_finals(server, wav16))


def test_words_replays_vosk_exchange(server, wav_path) -> None:
    url = f"ws://127.0.0.1:{server.cfg.vosk_port}"
    config = '{"config" : {"sample_rate" : %d, "words" : 1, "model": "ignored", "x": [1]}}'
    replies, last, close = vosk_client(url, wav_path, config)
    assert close == 1000
    results = [r for r in replies + [last] if "partial" not in r]
    for r in replies:
        assert set(r) in ({"partial"}, {"text", "result"}, {"text"}), r
    assert any("result" in r for r in results)
    for r in results:
        if r["text"]:
            assert set(r) == {"text", "result"}
            assert [w["word"] for w in r["result"]] == r["text"].split()
            assert all(set(w) == WORD_KEYS for w in r["result"])
            assert all(0 <= w["start"] <= w["end"] for w in r["result"])
        else:
            assert r == {"text": ""}
    native = native_finals(server, wav_path)
    assert texts(results) == " ".join(f["text"] for f in native)
    assert [w["start"] for r in results for w in r.get("result", [])] == \
        [w["start"] for f in native for w in f["words"]]


def test_alternatives_replays_vosk_exchange(server, wav_path) -> None:
    url = f"ws://127.0.0.1:{server.cfg.vosk_port}"
    config = '{"config" : { "max_alternatives" : 20, "sample_rate" : %d } }'
    replies, last, close = vosk_client(url, wav_path, config, frames=int(22050 * 0.2))
    assert close == 1000
    results = [r for r in replies + [last] if "partial" not in r]
    assert all(set(r) in ({"partial"}, {"alternatives"}) for r in replies)
    assert set(last) == {"alternatives"}
    for r in results:
        assert 1 <= len(r["alternatives"]) <= 10
        assert all(set(a) == {"text", "confidence"} for a in r["alternatives"])
    assert any(len(r["alternatives"]) > 1 for r in results) and len(results) >= 3
    native = native_finals(server, wav_path, decoder="beam", max_alternatives=10)
    assert texts(results) == " ".join(f["text"] for f in native)
    # with words: each alternative has its result (word times for the best one)
    replies, last, _ = vosk_client(url, wav_path, '{"config": {"max_alternatives": 3, '
                                                  '"words": 1, "sample_rate": %d}}')
    for r in [r for r in replies + [last] if "alternatives" in r]:
        assert all(set(a) == {"text", "confidence", "result"} for a in r["alternatives"])
        best = r["alternatives"][0]
        assert [w["word"] for w in best["result"]] == best["text"].split()


def test_api_key_like_the_native_socket(bundle, wav_path) -> None:
    with running_server(bundle, vosk_port=free_port(), api_keys=("s3cret",)) as app:
        url = f"ws://127.0.0.1:{app.cfg.vosk_port}"
        for bad in (url, url + "/?token=wrong"):
            with pytest.raises(InvalidStatus) as e:
                connect(bad)
            assert e.value.response.status_code == 401
        for ok in ((url + "/?token=s3cret", None), (url, {"Authorization": "Bearer s3cret"})):
            _, last, close = vosk_client(ok[0], wav_path, '{"config": {"sample_rate": %d}}',
                                         headers=ok[1])
            assert close == 1000 and set(last) == {"text"}


@pytest.mark.parametrize("messages, code, close_code", [
    (["{nope"], "invalid_json", 1007),
    (['{"config": {"sample_rate": "16000"}}'], "bad_config", 1007),
    (['{"config": {"sample_rate": 16000.5}}'], "bad_config", 1007),
    (['{"config": {"sample_rate": 0}}', b"\x00\x00"], "bad_config", 1007),
    (['{"config": {"words": "yes"}}'], "bad_config", 1007),
    (['{"config": {"max_alternatives": -1}}'], "bad_config", 1007),
    (['{"config": {"phrase_list": "abc"}}'], "bad_config", 1007),
    (['{"config": 5}'], "bad_config", 1007),
    (['{"reset": 1}'], "unknown_type", 1008),
    ([b"\x00\x01\x02"], "bad_audio", 1007),
    ([b"\x00" * 5000], "frame_too_large", 1009),
    ([b"\x00\x00" * 100, '{"config": {"sample_rate": 8000}}'], "bad_config", 1007),
])
def test_bad_input_gets_an_error_and_others_continue(bundle, wav_path, messages, code,
                                                     close_code) -> None:
    limits = Limits(max_frame_bytes=4000, idle_timeout_s=30)
    with running_server(bundle, vosk_port=free_port(), limits=limits) as app:
        url = f"ws://127.0.0.1:{app.cfg.vosk_port}"
        good: list = []
        worker = threading.Thread(target=lambda: good.append(vosk_client(
            url, wav_path, '{"config": {"sample_rate": %d}}', frames=1000)))
        worker.start()
        got = []
        with connect(url) as ws:
            try:
                for m in messages:
                    ws.send(m)
                    if isinstance(m, bytes) and m == b"\x00\x00" * 100:
                        got.append(json.loads(ws.recv()))
                while True:
                    got.append(json.loads(ws.recv(timeout=10)))
            except ConnectionClosed:
                pass
            assert ws.close_code == close_code, got
        worker.join(60)
    assert set(got[-1]) == {"error"} and got[-1]["error"].startswith(code + ": "), got
    replies, last, close = good[0]
    assert close == 1000 and set(last) == {"text"} and len(replies) > 10


# ---- the translation, without I/O --------------------------------------------------------------

def test_options_like_vosk_server() -> None:
    opt = VoskOptions().updated({"sample_rate": 8000.0, "words": True, "max_alternatives": 20,
                                 "phrase_list": ["one two", " "], "model": "x"})
    assert opt == VoskOptions(8000, True, 10, ("one two",))
    assert VoskOptions().updated({}) == VoskOptions(16000, False, 0, ())
    over = opt.session_overrides()
    assert over["decoder"] == "beam" and over["hotwords"][0][0] == "one two"
    with pytest.raises(SessionError, match="sample_rate must be a whole number"):
        VoskOptions().updated({"sample_rate": True})
    assert parse_message(b"\x01") == ("audio", b"\x01")
    assert parse_message('{"eof" : 1}') == ("eof", None)
    assert parse_message('{"config": {"words": 1}}') == ("config", {"words": 1})


def test_replies_one_per_frame() -> None:
    w = [Word("hello", 0.1, 0.4, 0.9), Word("there", 0.5, 0.8, 0.7)]
    final = Final("hello there", w, 0.7, 0.0, 1.0, [("hello there", -1.5), ("hello their", -2.0)],
                  1.0)
    r = Replies(VoskOptions(words=True))
    assert r.for_audio([]) == {"partial": ""}
    assert r.for_audio([Partial("hel", 0.0, [])]) == {"partial": "hel"}
    assert r.for_audio([]) == {"partial": "hel"}
    assert r.for_audio([final]) == {"text": "hello there", "result": [
        {"word": "hello", "start": 0.1, "end": 0.4, "conf": 0.9},
        {"word": "there", "start": 0.5, "end": 0.8, "conf": 0.7}]}
    assert r.for_audio([]) == {"partial": ""}
    assert r.for_eof([]) == {"text": ""}
    assert Replies(VoskOptions()).for_eof([final, final]) == {"text": "hello there hello there"}
    alts = Replies(VoskOptions(max_alternatives=1)).for_eof([final])
    assert alts == {"alternatives": [{"text": "hello there", "confidence": -1.5}]}
    one = Replies(VoskOptions(max_alternatives=5)).for_eof(
        [Final("hi", [], 0.8, 0.0, 1.0, [], 1.0)])
    assert one == {"alternatives": [{"text": "hi", "confidence": 0.8}]}


def test_chorus_serve_vosk_port_and_drain(tmp_path) -> None:
    """`chorus serve --vosk-port`: a Vosk client streams; SIGTERM gives it the owed result, then
    the error and close 1001, and the process exits 0."""
    import signal
    import time

    import numpy as np

    from tests.server.test_serve import start_server

    vosk_port = free_port()
    proc, _ = start_server(tmp_path, "--vosk-port", str(vosk_port))
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2) * 32767).astype("<i2")
    got = []
    with connect(f"ws://127.0.0.1:{vosk_port}") as ws:
        ws.send('{"config": {"sample_rate": 16000}}')
        ws.send(audio.tobytes())
        got.append(json.loads(ws.recv()))
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        try:
            while True:
                got.append(json.loads(ws.recv(timeout=30)))
        except ConnectionClosed:
            pass
        assert ws.close_code == 1001
    assert proc.wait(60) == 0
    assert set(got[0]) in ({"partial"}, {"text"}) and set(got[-1]) == {"error"}
    assert got[-1]["error"].startswith("server_shutdown: ") and "text" in got[-2], got
