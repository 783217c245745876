"""Derived voices: one engine voice made into several speakers by a fixed signal transform.

Most engines here have a handful of voices (piper 1, pico 2, mbrola 4, festival 5, flite 5),
and a model that hears few speakers per engine generalises poorly to new ones. A derived voice
is an engine voice plus a `VoiceShift` fixed for that voice: the formants scaled (a shorter or
longer vocal tract), the median pitch scaled, and the intonation range widened or flattened,
independently of each other (sox's `pitch`, which the corpus already applies per utterance,
moves pitch and formants together). The shift of a derived voice is drawn from a seeded RNG
keyed by its id, so it is the same speaker in every utterance and every corpus.

Why praat-parselmouth: Praat's "Change gender" (PSOLA pitch manipulation with formant shift
by resampling) is the well-tested implementation of exactly this transform; the wheel needs
nothing else and runs in ~40 ms per utterance here.

A derived voice keeps its base voice's speaker group, so it lands in the same split: a derived
voice of a training speaker is never a "held-out" test voice.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from training.data.synth.voices import Voice

FORMANT_RANGE = (0.86, 1.17)  # formant shift ratio (about -15 % .. +17 % vocal-tract length)
PITCH_RANGE = (0.75, 1.35)  # median F0 factor (log-uniform)
INTONATION_RANGE = (0.6, 1.5)  # F0 range factor (log-uniform): flatter .. livelier
PITCH_FLOOR_HZ, PITCH_CEILING_HZ = 60.0, 500.0


@dataclass(frozen=True)
class VoiceShift:
    formant: float = 1.0
    pitch: float = 1.0
    intonation: float = 1.0


def shift_of(voice: Voice) -> VoiceShift | None:
    """The fixed transform of a derived voice (None for an engine's own voice)."""
    if voice.shift == 0:
        return None
    rng = random.Random(f"voice-shift-{voice.engine}:{voice.name}:{voice.shift}")

    def log_uniform(lo: float, hi: float) -> float:
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 3)

    return VoiceShift(round(rng.uniform(*FORMANT_RANGE), 3), log_uniform(*PITCH_RANGE),
                      log_uniform(*INTONATION_RANGE))


def derive_voices(voices: Sequence[Voice], min_per_engine: int) -> list[Voice]:
    """The voices plus derived ones, so that every engine has at least `min_per_engine`
    (each base voice gets the same number of derived voices, shift 1, 2, ...)."""
    by_engine: dict[str, list[Voice]] = defaultdict(list)
    for v in voices:
        by_engine[v.engine].append(v)
    out = list(voices)
    for base in (by_engine[e] for e in sorted(by_engine)):
        per = max(0, math.ceil(min_per_engine / len(base)) - 1)
        out += [replace(v, shift=k) for v in base for k in range(1, per + 1)]
    return out


def apply_shift(samples: np.ndarray, rate: int, shift: VoiceShift) -> np.ndarray:
    """(N,) float samples -> the same utterance spoken by the shifted voice (same length)."""
    try:
        import parselmouth
        from parselmouth.praat import call
    except ImportError as exc:  # pragma: no cover - the train extra installs it
        raise ImportError("derived voices need praat-parselmouth: "
                          "pip install 'chorus-asr[train]' (or pip install praat-parselmouth)"
                          ) from exc
    snd = parselmouth.Sound(np.asarray(samples, np.float64), sampling_frequency=float(rate))
    pitch = snd.to_pitch(pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    median = call(pitch, "Get quantile", 0, 0, 0.5, "Hertz")
    if not np.isfinite(median) or median <= 0:  # nothing voiced: formants only
        median, factor = 0.0, 1.0
    else:
        factor = shift.pitch
    out = call(snd, "Change gender", PITCH_FLOOR_HZ, PITCH_CEILING_HZ, shift.formant,
               median * factor, shift.intonation, 1.0)
    y = np.asarray(out.values[0], np.float32)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak * 0.99 if peak > 0.99 else y
