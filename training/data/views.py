"""Corrupted training views drawn from the corruption library (training.data.corrupt).

`CorruptionDraw(cfg, seed)(x, rng)` returns one corrupted view of a training waveform and the
kind drawn: left clean, noise at an SNR drawn from `snr_db` (white / pink / brown), babble of
other training utterances (the last few this worker loaded, so other voices), far-field (a
pyroomacoustics room, then noise at 20 dB, as in the far-field test set) or the telephone
channel. Room simulation costs tens of milliseconds per response, so each worker simulates a
bank of `rir_bank` rooms once (seeded) and draws from it per utterance. The test sets use the
same functions with their own per-utterance seeds on held-out utterances and voices only.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from training.config import RobustConfig
from training.data.augment import colored_noise
from training.data.corrupt import apply_ir, corrupt, mix_at_snr, room_impulse_response

VIEW_KINDS = ("clean", "noise", "babble", "farfield", "telephone")
FARFIELD_SNR_DB = 20.0  # the far-field test set's noise floor


class CorruptionDraw:
    def __init__(self, cfg: RobustConfig, seed: int = 0, pool_size: int = 16):
        cfg.validate()
        self.cfg = cfg
        probs = np.array([cfg.clean_prob, cfg.noise_prob, cfg.babble_prob, cfg.farfield_prob,
                          cfg.telephone_prob], dtype=np.float64)
        self.probs = probs / probs.sum()
        self.seed = seed
        self.pool: deque[np.ndarray] = deque(maxlen=pool_size)  # other utterances, for babble
        self._rirs: list[np.ndarray] | None = None

    @property
    def rirs(self) -> list[np.ndarray]:
        if self._rirs is None:
            rng = np.random.default_rng([self.seed, 17])
            self._rirs = [room_impulse_response(rng)[0] for _ in range(max(1, self.cfg.rir_bank))]
        return self._rirs

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """x (S,) float32 -> (the corrupted view (S,), its kind)."""
        kind = VIEW_KINDS[int(rng.choice(len(VIEW_KINDS), p=self.probs))]
        others = list(self.pool)
        self.pool.append(x)
        if kind == "babble" and not others:
            kind = "noise"  # the first utterance a worker loads has no other voices yet
        if kind == "clean" or float(np.mean(x.astype(np.float64) ** 2)) <= 0:
            return x, "clean"
        c = self.cfg
        if kind == "noise":
            y, _ = corrupt(x, "noise", rng, snr_db=float(rng.uniform(*c.snr_db)))
        elif kind == "babble":
            y, _ = corrupt(x, "babble", rng, snr_db=float(rng.uniform(*c.babble_snr_db)),
                           sources=others)
        elif kind == "farfield":
            ir = self.rirs[int(rng.integers(len(self.rirs)))]
            y = mix_at_snr(apply_ir(x, ir), colored_noise(x.size, rng), FARFIELD_SNR_DB)
        else:
            y, _ = corrupt(x, "telephone", rng)
        return y.astype(np.float32), kind
