"""The shared control protocol (server/control.py): the order of commands as a hypothesis
state machine against a model of it, the one error vocabulary and how every adapter maps it."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from models.audio import AudioError
from server.control import (
    CODES,
    Audio,
    Control,
    Resume,
    Start,
    Stop,
    Vocabulary,
    classify,
    control_error,
    is_server_bug,
)
from server.dispatch import Overloaded, StreamError
from server.grpc_common import STATUS
from server.resume import ResumedElsewhere, ResumeError
from server.session import SessionConfig, SessionError
from server.ws import CLOSE

WORDS = {"ws": Vocabulary(), "riva": Vocabulary(start="streaming_config", audio="audio_content",
                                                 resume=None, message="request")}


class ControlMachine(RuleBasedStateMachine):
    """Any sequence of commands: each one is accepted exactly when the model says it may come
    now, and refused with the model's code otherwise; nothing else is ever raised."""

    def __init__(self) -> None:
        super().__init__()
        self.words = WORDS["ws"]
        self.control = Control(self.words)
        self.model = "idle"  # idle -> streaming (or pending) -> ended

    def expect(self, cmd, code: str | None, then: str | None) -> None:
        try:
            self.control.accept(cmd)
        except SessionError as exc:
            assert exc.code == code, (cmd, self.model, exc.code)
            assert exc.code in CODES
            return
        assert code is None, (cmd, self.model, "accepted")
        if then is not None:
            self.control.enter(then)
            self.model = then

    @rule(pending=st.booleans())
    def start(self, pending: bool) -> None:
        cmd = Start(lambda _: SessionConfig()) if pending else Start(SessionConfig())
        code = None if self.model == "idle" else "bad_config"
        self.expect(cmd, code, "pending" if pending else "streaming")

    @rule()
    def resume(self) -> None:
        self.expect(Resume("t", 0, 0), None if self.model == "idle" else "bad_config",
                    "streaming")

    @rule(data=st.binary(max_size=8))
    def audio(self, data: bytes) -> None:
        code = {"idle": "audio_before_start", "ended": "audio_after_end"}.get(self.model)
        self.expect(Audio(data), code, "streaming")

    @rule()
    def stop(self) -> None:
        code = {"idle": "expected_start", "ended": "audio_after_end"}.get(self.model)
        self.expect(Stop(), code, "ended")

    @invariant()
    def phase_follows_the_model(self) -> None:
        assert self.control.phase == self.model


TestControlMachine = ControlMachine.TestCase
TestControlMachine.settings = settings(max_examples=200, stateful_step_count=12, deadline=None)


def test_a_protocol_without_resume_refuses_it_by_name() -> None:
    with pytest.raises(SessionError) as info:
        Control(WORDS["riva"]).accept(Resume("t", 0, 0))
    assert info.value.code == "unknown_type" and "streaming_config" in str(info.value)


def test_errors_name_the_adapters_own_messages() -> None:
    """Out-of-order errors speak the client's protocol: `start` / `binary audio` over
    WebSocket, `streaming_config` / `audio_content` / request over Riva's gRPC."""
    with pytest.raises(SessionError, match="binary audio before the start message"):
        Control(WORDS["ws"]).accept(Audio(b""))
    riva = Control(WORDS["riva"])
    with pytest.raises(SessionError, match="audio_content before the streaming_config message: "
                                           "the first request must carry streaming_config$"):
        riva.accept(Audio(b""))
    riva.accept(Start(SessionConfig()))
    riva.enter("streaming")
    with pytest.raises(SessionError, match="streaming_config sent twice"):
        riva.accept(Start(SessionConfig()))


@pytest.mark.parametrize(("exc", "started", "code"), [
    (control_error("idle_timeout", "x"), True, "idle_timeout"),
    (SessionError("frame_too_large", "x"), True, "frame_too_large"),
    (AudioError("bad rate"), False, "bad_config"),
    (AudioError("odd bytes"), True, "bad_audio"),
    (ResumeError("expired", "x"), False, "resume_failed"),
    (ResumedElsewhere("x"), True, "resumed_elsewhere"),
    (Overloaded("x"), False, "overloaded"),
    (StreamError("x"), True, "internal"),
    (KeyError(4637), True, "internal"),
])
def test_every_exception_gets_one_code_of_the_vocabulary(exc, started, code) -> None:
    got, message, reason = classify(exc, started=started)
    assert got == code and got in CODES and message
    assert (reason == "expired") == isinstance(exc, ResumeError)
    assert is_server_bug(exc) == isinstance(exc, KeyError)
    if isinstance(exc, KeyError):
        assert message.startswith("internal error: KeyError")


def test_every_code_has_a_websocket_close_and_a_grpc_status() -> None:
    """The adapters map the whole vocabulary: a close code for each (1011 only for internal),
    and a gRPC status (INVALID_ARGUMENT for client errors, INTERNAL only for internal)."""
    assert set(CLOSE) == set(CODES)
    assert [c for c in CODES if CLOSE[c] == 1011] == ["internal"]
    status = {c: STATUS.get(c, grpc.StatusCode.INVALID_ARGUMENT) for c in CODES}
    assert [c for c, s in status.items() if s == grpc.StatusCode.INTERNAL] == ["internal"]
    assert set(STATUS) <= set(CODES)
