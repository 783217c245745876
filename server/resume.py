"""Resume after reconnect, sans I/O: the bookkeeping that lets a client whose connection dropped
mid-stream continue the same stream (model state, decoder, endpointing) on a new connection.

A resumable stream has a `ResumeLedger`:
- its token (`secrets.token_urlsafe`, 192 random bits), sent when the stream starts;
- `acked`: the audio BYTES the server has taken into the stream (in the stream's declared
  encoding, WAV header included for `wav`), sent with every result. Bytes, not samples, so the
  client needs no knowledge of the encoding to resend: it keeps what it sent after the last
  `acked` and resends from there;
- the finals it made, numbered from 0 (`Final.seq`), kept (at most KEPT_FINALS) until a
  resuming client says how many it has received.

A client resumes with (token, offset, finals): `offset` is the stream byte offset of the next
audio byte it will send (its last `acked`; never more than the server's), `finals` the number
of finals it has received. `ResumeLedger.resume` checks both against what the server has,
arranges for the re-sent bytes the server already has (those before its `acked`) to be
skipped, and returns the finals owed (`seq >= finals`: in flight when the connection dropped,
or made while the stream was detached), so no audio is lost or counted twice and no final is
repeated. `Tokens` maps live tokens to their streams and remembers, for a while, why a token
can no longer be resumed (expired, ended), so the error says why. Timers, sockets and the
dispatcher live in server/app.py and the adapters; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from typing import Any, Generic, TypeVar

TOKEN_BYTES = 24  # random bytes in a token (32 URL-safe characters)
MAX_TOKEN_CHARS = 128  # longer "tokens" are refused without a lookup
KEPT_FINALS = 1024  # finals kept per stream for redelivery; older ones are assumed delivered
FORGOTTEN_TOKENS = 4096  # ended streams' tokens remembered for the error message
# why a resume failed: the `reason` of a `resume_failed` error
REASONS = ("disabled", "unknown_token", "expired", "ended", "server_shutdown", "in_use",
           "offset_ahead", "offset_unaligned", "finals_ahead", "finals_gone")

T = TypeVar("T")


class ResumeError(Exception):
    """A resume that cannot be done: `reason` (one of REASONS) and a message naming the field
    and what was expected. Always a client-facing error (`resume_failed`), never `internal`."""

    code = "resume_failed"

    def __init__(self, reason: str, message: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ResumedElsewhere(Exception):
    """Raised in the adapter that owned a stream when another connection resumed it with its
    token: that adapter lets go of the stream (without closing it) and ends its connection."""

    code = "resumed_elsewhere"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class ResumeLedger:
    """One stream's resume bookkeeping: bytes taken, finals made and kept, bytes to skip."""

    def __init__(self, token: str | None, *, align: int = 1, keep: int = KEPT_FINALS):
        """`token`: None for a stream that cannot be resumed (it then keeps no finals);
        `align`: bytes per sample frame of a raw encoding (a resume offset must be a multiple,
        or the re-sent frames would split samples), 1 for `wav`."""
        self.token = token
        self.align = max(1, align)
        self.acked = 0  # audio bytes taken into the stream
        self.finals_made = 0
        self._kept: deque[Any] = deque(maxlen=keep if token is not None else 0)
        self._skip = 0  # re-sent bytes still to drop (after a resume)

    # ---- the stream's side -------------------------------------------------------------------
    def incoming(self, data: bytes) -> bytes:
        """A frame from the client -> the part the stream does not have yet. After a resume
        the client resends from its offset; the bytes before the server's `acked` are dropped
        here (the frame may end inside them, or straddle the boundary)."""
        if not self._skip:
            return data
        cut = min(self._skip, len(data))
        self._skip -= cut
        return data[cut:]

    def took(self, nbytes: int) -> None:
        """`nbytes` more were taken into the stream (after the session accepted them)."""
        self.acked += nbytes

    def made(self, final: Any) -> None:
        """A final was made (its `seq` is its index in the stream): kept until delivered."""
        if final.seq != self.finals_made:
            raise ValueError(f"finals must be recorded in order: expected seq "
                             f"{self.finals_made}, got {final.seq}")
        self.finals_made += 1
        self._kept.append(final)

    # ---- a resuming client -------------------------------------------------------------------
    def check(self, offset: int, finals: int) -> None:
        """ResumeError unless (offset, finals) is a point this stream can continue from (the
        adapter has checked that both are non-negative integers)."""
        if offset > self.acked:
            raise ResumeError("offset_ahead", f"offset {offset} is beyond the {self.acked} audio "
                                              "bytes the server has taken into the stream (acked); "
                                              "resend from the last acked offset received")
        if offset % self.align:
            raise ResumeError("offset_unaligned", f"offset {offset} is not a multiple of the "
                                                  f"{self.align}-byte sample frame of the stream's "
                                                  "encoding; expected an acked offset")
        if finals > self.finals_made:
            raise ResumeError("finals_ahead", f"finals {finals}: the stream has made only "
                                              f"{self.finals_made}; expected the number of finals "
                                              "received")
        oldest = self._kept[0].seq if self._kept else self.finals_made
        if finals < oldest:
            raise ResumeError("finals_gone", f"finals {finals}: finals before seq {oldest} are no "
                                             f"longer kept (at most {self._kept.maxlen})")

    def resume(self, offset: int, finals: int) -> list[Any]:
        """Continue from (offset, finals): the finals owed (seq >= finals), in order. The next
        `acked - offset` bytes the client sends are the ones the server has: skipped."""
        self.check(offset, finals)
        self._skip = self.acked - offset
        while self._kept and self._kept[0].seq < finals:  # the client has them: forget them
            self._kept.popleft()
        return list(self._kept)


class Tokens(Generic[T]):
    """Live tokens -> their streams, and why a recent token is no longer resumable."""

    def __init__(self, remember: int = FORGOTTEN_TOKENS):
        self.live: dict[str, T] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._remember = remember

    def add(self, token: str, item: T) -> None:
        self.live[token] = item

    def remove(self, token: str, why: str) -> None:
        """The stream ended (`why`: a reason of REASONS, e.g. expired, ended): its token is
        remembered for the error message of a late resume."""
        assert why in REASONS, why
        if self.live.pop(token, None) is not None:
            self._gone[token] = why
            while len(self._gone) > self._remember:
                self._gone.popitem(last=False)

    def find(self, token: Any, *, window_s: float) -> T:
        """The stream of `token`, or a ResumeError saying why there is none."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise ResumeError("unknown_token", f"token must be the resume_token string the stream "
                                               f"started with, got {str(token)[:40]!r}")
        item = self.live.get(token)
        if item is not None:
            return item
        why = self._gone.get(token)
        if why == "expired":
            raise ResumeError("expired", f"the resume window (resume_window_s={window_s:g} s) "
                                         "passed before the stream was resumed; its slot was "
                                         "released: start a new stream")
        if why == "server_shutdown":
            raise ResumeError("server_shutdown", "the stream was closed because the server is "
                                                 "shutting down: start a new stream elsewhere")
        if why is not None:
            raise ResumeError("ended", "the stream has already ended (stop, error, clean close or "
                                       "a failed step): start a new stream")
        raise ResumeError("unknown_token", "no stream has this resume token (expected the "
                                           "resume_token of a stream whose connection dropped "
                                           f"less than resume_window_s={window_s:g} s ago)")
