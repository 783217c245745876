"""Voices and prosody: what one synthesized utterance is spoken with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Voice:
    engine: str  # engine name, e.g. "espeak-ng"
    name: str  # the engine's own voice name, e.g. "en-gb-scotland+Alex"
    group: str  # speaker identity; the same person across engines shares a group
    shift: int = 0  # > 0: a derived voice, this voice + a fixed transform (voice_shift.py)

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"+vs{self.shift}" if self.shift else "")


@dataclass(frozen=True)
class Prosody:
    """Per-utterance variation within natural ranges."""

    rate: float = 1.0  # speaking-rate factor (native to every engine)
    pitch: float = 1.0  # F0 factor, applied where the engine can change pitch alone
    vtl_cents: float = 0.0  # pitch + formant shift (vocal-tract length), sox, every engine
    peak_db: float = -3.0  # output peak level
    pad_start_s: float = 0.1
    pad_end_s: float = 0.1
