"""Property tests of what a hostile client controls (hypothesis): the audio parsers (any bytes
-> a specific AudioError or finite samples, never another exception), the WebSocket control
messages (any JSON -> a specific client error or a valid config that a Session accepts), and
the sans-I/O Session driven through start / audio / stop / timeouts in random orders (events
numbered and timed consistently, JSON-safe, errors only the documented ones)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from models.audio import AudioError
from models.backends import make_backend
from models.bundle import load
from server.app import App, ServerConfig
from server.audio_in import ENCODINGS, AudioFormat, StreamDecoder, parse_wav_header
from server.session import EndpointConfig, Final, Limits, Partial, Session, SessionConfig, SessionError
from server.ws import (
    event_dict,
    json_bool,
    parse_control,
    parse_hotwords,
    parse_resume,
    parse_start,
)
from tests.models.test_cli import tiny_bundle

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load(tiny_bundle(tmp_path_factory.mktemp("b") / "tiny"))


# ---- audio ------------------------------------------------------------------------------------
RATES = st.one_of(st.sampled_from([8000, 16000, 22050, 44100, 48000]),
                  st.integers(-10**6, 10**7), st.floats(), st.text(max_size=3), st.none(),
                  st.booleans())
CHANNELS = st.one_of(st.integers(-1, 9), st.booleans(), st.floats(0, 3), st.none())


def check_samples(x: np.ndarray) -> None:
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 1
    assert np.isfinite(x).all() and (np.abs(x) <= 4.0).all()  # resampler overshoot only


def drive_decoder(fmt: AudioFormat, frames: list[bytes]) -> None:
    """Feed `frames`; each is refused with an AudioError (consuming nothing) or decoded."""
    try:
        dec = StreamDecoder(fmt)
    except AudioError:
        return
    for f in frames:
        before = dec.samples_in
        try:
            x = dec.feed(f)
        except AudioError:
            assert dec.samples_in == before
            continue
        check_samples(x)
    try:
        check_samples(dec.flush())
    except AudioError:
        pass


@FAST
@given(enc=st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=4)), rate=RATES,
       channels=CHANNELS, frames=st.lists(st.binary(max_size=700), max_size=6))
def test_any_bytes_in_any_format_are_refused_or_decoded(enc, rate, channels, frames) -> None:
    drive_decoder(AudioFormat(enc, rate, channels), frames)


@FAST
@given(values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=400),
       rate=st.sampled_from([8000, 16000, 22050, 48000]), channels=st.integers(1, 8),
       cut=st.integers(1, 8))
def test_any_finite_floats_give_finite_samples(values, rate, channels, cut) -> None:
    """pcm_f32le: NaN / inf are refused; any finite value (3e38 too) gives finite samples, so a
    stream's model state can never be poisoned by what one frame held."""
    n = len(values) - len(values) % channels
    data = struct.pack(f"<{n}f", *values[:n])
    width = 4 * channels
    step = max(1, cut) * width
    drive_decoder(AudioFormat("pcm_f32le", rate, channels),
                  [data[i : i + step] for i in range(0, len(data), step)])


CHUNK_IDS = st.sampled_from([b"fmt ", b"data", b"LIST", b"fact", b"\x00\x00\x00\x00", b"RIFF"])


@st.composite
def wav_streams(draw) -> bytes:
    """RIFF/WAVE files with random chunks: real and junk ids, true and lying sizes, fmt chunks
    with any tag / channels / rate / bits, then sample bytes."""
    out = b"RIFF" + draw(st.binary(min_size=4, max_size=4)) + b"WAVE"
    for _ in range(draw(st.integers(0, 4))):
        cid = draw(CHUNK_IDS)
        if cid == b"fmt ":
            body = struct.pack("<HHIIHH", draw(st.sampled_from([1, 3, 7, 0xFFFE, 0, 2])),
                               draw(st.integers(0, 10)), draw(st.sampled_from([0, 8000, 16000, 44100,
                                                                               96000, 2**32 - 1])),
                               draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 64)),
                               draw(st.sampled_from([0, 8, 16, 24, 32])))
            body += draw(st.binary(max_size=30))
            body = body[: draw(st.integers(0, len(body)))]
        else:
            body = draw(st.binary(max_size=64))
        size = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
        out += cid + struct.pack("<I", size) + body
    return out + draw(st.binary(max_size=400))


@FAST
@given(data=st.one_of(wav_streams(), st.binary(max_size=200)), cuts=st.lists(st.integers(1, 300),
                                                                             max_size=6))
def test_any_wav_bytes_cut_anywhere_are_refused_or_decoded(data, cuts) -> None:
    try:
        assert parse_wav_header(data) is None or len(parse_wav_header(data)) == 3
    except AudioError:
        pass
    frames, pos = [], 0
    for c in cuts:
        frames.append(data[pos : pos + c])
        pos += c
    frames.append(data[pos:])
    drive_decoder(AudioFormat("wav", 0), frames)


# ---- control messages ---------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6),
                                                                              kids, max_size=3),
                    max_leaves=12)
ALMOST = {  # per start field: values close to valid ones, and anything at all
    "format": st.one_of(JSON, st.fixed_dictionaries({}, optional={
        "encoding": st.one_of(st.sampled_from(ENCODINGS), JSON),
        "sample_rate": st.one_of(RATES.filter(lambda v: not isinstance(v, float) or math.isfinite(v)),
                                 JSON),
        "channels": st.one_of(st.integers(0, 9), JSON)})),
    "interim_results": st.one_of(st.booleans(), JSON),
    "continuous": st.one_of(st.booleans(), JSON),
    "max_alternatives": st.one_of(st.integers(-2, 12), JSON),
    "decoder": st.one_of(st.sampled_from([None, "greedy", "beam"]), JSON),
    "hotwords": st.one_of(JSON, st.lists(st.one_of(
        st.text(max_size=10), st.fixed_dictionaries({"phrase": st.one_of(st.text(max_size=10), JSON),
                                                     "boost": st.one_of(st.floats(), JSON)})),
        max_size=3)),
}
STARTS = st.fixed_dictionaries({"type": st.just("start")}, optional={
    **ALMOST, "beam": JSON, "": JSON})


class StubApp:
    """What parse_start needs of an App: its config and session_config."""

    cfg = ServerConfig()
    session_config = App.session_config


@FAST
@given(text=st.one_of(st.text(max_size=40), JSON.map(json.dumps),
                      st.integers(4000, 6000).map(lambda n: '{"a": ' + "7" * n + "}")))
def test_any_text_is_a_control_object_or_invalid_json(text) -> None:
    try:
        assert isinstance(parse_control(text), dict)
    except SessionError as exc:
        assert exc.code == "invalid_json" and str(exc)


@FAST
@given(msg=STARTS)
def test_any_start_is_a_specific_error_or_a_config_a_session_accepts(bundle, msg) -> None:
    ctl = parse_control(json.dumps(msg))
    try:
        cfg = parse_start(ctl, StubApp())
    except SessionError as exc:
        assert exc.code == "bad_config" and str(exc)
        return
    except AudioError as exc:  # the adapter's bad_config
        assert str(exc)
        return
    assert isinstance(cfg, SessionConfig)
    assert isinstance(cfg.interim_results, bool) and isinstance(cfg.continuous, bool)
    assert all(isinstance(p, str) and isinstance(b, float) for p, b in cfg.hotwords)
    try:  # what App.open does: the Session validates (bad_config on an AudioError)
        Session(bundle, cfg)
    except AudioError as exc:  # a bad format / alternatives / decoder / hotword
        assert str(exc)
        return
    assert cfg.validate() is cfg and isinstance(cfg.max_alternatives, int)


@FAST
@given(value=JSON, hot=JSON, resume=st.dictionaries(st.sampled_from(["type", "token", "offset",
                                                                     "finals", "x"]), JSON))
def test_fields_are_parsed_or_refused_with_bad_config(value, hot, resume) -> None:
    try:
        assert json_bool({"f": value}, "f", True) is value
    except SessionError as exc:
        assert exc.code == "bad_config" and not isinstance(value, bool)
    try:
        assert all(isinstance(p, str) and isinstance(b, float) for p, b in parse_hotwords(hot))
    except SessionError as exc:
        assert exc.code == "bad_config"
    try:
        token, offset, finals = parse_resume(resume)
        assert isinstance(token, str) and token and offset >= 0 and finals >= 0
    except SessionError as exc:
        assert exc.code == "bad_config"


# ---- the Session, in random orders ---------------------------------------------------------------
class SessionMachine(RuleBasedStateMachine):
    """A Session driven by random frames (real-looking audio, junk, oversize), stops, closes and
    clock jumps; the model steps run on the real (torch) backend, synchronously, no I/O."""

    bundle = None
    backend = None
    made = {"partials": 0, "finals": 0, "refused": 0}  # over all runs: the machine reached them

    @initialize(enc=st.sampled_from(["pcm_s16le", "pcm_f32le", "mulaw", "wav"]),
                rate=st.sampled_from([8000, 16000, 44100]), channels=st.integers(1, 2),
                continuous=st.booleans(), interim=st.booleans(),
                decoder=st.sampled_from(["greedy", "beam"]))
    def start(self, enc, rate, channels, continuous, interim, decoder) -> None:
        self.fmt = AudioFormat(enc, rate, channels)
        self.cfg = SessionConfig(format=self.fmt, continuous=continuous, interim_results=interim,
                                 decoder=decoder, endpoint=EndpointConfig(trailing_silence_ms=200,
                                                                          max_utterance_s=1.0),
                                 limits=Limits(max_frame_bytes=8000, max_stream_s=3.0,
                                               idle_timeout_s=5.0))
        self.s = Session(self.bundle, self.cfg)
        self.state = self.backend.init_state(1)
        self.now = 0.0
        self.events: list = []
        self.header_sent = enc != "wav"

    def run(self, steps: list) -> None:
        for x in steps:
            out = self.backend.step({"features": x[None], **self.state})
            self.state = {k.removeprefix("new_"): v for k, v in out.items()
                          if k.startswith("new_state_")}
            events = self.s.on_output(out["outputs"][0])
            self.events += events
            for e in events:
                self.made["finals" if isinstance(e, Final) else "partials"] += 1

    def frame(self, data: bytes) -> None:
        before = self.s.audio_seconds
        try:
            steps = self.s.feed(data, self.now)
        except SessionError as exc:
            assert exc.code in ("frame_too_large", "stream_too_long", "audio_after_end"), exc.code
            assert self.s.audio_seconds == before
            self.made["refused"] += 1
            return
        except AudioError:
            assert self.s.audio_seconds == before
            self.made["refused"] += 1
            return
        self.run(steps)

    @rule(seconds=st.floats(0.01, 0.4), level=st.floats(0, 2), noise=st.booleans())
    def audio(self, seconds, level, noise) -> None:
        n = int(self.fmt.sample_rate * seconds) * self.fmt.channels
        rng = np.random.default_rng(n)
        x = level * (rng.standard_normal(n) if noise else np.sin(np.arange(n) / 9.0))
        enc = self.fmt.encoding
        if enc == "pcm_f32le":
            data = x.astype("<f4").tobytes()
        elif enc == "mulaw":
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        else:
            data = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
        if enc == "wav" and not self.header_sent:
            from loadtest.faults import wav_header

            data = wav_header(rate=self.fmt.sample_rate, channels=self.fmt.channels) + data
            self.header_sent = True
        self.frame(data)

    @rule(data=st.binary(max_size=9000))
    def junk(self, data) -> None:
        self.frame(data)

    @rule(dt=st.floats(0, 8))
    def wait(self, dt) -> None:
        self.now += dt
        expired = self.s.idle_expired(self.now)
        assert expired == (not self.s.finished and
                           self.now - self.s.last_activity > self.cfg.limits.idle_timeout_s)

    @rule()
    def stop(self) -> None:
        try:
            steps = self.s.finish(self.now)
        except AudioError:  # e.g. the stream ended inside the WAV header
            steps = []
        self.run(steps)
        assert self.s.finished

    @precondition(lambda self: self.s.finished)
    @rule()
    def close(self) -> None:
        events = self.s.close()
        self.events += events
        self.made["finals"] += len(events)
        assert self.s.close() == []
        with pytest.raises(SessionError):
            self.s.feed(b"\x00\x00", self.now)

    @invariant()
    def events_are_consistent(self) -> None:
        finals = [e for e in self.events if isinstance(e, Final)]
        assert [f.seq for f in finals] == list(range(len(finals)))
        for a, b in zip(finals, finals[1:], strict=False):
            assert a.end <= b.start + 1e-6
        for f in finals:
            assert 0 <= f.start <= f.end and math.isfinite(f.confidence)
        for e in self.events:
            assert isinstance(e, Partial | Final) and isinstance(e.text, str)
            json.dumps(event_dict(e, 0), allow_nan=False)  # strict JSON: no NaN on the wire
        assert self.s.audio_seconds <= self.cfg.limits.max_stream_s + 1e-6


def test_session_state_machine(bundle) -> None:
    SessionMachine.bundle = bundle
    SessionMachine.backend = make_backend("torch", bundle)
    SessionMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=12,
                                                deadline=None, derandomize=True,
                                                suppress_health_check=[HealthCheck.too_slow])
    SessionMachine.TestCase().runTest()
    made = SessionMachine.made
    assert made["partials"] + made["finals"] > 0 and made["refused"] > 0, made
