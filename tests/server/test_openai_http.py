"""OpenAI-compatible HTTP transcription (server/openai_http.py), driven by the unmodified
`openai` package against a real server on loopback, with real synthesized speech."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import wave

import pytest

from loadtest.capacity import free_port
from server.openai_http import ApiError, TranscriptionRequest, Upload, parse_form
from server.session import EndpointConfig, Final
from tests.server.conftest import running_server
from tests.server.test_vosk import bundle, wav_path  # noqa: F401 (fixtures)

openai = pytest.importorskip("openai")
KEY = "sk-test"


@pytest.fixture(scope="module")
def server(bundle):  # noqa: F811
    # the random-weight model never stops changing its text: cut an utterance every second,
    # so there are several segments
    with running_server(bundle, http_port=free_port(), api_keys=(KEY,), max_upload_bytes=400_000,
                        endpoint=EndpointConfig(max_utterance_s=1.0)) as app:
        yield app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.cfg.http_port}/v1", api_key=KEY,
                         max_retries=0, timeout=60)


def native_finals(app, wav_path) -> list[dict]:  # noqa: F811
    from websockets.sync.client import connect

    with wave.open(str(wav_path), "rb") as wf:
        rate, data = wf.getframerate(), wf.readframes(wf.getnframes())
    with connect(f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream?token={KEY}") as ws:
        ws.send(json.dumps({"type": "start", "format": {"sample_rate": rate},
                            "interim_results": False}))
        for i in range(0, len(data), 3200):
            ws.send(data[i : i + 3200])
        ws.send(json.dumps({"type": "stop"}))
        return [m for m in map(json.loads, ws) if m["type"] == "final"]


def test_json_text_srt_vtt(server, client, wav_path) -> None:  # noqa: F811
    native = native_finals(server, wav_path)
    assert len(native) >= 3
    expected = " ".join(f["text"] for f in native if f["text"])
    with open(wav_path, "rb") as f:
        r = client.audio.transcriptions.create(model="chorus", file=f)
    assert r.text == expected  # the native path's transcript of the same audio
    with open(wav_path, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f,
                                                  response_format="text")
    assert isinstance(text, str) and text.strip() == r.text
    with open(wav_path, "rb") as f:
        srt = client.audio.transcriptions.create(model="chorus", file=f, response_format="srt",
                                                 language="en", prompt="office")
    blocks = [b.split("\n") for b in srt.strip().split("\n\n")]
    assert [b[0] for b in blocks] == [str(i) for i in range(1, len(blocks) + 1)]
    assert all(" --> " in b[1] and b[1][2] == ":" and b[1][8] == "," for b in blocks)
    assert " ".join(b[2] for b in blocks) == r.text
    with open(wav_path, "rb") as f:
        vtt = client.audio.transcriptions.create(model="chorus", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(blocks)
    assert len(blocks) == len([f for f in native if f["text"]]) and expected


def test_verbose_json_words_and_segments(server, client, wav_path) -> None:  # noqa: F811
    with open(wav_path, "rb") as f:
        r = client.audio.transcriptions.create(model="chorus", file=f,
                                               response_format="verbose_json",
                                               timestamp_granularities=["word", "segment"])
    assert r.language == "english" and r.duration == pytest.approx(3.9, abs=1.5)
    assert r.words and r.segments and len(r.segments) >= 3
    assert [w.word for w in r.words] == r.text.split()
    assert all(0 <= w.start <= w.end <= r.duration + 0.5 for w in r.words)
    assert " ".join(s.text for s in r.segments) == r.text
    assert all(a.end <= b.start + 1e-6 for a, b in zip(r.segments, r.segments[1:], strict=False))
    with open(wav_path, "rb") as f:
        words_only = client.audio.transcriptions.create(
            model="chorus", file=f, response_format="verbose_json",
            timestamp_granularities=["word"])
    assert words_only.words and not getattr(words_only, "segments", None)


def test_models_and_auth(server, client, wav_path) -> None:  # noqa: F811
    ids = [m.id for m in client.models.list()]
    assert "chorus" in ids
    bad = openai.OpenAI(base_url=f"http://127.0.0.1:{server.cfg.http_port}/v1",
                        api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.body["code"] == "invalid_api_key"
    with open(wav_path, "rb") as f, pytest.raises(openai.AuthenticationError):
        bad.audio.transcriptions.create(model="chorus", file=f)


def test_errors_in_openai_shape(server, client, wav_path, tmp_path) -> None:  # noqa: F811
    def error(exc_type, **kw):
        with open(kw.pop("path", wav_path), "rb") as f, pytest.raises(exc_type) as e:
            client.audio.transcriptions.create(file=f, **{"model": "chorus", **kw})
        assert set(e.value.body) == {"message", "type", "param", "code"}, e.value.body
        return e.value

    assert error(openai.BadRequestError, model="gpt-9").body["param"] == "model"
    assert error(openai.BadRequestError, response_format="xml").body["param"] == \
        "response_format"
    assert error(openai.BadRequestError, language="fr").body["param"] == "language"
    assert error(openai.BadRequestError, response_format="json",
                 timestamp_granularities=["word"]).body["param"] == "timestamp_granularities"
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"this is not audio at all" * 10)
    e = error(openai.BadRequestError, path=junk)
    assert e.body["param"] == "file" and e.body["code"] == "invalid_file_format"
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + b"\x00" * 500_000)
    e = error(openai.APIStatusError, path=big)
    assert e.status_code == 413 and e.body["code"] == "file_too_large"
    # not multipart, and an unknown route: plain HTTP
    port = server.cfg.http_port
    for path, body, ctype, status in (("/v1/audio/transcriptions", b"{}", "application/json", 415),
                                      ("/v1/nope", b"", "text/plain", 404)):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                     headers={"Content-Type": ctype,
                                              "Authorization": f"Bearer {KEY}"})
        with pytest.raises(urllib.error.HTTPError) as h:
            urllib.request.urlopen(req, timeout=10)
        assert h.value.code == status and set(json.loads(h.value.read())["error"]) == \
            {"message", "type", "param", "code"}
    # still serving
    with open(wav_path, "rb") as f:
        assert client.audio.transcriptions.create(model="chorus", file=f).text


def test_a_transcription_while_draining_is_a_503_to_retry_elsewhere(bundle, wav_path) -> None:  # noqa: F811
    """After SIGTERM's drain began, POST /v1/audio/transcriptions gets 503 server_shutdown with
    Retry-After (the client retries on another instance), not a 400 blaming the file."""
    import asyncio

    with running_server(bundle, http_port=free_port()) as app:
        asyncio.run_coroutine_threadsafe(app.drain(), app.loop).result(10)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{app.cfg.http_port}/v1", api_key="none",
                          max_retries=0, timeout=60)
        with open(wav_path, "rb") as f, pytest.raises(openai.APIStatusError) as e:
            c.audio.transcriptions.create(model="chorus", file=f)
    assert e.value.status_code == 503, e.value.body
    assert e.value.body["code"] == "server_shutdown" and e.value.body["type"] == "server_error"
    assert e.value.response.headers.get("retry-after") == "1"


# ---- parsing and rendering, without I/O ----------------------------------------------------------

def test_form_parsing_and_rendering() -> None:
    from server.openai_http import render

    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nchorus\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"timestamp_granularities[]\"\r\n\r\n"
            b"word\r\n--XyZ\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\n"
            b"verbose_json\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n\x00\x01\r\n\r\n--XyZ--\r\n")
    form = parse_form("multipart/form-data; boundary=XyZ", body)
    req = TranscriptionRequest.from_form(form)
    assert req.file == Upload("a.wav", b"\x00\x01\r\n") and req.granularities == ("word",)
    with pytest.raises(ApiError) as e:
        TranscriptionRequest.from_form({"model": ["chorus"]})
    assert e.value.param == "file" and e.value.status == 400
    from models.decoding import Word

    finals = [Final("hi there", [Word("hi", 0.1, 0.3, 0.9), Word("there", 0.4, 0.9, 0.8)], 0.8,
                    0.0, 1.0, [], 1.0),
              Final("bye", [Word("bye", 3661.5, 3661.8, 0.9)], 0.9, 3661.0, 3662.25, [], 3663.0)]
    srt = render(TranscriptionRequest(req.file, "chorus", "srt"), finals, 3663.0)[1]
    assert srt == ("1\n00:00:00,000 --> 00:00:01,000\nhi there\n\n"
                   "2\n01:01:01,000 --> 01:01:02,250\nbye\n\n")
    vtt = render(TranscriptionRequest(req.file, "chorus", "vtt"), finals, 3663.0)[1]
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhi there\n")
    verbose = json.loads(render(req, finals, 3663.0)[1])
    assert verbose["text"] == "hi there bye" and "segments" not in verbose
    assert [w["word"] for w in verbose["words"]] == ["hi", "there", "bye"]


def test_chorus_serve_http_port(tmp_path, wav_path) -> None:  # noqa: F811
    """`chorus serve --http-port`: the OpenAI client works; SIGTERM exits 0."""
    import signal

    from tests.server.test_serve import start_server

    port = free_port()
    proc, _ = start_server(tmp_path, "--http-port", str(port))
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        assert "chorus" in [m.id for m in c.models.list()]
        with open(wav_path, "rb") as f:
            assert isinstance(c.audio.transcriptions.create(model="chorus", file=f).text, str)
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
