"""Resume after reconnect: the sans-I/O ledger (server/resume.py), then a real server on
loopback with real synthesized speech, over WebSocket and native gRPC. A stream cut at random
points and resumed each time gives exactly the finals of an uninterrupted run (in order, none
repeated, no audio lost or counted twice) while a stream beside it is untouched; a wrong token
or an expired window gets `resume_failed` naming why; an abandoned stream's slot is held for
the window and then released."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
from websockets.sync.client import connect

from models.audio import load_audio, to_pcm16
from models.bundle import load
from server.resume import ResumeError, ResumeLedger, Tokens
from server.session import EndpointConfig, Final, Limits
from tests.models.test_cli import tiny_bundle
from tests.server.conftest import running_server

FRAME = 3200  # bytes: 100 ms of 16 kHz PCM16
ENDPOINT = EndpointConfig(max_utterance_s=1.0)  # several finals per stream, at fixed frames
START = {"type": "start", "continuous": True, "interim_results": True}


# ---- the ledger, sans I/O ---------------------------------------------------------------------
def fin(seq: int) -> Final:
    return Final(f"t{seq}", [], 1.0, 0.0, 0.0, [], 0.0, seq)


def test_ledger_skips_resent_bytes_and_owes_the_undelivered_finals() -> None:
    led = ResumeLedger("tok", align=2, keep=4)
    assert led.incoming(b"abcd") == b"abcd"
    led.took(4)
    led.took(6)
    assert led.acked == 10
    for k in range(3):
        led.made(fin(k))
    owed = led.resume(6, 1)  # the client saw acked=6 and one final
    assert [f.seq for f in owed] == [1, 2]
    assert led.incoming(b"xy") == b""  # bytes 6..8: the server has them
    assert led.incoming(b"zwAB") == b"AB"  # 8..10 skipped, 10.. new: the frame straddles
    assert led.incoming(b"CD") == b"CD"
    led.took(4)
    assert led.resume(14, 3) == []  # all delivered: nothing owed, finals forgotten
    for k in range(3, 9):
        led.made(fin(k))  # kept: seq 5..8 (keep=4)
    with pytest.raises(ValueError, match="expected seq 9, got 3"):
        led.made(fin(3))
    for offset, finals, reason, text in [
            (16, 9, "offset_ahead", "offset 16 is beyond the 14 audio bytes"),
            (13, 9, "offset_unaligned", "not a multiple of the 2-byte sample frame"),
            (14, 10, "finals_ahead", "the stream has made only 9"),
            (14, 4, "finals_gone", "finals before seq 5 are no longer kept")]:
        with pytest.raises(ResumeError) as e:
            led.resume(offset, finals)
        assert e.value.reason == reason and text in str(e.value), e.value
    assert [f.seq for f in led.resume(14, 5)] == [5, 6, 7, 8]
    assert ResumeLedger(None).resume(0, 0) == []  # not resumable: keeps nothing
    plain = ResumeLedger(None)
    plain.made(fin(0))
    assert plain.resume(0, 1) == []


def test_tokens_say_why_a_token_cannot_be_resumed() -> None:
    tokens: Tokens[str] = Tokens(remember=2)
    for t in ("a", "b", "c", "d"):
        tokens.add(t, t.upper())
    assert tokens.find("a", window_s=30) == "A"
    tokens.remove("a", "expired")
    tokens.remove("b", "ended")
    tokens.remove("c", "server_shutdown")  # remember=2: "a" is forgotten

    def reason(token: object) -> str:
        with pytest.raises(ResumeError) as e:
            tokens.find(token, window_s=30)
        return e.value.reason

    assert [reason(t) for t in ("b", "c", "a", "zz", None, 5, "x" * 500)] == \
        ["ended", "server_shutdown", "unknown_token", "unknown_token", "unknown_token",
         "unknown_token", "unknown_token"]
    tokens.remove("d", "expired")
    with pytest.raises(ResumeError, match=r"resume_window_s=30 s\) passed"):
        tokens.find("d", window_s=30)


# ---- a real server ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


def say(tmp_path_factory, text: str) -> np.ndarray:
    wav = tmp_path_factory.mktemp("w") / "a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
    return load_audio(wav, sample_rate=16_000)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> bytes:
    """About 4 s of 16 kHz PCM16: two sentences with a pause."""
    a = say(tmp_path_factory, "call the office and say hello")
    b = say(tmp_path_factory, "open the garage door")
    return to_pcm16(np.concatenate([a, np.zeros(8000, np.float32), b]))


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> bytes:
    return to_pcm16(say(tmp_path_factory, "where is the station"))


def ws_url(app) -> str:
    return f"ws://127.0.0.1:{app.cfg.ws_port}/v1/stream"


def ws_solo(url: str, pcm: bytes) -> tuple[list[dict], dict]:
    """One uninterrupted stream: its finals and its `end`."""
    return ws_run(connect(url), START, pcm)


def ws_run(ws, first: dict, pcm: bytes) -> tuple[list[dict], dict]:
    """On an open connection: `first` (start or resume), the audio, stop -> the finals and
    the `end` (any error fails)."""
    finals = []
    with ws:
        ws.send(json.dumps(first))
        ready = json.loads(ws.recv())
        assert ready["type"] == "ready", ready
        for i in range(0, len(pcm), FRAME):
            ws.send(pcm[i : i + FRAME])
        ws.send(json.dumps({"type": "stop"}))
        for raw in ws:
            msg = json.loads(raw)
            assert msg["type"] != "error", msg
            if msg["type"] == "final":
                finals.append(msg)
            if msg["type"] == "end":
                return finals, msg
    raise AssertionError("no end")


def cut(ws) -> None:
    """The connection just ends: no close frame (as when a network drops)."""
    with contextlib.suppress(OSError):
        ws.socket.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        ws.close()


def ws_with_cuts(url: str, pcm: bytes, cuts: list[int], rng) -> tuple[list[dict], dict, list]:
    """Stream `pcm`, cutting the connection when the bytes sent reach each cut point and
    resuming each time from the last `acked` received (or a little before: the server skips
    what it has). Returns the finals, the `end` and the (offset sent, acked in ready) pairs."""
    token, acked, pos = None, 0, 0
    finals: list[dict] = []
    resumes = []

    def take(msg: dict) -> None:
        nonlocal acked
        assert msg["type"] != "error", msg
        acked = max(acked, msg.get("acked", 0))
        if msg["type"] == "final":
            finals.append(msg)

    for stop_at in [*cuts, None]:
        ws = connect(url)
        if token is None:
            ws.send(json.dumps(START))
            ready = json.loads(ws.recv())
            token = ready["resume_token"]
        else:
            offset = max(0, acked - int(rng.choice([0, FRAME, 2 * FRAME])))
            ws.send(json.dumps({"type": "resume", "token": token, "offset": offset,
                                "finals": len(finals)}))
            ready = json.loads(ws.recv())
            assert ready["type"] == "ready" and ready["resumed"], ready
            resumes.append((offset, ready["acked"]))
            pos = offset
        take(ready)
        end = len(pcm) if stop_at is None else stop_at
        while pos < end:
            ws.send(pcm[pos : min(pos + FRAME, end)])
            pos = min(pos + FRAME, end)
            while rng.random() < 0.5:  # read some of what came back, not all
                try:
                    take(json.loads(ws.recv(timeout=0)))
                except TimeoutError:
                    break
        if stop_at is None:
            ws.send(json.dumps({"type": "stop"}))
            for raw in ws:
                msg = json.loads(raw)
                take(msg)
                if msg["type"] == "end":
                    ws.close()
                    return finals, msg, resumes
            raise AssertionError("no end")
        time.sleep(float(rng.uniform(0, 0.05)))  # results in flight when it drops
        cut(ws)
    raise AssertionError("unreachable")


def random_cuts(rng, size: int, n: int) -> list[int]:
    """n distinct even byte offsets (whole PCM16 samples) inside the audio, in order."""
    return sorted(int(c) * 2 for c in rng.choice(np.arange(FRAME // 2, size // 2 - FRAME // 2),
                                                 n, replace=False))


def test_ws_stream_cut_and_resumed_equals_uninterrupted(bundle, speech, other) -> None:
    rng = np.random.default_rng(15)
    with running_server(bundle, endpoint=ENDPOINT) as app:
        url = ws_url(app)
        want, want_end = ws_solo(url, speech)
        want_other, _ = ws_solo(url, other)
        assert len(want) >= 3, want  # several finals: "none repeated, in order" means something
        beside: list = []
        worker = threading.Thread(target=lambda: beside.append(ws_solo(url, other)))
        worker.start()
        finals, end, resumes = ws_with_cuts(url, speech, random_cuts(rng, len(speech), 4), rng)
        worker.join(60)
        resumed = app.metrics.resumes.labels("resumed")._value.get()
        deadline = time.monotonic() + 5  # the server closes it just after `end`
        while app.dispatcher.active_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.dispatcher.active_streams == 0
    assert [f["text"] for f in finals] == [f["text"] for f in want]
    assert [(f["start"], f["end"]) for f in finals] == [(f["start"], f["end"]) for f in want]
    assert [f["seq"] for f in finals] == list(range(len(want)))  # none repeated, in order
    assert end["acked"] == len(speech) == want_end["acked"]  # no audio lost or counted twice
    assert end["audio_processed"] == want_end["audio_processed"]
    assert resumed == 4 and len(resumes) == 4
    assert any(acked > offset for offset, acked in resumes)  # re-sent audio was skipped
    assert [f["text"] for f in beside[0][0]] == [f["text"] for f in want_other]


def expect_ws_error(url: str, messages: list[dict]) -> tuple[list[dict], int | None]:
    from websockets.exceptions import ConnectionClosed

    got = []
    with connect(url) as ws:
        for m in messages:
            ws.send(json.dumps(m))
        with contextlib.suppress(ConnectionClosed):
            while True:
                got.append(json.loads(ws.recv()))
    return got, ws.close_code


def test_ws_wrong_token_offset_ahead_and_ended_streams_get_resume_failed(bundle, speech) -> None:
    with running_server(bundle) as app:
        url = ws_url(app)
        got, code = expect_ws_error(url, [{"type": "resume", "token": "nope", "offset": 0,
                                           "finals": 0}])
        assert code == 1008 and got[-1]["code"] == "resume_failed", got
        assert got[-1]["reason"] == "unknown_token" and "no stream has this resume token" \
            in got[-1]["message"]
        got, code = expect_ws_error(url, [{"type": "resume", "token": "x", "offset": -1,
                                           "finals": 0}])
        assert code == 1007 and got[-1]["code"] == "bad_config"
        assert "resume offset must be a non-negative integer" in got[-1]["message"]
        # a dropped stream: an offset beyond the server's is refused, the stream stays resumable
        ws = connect(url)
        ws.send(json.dumps(START))
        token = json.loads(ws.recv())["resume_token"]
        ws.send(speech[: 4 * FRAME])
        deadline = time.monotonic() + 10
        while app.metrics.audio_seconds._value.get() < 0.4 and time.monotonic() < deadline:
            time.sleep(0.01)
        cut(ws)
        resume = {"type": "resume", "token": token, "offset": 5 * FRAME, "finals": 0}
        got, code = expect_ws_error(url, [resume])
        assert code == 1008 and (got[-1]["code"], got[-1]["reason"]) == \
            ("resume_failed", "offset_ahead"), got
        assert f"offset {5 * FRAME} is beyond the {4 * FRAME} audio bytes" in got[-1]["message"]
        with connect(url) as ws:
            ws.send(json.dumps({**resume, "offset": 4 * FRAME}))
            ready = json.loads(ws.recv())
            assert ready["resumed"] and ready["acked"] == 4 * FRAME
            ws.send(json.dumps({"type": "stop"}))
            kinds = [json.loads(m)["type"] for m in ws]
        assert kinds[-1] == "end"
        # a stream that ended (stop, or a clean close) cannot be resumed
        got, code = expect_ws_error(url, [{**resume, "offset": 0}])
        assert (got[-1]["reason"], code) == ("ended", 1008), got
        with connect(url) as ws:
            ws.send(json.dumps(START))
            token = json.loads(ws.recv())["resume_token"]
        got, _ = expect_ws_error(url, [{**resume, "token": token, "offset": 0}])
        assert got[-1]["reason"] == "ended", got
        assert app.dispatcher.active_streams == 0


def test_ws_resume_takes_the_stream_from_a_connection_not_yet_seen_to_drop(bundle, speech) -> None:
    """A client whose network changed may resume before the server notices the old connection
    is dead: the resume takes the stream over, the old connection is told `resumed_elsewhere`,
    and the stream goes on with its audio and finals."""
    from websockets.exceptions import ConnectionClosed

    with running_server(bundle, endpoint=ENDPOINT) as app:
        url = ws_url(app)
        want, want_end = ws_solo(url, speech)
        old = connect(url)
        old.send(json.dumps(START))
        token = json.loads(old.recv())["resume_token"]
        half = (len(speech) // 2) & ~1
        old.send(speech[:half])
        with connect(url) as new:
            new.send(json.dumps({"type": "resume", "token": token, "offset": 0, "finals": 0}))
            ready = json.loads(new.recv())
            assert ready["resumed"], ready
            got = []  # what the old connection had, then the error
            with contextlib.suppress(ConnectionClosed):
                while True:
                    got.append(json.loads(old.recv()))
            assert got[-1]["code"] == "resumed_elsewhere" and old.close_code == 1008, got
            seen = [m for m in got if "acked" in m]
            new.send(speech)  # from offset 0: the server skips what it has
            new.send(json.dumps({"type": "stop"}))
            msgs = [json.loads(m) for m in new]
        # the old connection's finals may have been cut off by the takeover: the new one gets
        # every final from seq 0 (it asked with finals=0), none twice
        finals = [m for m in msgs if m["type"] == "final"]
        assert [f["text"] for f in finals] == [f["text"] for f in want]
        assert [f["seq"] for f in finals] == list(range(len(want)))
        assert msgs[-1]["type"] == "end" and msgs[-1]["acked"] == want_end["acked"]
        assert not seen or max(m["acked"] for m in seen) <= ready["acked"]


class GatedSteps:
    """A real backend whose steps, once `armed`, wait for `release` (and say they `entered`)."""

    def __init__(self, inner) -> None:
        self.inner, self.state_names = inner, inner.state_names
        self.armed = False
        self.entered, self.release = threading.Event(), threading.Event()

    def init_state(self, batch: int):
        return self.inner.init_state(batch)

    def step(self, inputs):
        if self.armed:
            self.entered.set()
            self.release.wait(30)
        return self.inner.step(inputs)


def test_ws_stream_that_failed_is_closed_when_its_connection_drops_during_the_report(
        bundle, speech) -> None:
    """A stream is over once it failed (here: a frame over max_frame_bytes): when its
    connection drops while the finals owed before the error are still being computed (the
    model step of the stream's tail held until the drop), the stream is closed and its slot
    freed, not kept for a resume, and the error is counted once."""
    gate: dict[str, GatedSteps] = {}
    with running_server(bundle, wrap_backend=lambda b: gate.setdefault("b", GatedSteps(b)),
                        limits=Limits(max_frame_bytes=8000)) as app:
        ws = connect(ws_url(app))
        ws.send(json.dumps(START))
        sid = json.loads(ws.recv())["stream_id"]
        for i in range(0, 6 * FRAME, FRAME):  # 600 ms accepted (one chunk computed now)
            ws.send(speech[i : i + FRAME])
        time.sleep(1.0)
        gate["b"].armed = True
        ws.send(speech[6 * FRAME : 9 * FRAME])  # 9 600 bytes: frame_too_large after owed finals
        assert gate["b"].entered.wait(10)  # the owed finals' step is running
        cut(ws)
        time.sleep(0.5)
        gate["b"].release.set()
        t0 = time.monotonic()
        while app.dispatcher.is_open(sid) and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert not app.dispatcher.is_open(sid) and app.detached_streams == 0
        assert app.metrics.resumes.labels("detached")._value.get() == 0
        assert app.metrics.errors.labels("frame_too_large")._value.get() == 1


def test_ws_frame_over_twice_the_limit_closes_the_stream_instead_of_keeping_it(
        bundle, speech) -> None:
    """A frame over twice max_frame_bytes is refused by websockets itself (close 1009) before
    the protocol sees it: the server ended that connection on purpose, so the stream is closed
    and its slot freed at once (not kept for a resume as a dropped connection's is), and the
    error is counted as frame_too_large."""
    with running_server(bundle, limits=Limits(max_frame_bytes=4000)) as app:
        ws = connect(ws_url(app))
        ws.send(json.dumps(START))
        sid = json.loads(ws.recv())["stream_id"]
        ws.send(speech[:FRAME])
        with contextlib.suppress(Exception):
            ws.send(speech[FRAME : 4 * FRAME])  # 9 600 bytes > 2 x 4 000
            ws.recv(timeout=5)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
        t0 = time.monotonic()
        while app.dispatcher.is_open(sid) and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert not app.dispatcher.is_open(sid) and app.detached_streams == 0
        assert app.metrics.errors.labels("frame_too_large")._value.get() == 1


def test_ws_abandoned_stream_holds_its_slot_for_the_window_then_expires(bundle, speech) -> None:
    """max_streams=1: a dropped stream keeps its slot (a new stream is refused) for
    resume_window_s, then it is closed cleanly, the slot is free, and a late resume is told
    the window expired. With resume off (0), a dropped stream frees its slot at once."""
    with running_server(bundle, max_streams=1, resume_window_s=0.5) as app:
        url = ws_url(app)
        ws = connect(url)
        ws.send(json.dumps(START))
        ready = json.loads(ws.recv())
        ws.send(speech[: 6 * FRAME])
        time.sleep(0.1)
        cut(ws)
        t0 = time.monotonic()
        time.sleep(0.1)
        assert app.dispatcher.is_open(ready["stream_id"]) and app.detached_streams == 1
        with connect(url) as other:  # the handshake passes (the slot may be resumed) ...
            other.send(json.dumps(START))
            assert json.loads(other.recv())["code"] == "overloaded"  # ... a new stream does not
        while app.dispatcher.is_open(ready["stream_id"]) and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        held_s = time.monotonic() - t0
        assert 0.4 < held_s < 3, held_s
        assert app.dispatcher.active_streams == 0 and app.detached_streams == 0
        got, code = expect_ws_error(url, [{"type": "resume", "token": ready["resume_token"],
                                           "offset": 0, "finals": 0}])
        assert (got[-1]["code"], got[-1]["reason"], code) == ("resume_failed", "expired", 1008)
        assert "resume_window_s=0.5 s" in got[-1]["message"]
        assert app.metrics.resumes.labels("expired")._value.get() == 1
        with connect(url) as ws:  # the slot is free again
            ws.send(json.dumps(START))
            assert json.loads(ws.recv())["type"] == "ready"
    with running_server(bundle, max_streams=1, resume_window_s=0) as app:
        url = ws_url(app)
        ws = connect(url)
        ws.send(json.dumps(START))
        ready = json.loads(ws.recv())
        assert "resume_token" not in ready
        cut(ws)
        t0 = time.monotonic()
        while app.dispatcher.is_open(ready["stream_id"]) and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert time.monotonic() - t0 < 0.5
        with connect(url) as ws:  # the slot is free at once
            ws.send(json.dumps(START))
            assert json.loads(ws.recv())["type"] == "ready"
        got, _ = expect_ws_error(url, [{"type": "resume", "token": "t", "offset": 0, "finals": 0}])
        assert got[-1]["reason"] == "disabled"


# ---- native gRPC ------------------------------------------------------------------------------
def grpc_config(pb):
    return pb.StreamingConfig(config=pb.RecognitionConfig(format=pb.AudioFormat(
        encoding=pb.PCM_S16LE, sample_rate_hertz=16000)), interim_results=True, continuous=True)


def grpc_solo(stub, pb, pcm: bytes) -> list:
    reqs = [pb.StreamingRecognizeRequest(streaming_config=grpc_config(pb))]
    reqs += [pb.StreamingRecognizeRequest(audio=pcm[i : i + FRAME]) for i in range(0, len(pcm), FRAME)]
    return [r for resp in stub.StreamingRecognize(iter(reqs)) for r in resp.results if r.is_final]


def grpc_with_cuts(stub, pb, pcm: bytes, cuts: list[int], rng) -> tuple[list, list, int]:
    """As ws_with_cuts, over gRPC: each cut cancels the call once its audio is sent."""
    state = {"token": "", "acked": 0}
    finals: list = []
    resumes = []
    for stop_at in [*cuts, None]:
        offset = max(0, state["acked"] - int(rng.choice([0, FRAME, 2 * FRAME])))
        first = (pb.StreamingRecognizeRequest(streaming_config=grpc_config(pb))
                 if not state["token"] else
                 pb.StreamingRecognizeRequest(resume=pb.ResumeRequest(
                     token=state["token"], offset=offset, finals=len(finals))))
        begin = offset if state["token"] else 0
        end = len(pcm) if stop_at is None else stop_at
        holder: dict = {"over": threading.Event()}
        delay = float(rng.uniform(0, 0.05))

        def requests(first=first, begin=begin, end=end, holder=holder, delay=delay,
                     last=stop_at is None):
            yield first
            for i in range(begin, end, FRAME):
                yield pb.StreamingRecognizeRequest(audio=pcm[i : min(i + FRAME, end)])
            if not last:  # the call is cut, never half-closed (that would end the stream)
                time.sleep(delay)
                holder["call"].cancel()
                holder["over"].wait(10)

        call = stub.StreamingRecognize(requests())
        holder["call"] = call
        try:
            for resp in call:
                if resp.resumed:
                    resumes.append((offset, resp.acked))
                state["token"] = state["token"] or resp.resume_token
                state["acked"] = max(state["acked"], resp.acked)
                finals += [r for r in resp.results if r.is_final]
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.CANCELLED and stop_at is not None, e
            continue
        finally:
            holder["over"].set()
        assert stop_at is None
        return finals, resumes, state["acked"]
    raise AssertionError("unreachable")


def test_grpc_stream_cut_and_resumed_equals_uninterrupted(bundle, speech, other) -> None:
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    rng = np.random.default_rng(51)
    with running_server(bundle, endpoint=ENDPOINT) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)
            want = grpc_solo(stub, pb, speech)
            want_other = grpc_solo(stub, pb, other)
            assert len(want) >= 3, want
            beside: list = []
            worker = threading.Thread(target=lambda: beside.append(grpc_solo(stub, pb, other)))
            worker.start()
            finals, resumes, acked = grpc_with_cuts(stub, pb, speech,
                                                    random_cuts(rng, len(speech), 4), rng)
            worker.join(60)
        resumed = app.metrics.resumes.labels("resumed")._value.get()
        deadline = time.monotonic() + 5
        while app.dispatcher.active_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.dispatcher.active_streams == 0
    assert [f.text for f in finals] == [f.text for f in want]
    assert [(f.start, f.end) for f in finals] == [(f.start, f.end) for f in want]
    assert [f.seq for f in finals] == list(range(len(want)))
    assert acked == len(speech) and finals[-1].audio_processed == want[-1].audio_processed
    assert resumed == 4 and len(resumes) == 4
    assert any(server > offset for offset, server in resumes)
    assert [f.text for f in beside[0]] == [f.text for f in want_other]


def test_grpc_wrong_token_expired_window_and_takeover(bundle, speech) -> None:
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    with running_server(bundle, max_streams=1, resume_window_s=0.5) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            stub = pb_grpc.AsrStub(ch)

            def resume(token: str) -> grpc.RpcError:
                with pytest.raises(grpc.RpcError) as e:
                    list(stub.StreamingRecognize(iter([pb.StreamingRecognizeRequest(
                        resume=pb.ResumeRequest(token=token))])))
                return e.value

            err = resume("nope")
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
            assert err.details().startswith("resume_failed: unknown_token:")
            assert ("resume-failed", "unknown_token") in err.trailing_metadata()
            sent, cancelled = threading.Event(), threading.Event()

            def requests():
                yield pb.StreamingRecognizeRequest(streaming_config=grpc_config(pb))
                yield pb.StreamingRecognizeRequest(audio=speech[: 4 * FRAME])
                sent.set()
                cancelled.wait(10)  # no half-close

            call = stub.StreamingRecognize(requests())
            token = next(call).resume_token
            assert token and sent.wait(10)
            call.cancel()
            cancelled.set()
            t0 = time.monotonic()
            time.sleep(0.1)
            assert app.dispatcher.active_streams == 1 and app.detached_streams == 1
            while app.dispatcher.active_streams and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            assert 0.4 < time.monotonic() - t0 < 3
            err = resume(token)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
            assert err.details().startswith("resume_failed: expired:")
            # the slot is free; a resume takes a stream from a call not yet seen to drop: the
            # old call ends ABORTED (resumed_elsewhere), the new one goes on
            sent.clear()
            cancelled.clear()
            old = stub.StreamingRecognize(requests())
            token = next(old).resume_token
            assert sent.wait(10)
            new = stub.StreamingRecognize(iter([pb.StreamingRecognizeRequest(
                resume=pb.ResumeRequest(token=token, offset=0, finals=0)),
                pb.StreamingRecognizeRequest(audio=speech[: 6 * FRAME])]))
            first = next(new)
            assert first.resumed and first.resume_token == token
            with pytest.raises(grpc.RpcError) as e:
                list(old)
            cancelled.set()
            assert e.value.code() == grpc.StatusCode.ABORTED, e.value
            assert "resumed_elsewhere" in e.value.details()
            list(new)  # half-closed: it ends normally
            assert app.metrics.resumes.labels("resumed")._value.get() == 1
        deadline = time.monotonic() + 5
        while app.dispatcher.active_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.dispatcher.active_streams == 0


def test_drain_closes_detached_streams_at_once(bundle, speech) -> None:
    """Draining (SIGTERM) does not wait resume_window_s for detached streams (nobody to
    deliver their finals to): they close at once; a resume is then told the server is
    shutting down (a WebSocket upgrade gets 503 while draining)."""
    import asyncio

    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    with running_server(bundle) as app:
        ws = connect(ws_url(app))
        ws.send(json.dumps(START))
        token = json.loads(ws.recv())["resume_token"]
        ws.send(speech[: 4 * FRAME])
        cut(ws)
        deadline = time.monotonic() + 10
        while not app.detached_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.detached_streams == 1
        t0 = time.monotonic()
        asyncio.run_coroutine_threadsafe(app.drain(), app.loop).result(10)
        assert time.monotonic() - t0 < 1 and app.dispatcher.active_streams == 0
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                list(pb_grpc.AsrStub(ch).StreamingRecognize(iter([pb.StreamingRecognizeRequest(
                    resume=pb.ResumeRequest(token=token))])))
        # UNAVAILABLE (as any call while draining) or, if the resume was read first,
        # resume_failed: server_shutdown
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.FAILED_PRECONDITION), e.value
        assert "shutting down" in e.value.details()


def test_a_stream_opened_while_draining_is_told_the_server_is_shutting_down(bundle) -> None:
    """App.open after the drain began (a start read before the drain was noticed) raises
    SessionError server_shutdown, the code every adapter reports for the drain (gRPC
    UNAVAILABLE, WebSocket close 1001), not Overloaded (RESOURCE_EXHAUSTED / 1013)."""
    import asyncio

    from server.session import SessionConfig, SessionError

    with running_server(bundle) as app:
        asyncio.run_coroutine_threadsafe(app.drain(), app.loop).result(10)
        with pytest.raises(SessionError) as e:
            app.open(SessionConfig())
        assert e.value.code == "server_shutdown" and "shutting down" in str(e.value)


def test_a_resume_dropped_while_the_stream_settles_leaves_one_task_advancing_it(bundle, speech) -> None:
    """A stream detached with its audio still queued settles (computes it) in the background,
    slowly here (each model step takes 30 ms). A resume whose connection drops while it waits
    for that settle detaches the stream again; the first settle goes on alone (a second task
    advancing the same stream would decode a chunk's outputs twice and skip the next chunk's,
    now from two threads). Resumed for real afterwards, the stream decodes exactly the frames
    and finals of an uninterrupted stream of the same audio; a healthy stream fed beside it
    all along, sharing its batches, is untouched (the same frames and finals)."""
    import asyncio
    from dataclasses import replace

    from server.app import App, ServerConfig
    from server.audio_in import AudioFormat

    class Slow:  # the real backend, each step 30 ms later
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def step(self, inputs):
            time.sleep(0.03)
            return self.inner.step(inputs)

    async def run() -> tuple[tuple, tuple]:
        cfg = replace(ServerConfig(), resume_window_s=30.0, endpoint=ENDPOINT)
        app = App(cfg, bundle=bundle)
        app.backend = app.dispatcher.backend = Slow(app.backend)
        await app.start()
        fmt = AudioFormat("pcm_s16le", 16_000, 1)
        conf = app.session_config(format=fmt, continuous=True)
        try:
            solo = app.open(conf)
            finals = [e.text for e in [*await solo.feed(speech), *await solo.finish()]
                      if isinstance(e, Final)]
            want = (finals, solo.session.frames_out)

            async def healthy_stream() -> tuple[list[str], int]:
                h = app.open(conf)
                events = []
                for i in range(0, len(speech), 3200):  # 100 ms frames, as a client sends
                    events += await h.feed(speech[i : i + 3200])
                    await asyncio.sleep(0.005)
                events += await h.finish()
                return [e.text for e in events if isinstance(e, Final)], h.session.frames_out

            beside = asyncio.ensure_future(healthy_stream())
            stream = app.open(conf, resumable=True, owner=asyncio.Event())
            feeding = asyncio.ensure_future(stream.feed(speech))
            while stream._step is None:  # the first chunk is in the model: the connection drops
                await asyncio.sleep(0.001)
            feeding.cancel()
            app.detach(stream)
            first_settle = stream._settle
            resuming = asyncio.ensure_future(app.resume(stream.token, stream.acked, 0,
                                                        asyncio.Event()))
            await asyncio.sleep(0)  # it waits for the settle; its connection drops too
            resuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resuming
            assert stream.detached and stream._settle is first_settle and not first_settle.done()
            stream, owed = await app.resume(stream.token, stream.acked, 0, asyncio.Event())
            events = [*owed, *await stream.finish()]
            got = ([e.text for e in events if isinstance(e, Final)], stream.session.frames_out)
            assert await beside == want  # the healthy stream beside the fault
            return got, want
        finally:
            await app.stop()

    got, want = asyncio.run(run())
    assert want[0] and got == want


def test_grpc_half_close_reports_the_last_bytes_taken_when_no_result_comes_of_them(speech) -> None:
    """With the shipped model: speech, its final back, then 332 bytes of digital silence and a
    half-close. Those bytes make no result (no text, not a whole chunk), yet the client must
    learn that the server took them: the call's last response carries `acked` == every byte
    sent (a client resuming or auditing its audio relies on it)."""
    from server.grpc_codegen import generated

    pb, pb_grpc = generated()
    main = speech + bytes(48_000)  # 1.5 s of silence: the endpoint closes the utterance
    tail = bytes(332)
    with running_server(load()) as app:
        with grpc.insecure_channel(f"127.0.0.1:{app.cfg.grpc_port}") as ch:
            got_final = threading.Event()

            def requests():
                yield pb.StreamingRecognizeRequest(streaming_config=grpc_config(pb))
                for i in range(0, len(main), FRAME):
                    yield pb.StreamingRecognizeRequest(audio=main[i : i + FRAME])
                assert got_final.wait(30)
                time.sleep(0.5)  # the rest of the silence is taken
                yield pb.StreamingRecognizeRequest(audio=tail)

            responses = []
            for resp in pb_grpc.AsrStub(ch).StreamingRecognize(requests()):
                responses.append(resp)
                if any(r.is_final and r.text for r in resp.results):
                    got_final.set()
    finals = [r.text for resp in responses for r in resp.results if r.is_final and r.text]
    assert finals and "garage" in finals[-1], finals
    assert responses[-1].acked == len(main) + len(tail), [r.acked for r in responses[-3:]]
