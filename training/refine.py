"""`chorus data refine`: score synthesized candidates and keep the good ones (Nemotron-style).

Nemotron-4 340B (NVIDIA 2024) builds its alignment data by generating candidates, scoring each
with a reward model and keeping what scores well, round after round, each round's model scoring
the next (weak-to-strong). For synthetic speech the candidates are text x voice (x augmentation)
utterances from `chorus data synth` (oversample, then filter down), and the "reward" is what we
can measure without a human:

- **round-trip CER**: the current model's greedy transcript against the text the engine was
  given to speak. A high CER flags an engine that mispronounced, skipped or garbled the text
  (or a voice the model cannot follow yet: the filter's risk, which round 2 re-checks).
- **LM score**: the text's mean log10 probability per word under a word n-gram (reported and,
  with `min_lm_logprob`, a threshold; off by default, since a rare text is not bad data).
- **signal checks**: clipping (fraction of samples at full scale), silence ratio (fraction of
  10 ms frames 40 dB or more below the utterance's loudest frame) and speaking rate (letters
  per voiced second) against the pool's own distribution in the same domain (robust z-score
  of its log), which catches truncated audio and runaway engines.

`filter_pool` removes every utterance failing a check, then (with `keep`) keeps the best
fraction of the pool by CER, so filtered and unfiltered sets can be compared at equal size.
The report says what was removed and why, by engine, voice and domain, with examples.
Hand-written: the checks are a few lines of numpy each; no library scores TTS output this way.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FRAME = 160  # 10 ms at 16 kHz
SILENCE_DB = 40.0  # a frame this far below the loudest frame is silence
CLIP = 0.999  # |sample| at or above: clipped
MIN_LOG_MAD = 0.1  # speaking-rate spread floor (10 %), in log units


@dataclass(frozen=True)
class RefineConfig:
    max_cer: float = 0.5  # round-trip CER above this: removed
    max_clipping: float = 0.001  # fraction of samples at full scale
    max_silence: float = 0.7  # fraction of silent 10 ms frames
    max_rate_z: float = 3.5  # |robust z| of log speaking rate over the pool
    min_lm_logprob: float | None = None  # log10 per word; None: reported only
    keep: float | None = None  # after the checks, keep this fraction of the pool by CER

    def validate(self) -> None:
        if self.max_cer < 0 or self.max_clipping < 0 or not 0 < self.max_silence <= 1:
            raise ValueError(f"refine: --max-cer and --max-clipping must be >= 0 and "
                             f"--max-silence in (0, 1]; got {self.max_cer}, "
                             f"{self.max_clipping}, {self.max_silence}")
        if self.max_rate_z <= 0:
            raise ValueError(f"refine: --max-rate-z must be > 0, got {self.max_rate_z}")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise ValueError(f"refine: --keep must be a fraction in (0, 1], got {self.keep}")


@dataclass(frozen=True)
class Signal:
    clipping: float  # fraction of samples with |x| >= CLIP
    silence: float  # fraction of 10 ms frames >= SILENCE_DB below the loudest
    voiced_s: float  # seconds of non-silent frames
    rate: float  # letters per voiced second (0 when nothing is voiced)


def signal_checks(audio: np.ndarray, text: str) -> Signal:
    """Clipping, silence and speaking rate of one utterance (audio (S,) float in [-1, 1])."""
    x = np.asarray(audio, dtype=np.float64)
    clipping = float(np.mean(np.abs(x) >= CLIP)) if x.size else 0.0
    n = x.size // FRAME
    if n == 0:
        return Signal(clipping, 1.0, 0.0, 0.0)
    power = np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1)  # (n,)
    db = 10 * np.log10(power + 1e-12)
    silent = db < db.max() - SILENCE_DB
    voiced = float((~silent).sum()) * FRAME / 16_000
    letters = sum(ch.isalnum() for ch in text)
    return Signal(clipping, float(silent.mean()), voiced, letters / voiced if voiced else 0.0)


def rate_z(rates: list[float], groups: list[str] | None = None) -> list[float]:
    """Robust z-scores of log speaking rate (median, 1.4826 x MAD, the MAD floored at
    MIN_LOG_MAD so a tight pool does not flag ordinary variation), within each group (the
    domain: spelled letters and spoken digits have their own rates); nothing voiced: +inf."""
    keys = groups or [""] * len(rates)
    logs = np.log([r if r > 0 else np.nan for r in rates])
    out = [math.inf] * len(rates)
    for g in set(keys):
        idx = [i for i, k in enumerate(keys) if k == g and not np.isnan(logs[i])]
        if not idx:
            continue
        v = logs[idx]
        med = float(np.median(v))
        mad = max(float(np.median(np.abs(v - med))), MIN_LOG_MAD) * 1.4826
        for i in idx:
            out[i] = float((logs[i] - med) / mad)
    return out


@dataclass(frozen=True)
class Candidate:
    id: str
    engine: str
    voice: str
    domain: str
    ref: str
    hyp: str
    cer: float
    lm_logprob: float | None  # log10 per word (None without an LM)
    signal: Signal
    rate_z: float

    def reasons(self, cfg: RefineConfig) -> list[str]:
        """The checks this utterance fails (empty: it passes)."""
        out = []
        if self.cer > cfg.max_cer:
            out.append("cer")
        if self.signal.clipping > cfg.max_clipping:
            out.append("clipping")
        if self.signal.silence > cfg.max_silence:
            out.append("silence")
        if abs(self.rate_z) > cfg.max_rate_z:
            out.append("rate")
        if (cfg.min_lm_logprob is not None and self.lm_logprob is not None
                and self.lm_logprob < cfg.min_lm_logprob):
            out.append("lm")
        return out


def score_pool(bundle: Any, utts: list[Any], lm: Any = None, *,
               progress: bool = True) -> list[Candidate]:
    """Every pool utterance scored: greedy round trip by `bundle`, LM, signal checks."""
    from tqdm import tqdm

    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all

    log_probs, _ = forward_all(bundle, utts, progress=progress, desc="round trip")
    hyps, _ = decode_all(bundle, log_probs, decoder="greedy", beam_size=1)
    signals = [signal_checks(u.audio(), u.ref)
               for u in tqdm(utts, desc="signal checks", unit="utt", disable=not progress)]
    zs = rate_z([s.rate for s in signals], [u.domain for u in utts])
    out = []
    for u, hyp, sig, z in zip(utts, hyps, signals, zs, strict=True):
        words = u.ref.split()
        lp = lm.sentence_logprob(words) / (len(words) + 1) if lm is not None and words else None
        out.append(Candidate(u.id, u.engine, u.voice, u.domain, u.ref, hyp,
                             error_rates([u.ref], [hyp]).cer, lp, sig, z))
    return out


def filter_pool(cands: list[Candidate], cfg: RefineConfig) -> tuple[list[str], dict[str, list[str]]]:
    """(ids kept, best first; {id: reasons} of those removed). With `keep`, the passing
    utterances are ranked by CER (then LM score) and cut to keep x the pool's size; those cut
    get the reason "rank"."""
    cfg.validate()
    removed = {c.id: r for c in cands if (r := c.reasons(cfg))}
    passing = [c for c in cands if c.id not in removed]
    passing.sort(key=lambda c: (c.cer, -(c.lm_logprob if c.lm_logprob is not None else 0.0)))
    if cfg.keep is not None:
        k = round(cfg.keep * len(cands))
        for c in passing[k:]:
            removed[c.id] = ["rank"]
        passing = passing[:k]
    return [c.id for c in passing], removed


def report(cands: list[Candidate], kept: list[str], removed: dict[str, list[str]],
           cfg: RefineConfig, examples: int = 8) -> dict[str, Any]:
    """What the filter removed: by reason, by engine / voice / domain (count and fraction of
    that group's pool), the worst examples, and the kept set's mean scores."""
    def groups(key: str) -> dict[str, dict[str, float]]:
        pool = Counter(getattr(c, key) for c in cands)
        gone = Counter(getattr(c, key) for c in cands if c.id in removed)
        return {g: {"pool": pool[g], "removed": gone[g], "fraction": round(gone[g] / pool[g], 4)}
                for g in sorted(pool)}

    by_id = {c.id: c for c in cands}
    worst = sorted((by_id[i] for i in removed), key=lambda c: -c.cer)[:examples]
    keep_set = set(kept)

    def mean(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 4) if values else None

    return {
        "config": asdict(cfg), "pool": len(cands), "kept": len(kept), "removed": len(removed),
        "reasons": dict(Counter(r for rs in removed.values() for r in rs)),
        "by_engine": groups("engine"), "by_voice": groups("voice"), "by_domain": groups("domain"),
        "mean_cer": {"pool": mean([c.cer for c in cands]),
                     "kept": mean([c.cer for c in cands if c.id in keep_set])},
        "examples": [{"id": c.id, "engine": c.engine, "voice": c.voice, "domain": c.domain,
                      "reasons": removed[c.id], "cer": round(c.cer, 3), "ref": c.ref,
                      "hyp": c.hyp} for c in worst],
        "scores": {c.id: {"cer": round(c.cer, 4), "lm_logprob": c.lm_logprob,
                          "clipping": c.signal.clipping, "silence": round(c.signal.silence, 4),
                          "rate": round(c.signal.rate, 2), "rate_z": round(c.rate_z, 2)}
                   for c in cands},
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [f"pool {r['pool']}, kept {r['kept']}, removed {r['removed']} "
             f"(reasons: {', '.join(f'{k} {v}' for k, v in sorted(r['reasons'].items())) or 'none'}); "
             f"mean round-trip CER pool {r['mean_cer']['pool']}, kept {r['mean_cer']['kept']}", ""]
    for key in ("by_engine", "by_domain", "by_voice"):
        lines += [f"| {key[3:]} | pool | removed | fraction |", "|---|---|---|---|"]
        lines += [f"| {g} | {v['pool']} | {v['removed']} | {v['fraction']:.1%} |"
                  for g, v in r[key].items()]
        lines.append("")
    lines += ["| removed (worst CER) | engine / voice / domain | why | CER | text | heard |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {e['id']} | {e['engine']} / {e['voice']} / {e['domain']} | "
              f"{','.join(e['reasons'])} | {e['cer']} | {e['ref']} | {e['hyp']} |"
              for e in r["examples"]]
    return "\n".join(lines) + "\n"
