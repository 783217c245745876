"""`chorus data synth`: plan utterances, synthesize in parallel, write WAVs + Lhotse manifests.

Deterministic for a seed, whatever --jobs: the plan is drawn from one seeded RNG, utterances are
synthesized in fixed blocks whose results are consumed in plan order, and the corpus stops at the
first utterance where the requested hours are reached.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.data.synth.engines import ENGINES, SynthesisError
from training.data.synth.postprocess import SAMPLE_RATE_HZ, postprocess
from training.data.synth.split import SPLITS, split_voices, text_split
from training.data.synth.voice_shift import derive_voices, shift_of
from training.data.synth.voices import Prosody, Voice
from training.data.text.sources import fortune_sentences, word_list, word_sequence
from training.data.text.templates import TEMPLATES

log = logging.getLogger(__name__)

DEFAULT_ENGINE_WEIGHTS = {"espeak-ng": 0.30, "mbrola": 0.10, "flite": 0.14, "festival": 0.14,
                          "rhvoice": 0.16, "pico": 0.08, "piper": 0.08}
DEFAULT_DOMAIN_WEIGHTS = {"fortunes": 0.45, "words": 0.08, "numbers": 0.07, "times": 0.06,
                          "dates": 0.06, "money": 0.06, "addresses": 0.06, "spelled": 0.06,
                          "commands": 0.10}
UTTERANCE_SPLIT_WEIGHTS = {"train": 0.90, "dev": 0.05, "test": 0.05}
MAX_TEXT_DRAWS = 2000


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    hours: float
    seed: int = 0
    jobs: int = 2
    engines: tuple[str, ...] = tuple(DEFAULT_ENGINE_WEIGHTS)
    engine_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ENGINE_WEIGHTS))
    domain_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DOMAIN_WEIGHTS))
    split_weights: dict[str, float] = field(default_factory=lambda: dict(UTTERANCE_SPLIT_WEIGHTS))
    rate_range: tuple[float, float] = (0.8, 1.25)
    pitch_range: tuple[float, float] = (0.85, 1.2)
    vtl_cents_range: tuple[float, float] = (-150.0, 150.0)  # about -8% .. +9% formant scale
    peak_db_range: tuple[float, float] = (-9.0, -1.0)
    pad_range_s: tuple[float, float] = (0.05, 0.4)
    block: int = 48
    # > 0: derived voices (training.data.synth.voice_shift) so that every engine has at least
    # this many; 0: the engines' own voices only
    min_voices_per_engine: int = 0
    # prepended to every utterance id: corpora trained together need distinct ids (a second
    # corpus of the same seed numbers its utterances the same way)
    id_prefix: str = ""
    # the seed of the train / dev / test voice split (None: `seed`). A second corpus of new
    # sentences (another `seed`) keeps the first corpus's held-out voices with voice_seed set
    # to the first one's seed: its train split then holds no voice of the first's test split.
    voice_seed: int | None = None

    @property
    def split_seed(self) -> int:
        return self.seed if self.voice_seed is None else self.voice_seed


@dataclass(frozen=True)
class UttPlan:
    id: str
    split: str
    domain: str
    text: str  # normalised transcript
    speak: str  # what the engine is given
    voice: Voice
    prosody: Prosody


class TextPool:
    def __init__(self) -> None:
        self.fortunes: dict[str, list[str]] = defaultdict(list)
        for s in fortune_sentences():
            self.fortunes[text_split(s)].append(s)
        self.words = word_list()

    def domains(self) -> list[str]:
        out = list(TEMPLATES)
        if self.words:
            out.append("words")
        if all(self.fortunes[s] for s in SPLITS):
            out.append("fortunes")
        return out

    def draw(self, domain: str, split: str, rng: random.Random) -> tuple[str, str]:
        if domain == "fortunes":
            s = rng.choice(self.fortunes[split])
            return s, s
        for _ in range(MAX_TEXT_DRAWS):
            if domain == "words":
                text = word_sequence(rng, self.words)
                speak = text
            else:
                text, speak = TEMPLATES[domain](rng)
            if text_split(text) == split:
                return text, speak
        raise RuntimeError(f"could not draw a {split} sentence for domain {domain}")


def _weighted(rng: random.Random, weights: dict[str, float], allowed: list[str]) -> str:
    keys = [k for k in sorted(weights) if k in allowed and weights[k] > 0]
    if not keys:
        raise ValueError(f"nothing to choose from: weights {weights}, allowed {allowed}")
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def available_voices(cfg: SynthConfig) -> list[Voice]:
    voices: list[Voice] = []
    for name in cfg.engines:
        engine = ENGINES.get(name)
        if engine is None:
            raise ValueError(f"unknown engine {name!r}; known: {sorted(ENGINES)}")
        if not engine.available():
            log.warning("TTS engine %s is not installed, skipping it (install: %s)",
                        name, engine.install_hint)
            continue
        voices.extend(engine.voices())
    if not voices:
        raise RuntimeError("no TTS engine is installed: run `make system` (or .ci/system-packages.sh)")
    if cfg.min_voices_per_engine > 0:
        voices = derive_voices(voices, cfg.min_voices_per_engine)
    return voices


def draw_prosody(rng: random.Random, cfg: SynthConfig) -> Prosody:
    """One utterance's (or speaker's) prosody within the config's natural ranges."""
    lo_pad, hi_pad = cfg.pad_range_s
    return Prosody(
        rate=round(rng.uniform(*cfg.rate_range), 3),
        pitch=round(rng.uniform(*cfg.pitch_range), 3),
        vtl_cents=round(rng.uniform(*cfg.vtl_cents_range)),
        peak_db=round(rng.uniform(*cfg.peak_db_range), 2),
        pad_start_s=round(rng.uniform(lo_pad, hi_pad), 3),
        pad_end_s=round(rng.uniform(lo_pad, hi_pad), 3),
    )


def plan_utterances(cfg: SynthConfig, pools: dict[str, list[Voice]], texts: TextPool
                    ) -> Iterator[UttPlan]:
    rng = random.Random(cfg.seed)
    domains = texts.domains()
    by_split_engine: dict[str, dict[str, list[Voice]]] = {
        s: defaultdict(list) for s in SPLITS}
    for s in SPLITS:
        for v in pools[s]:
            by_split_engine[s][v.engine].append(v)
    for i in range(10**9):
        split = _weighted(rng, cfg.split_weights, list(SPLITS))
        engine = _weighted(rng, cfg.engine_weights, list(by_split_engine[split]))
        voice = rng.choice(by_split_engine[split][engine])
        domain = _weighted(rng, cfg.domain_weights, domains)
        text, speak = texts.draw(domain, split, rng)
        prosody = draw_prosody(rng, cfg)
        yield UttPlan(f"{cfg.id_prefix}{split}-{i:07d}", split, domain, text, speak, voice,
                      prosody)


def wav_path(out_dir: str | Path, plan: UttPlan) -> Path:
    return Path(out_dir) / "wavs" / plan.split / f"{plan.id}.wav"


def synthesize_one(args: tuple[UttPlan, str]) -> tuple[UttPlan, float | None, str]:
    """Worker: returns (plan, duration or None, error message)."""
    plan, out_dir = args
    out = wav_path(out_dir, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="chorus-synth-") as tmp:
            raw = Path(tmp) / "raw.wav"
            ENGINES[plan.voice.engine].synthesize(plan.voice, plan.speak, plan.prosody, raw)
            return plan, postprocess(raw, out, plan.prosody, shift_of(plan.voice)), ""
    except SynthesisError as exc:
        out.unlink(missing_ok=True)
        return plan, None, str(exc)


def _cut(plan: UttPlan, path: Path, duration: float):  # -> lhotse.MonoCut
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    num_samples = round(duration * SAMPLE_RATE_HZ)
    rec = Recording(id=plan.id, sources=[AudioSource(type="file", channels=[0],
                                                      source=str(path.resolve()))],
                    sampling_rate=SAMPLE_RATE_HZ, num_samples=num_samples, duration=duration)
    custom = {"engine": plan.voice.engine, "domain": plan.domain, "voice_group": plan.voice.group,
              "prosody": asdict(plan.prosody)}
    sup = SupervisionSegment(id=plan.id, recording_id=plan.id, start=0.0, duration=duration,
                             channel=0, text=plan.text, language="en", speaker=plan.voice.id,
                             custom=custom)
    return MonoCut(id=plan.id, start=0.0, duration=duration, channel=0, recording=rec,
                   supervisions=[sup], custom={"engine": plan.voice.engine, "domain": plan.domain})


def synthesize_corpus(cfg: SynthConfig, *, progress: bool = True) -> dict:
    """Build the corpus under cfg.out; returns the statistics also written to stats.json."""
    from lhotse import CutSet
    from tqdm import tqdm

    start = time.monotonic()
    cfg.out.mkdir(parents=True, exist_ok=True)
    voices = available_voices(cfg)
    pools = split_voices(voices, seed=cfg.split_seed)
    texts = TextPool()
    plans = plan_utterances(cfg, pools, texts)
    target_s = cfg.hours * 3600.0
    done: list[tuple[UttPlan, float]] = []
    failures: Counter[str] = Counter()
    total_s = 0.0
    ctx = mp.get_context("fork")
    bar = tqdm(total=round(target_s), unit="s audio", disable=not progress, smoothing=0.1)
    with ctx.Pool(max(1, cfg.jobs)) as pool:
        while total_s < target_s:
            block = [(next(plans), str(cfg.out)) for _ in range(cfg.block)]
            for plan, duration, err in pool.imap(synthesize_one, block):
                if total_s >= target_s:  # past the target inside this block: discard the rest
                    wav_path(cfg.out, plan).unlink(missing_ok=True)
                    continue
                if duration is None:
                    failures[plan.voice.id] += 1
                    log.warning("skipped %s (%s): %s", plan.id, plan.voice.id, err)
                    continue
                done.append((plan, duration))
                total_s += duration
                bar.update(round(duration))
    bar.close()
    wall = time.monotonic() - start

    for split in SPLITS:
        cuts = [_cut(p, wav_path(cfg.out, p), d) for p, d in done
                if p.split == split]
        CutSet.from_cuts(cuts).to_file(cfg.out / f"cuts_{split}.jsonl.gz")
    stats = corpus_stats(done, pools, failures, wall, cfg)
    (cfg.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (cfg.out / "voices.json").write_text(json.dumps(
        {s: [v.id for v in pools[s]] for s in SPLITS}, indent=1) + "\n")
    return stats


def corpus_stats(done: list[tuple[UttPlan, float]], pools: dict[str, list[Voice]],
                 failures: Counter[str], wall_s: float, cfg: SynthConfig) -> dict:
    per_split: dict[str, dict] = {}
    for split in SPLITS:
        items = [(p, d) for p, d in done if p.split == split]
        voices_by_engine: dict[str, set[str]] = defaultdict(set)
        for p, _ in items:
            voices_by_engine[p.voice.engine].add(p.voice.id)
        per_split[split] = {
            "utterances": len(items),
            "hours": round(sum(d for _, d in items) / 3600, 4),
            "voices": len({p.voice.id for p, _ in items}),
            "voices_per_engine": {e: len(v) for e, v in sorted(voices_by_engine.items())},
            "domains": dict(sorted(Counter(p.domain for p, _ in items).items())),
        }
    audio_s = sum(d for _, d in done)
    all_voices: dict[str, set[str]] = defaultdict(set)
    for p, _ in done:
        all_voices[p.voice.engine].add(p.voice.id)
    return {
        "command": {"hours": cfg.hours, "seed": cfg.seed, "jobs": cfg.jobs,
                    "min_voices_per_engine": cfg.min_voices_per_engine,
                    "id_prefix": cfg.id_prefix, "voice_seed": cfg.split_seed},
        "hours": round(audio_s / 3600, 4),
        "utterances": len(done),
        "distinct_voices": sum(len(v) for v in all_voices.values()),
        "engines": sorted(all_voices),
        "voices_per_engine": {e: len(v) for e, v in sorted(all_voices.items())},
        "voice_inventory_per_engine": dict(sorted(Counter(
            v.engine for v in set().union(*pools.values())).items())),
        "splits": per_split,
        "failures": sum(failures.values()),
        "failures_per_voice": dict(failures.most_common(20)),
        "wall_seconds": round(wall_s, 1),
        "audio_seconds_per_wall_second": round(audio_s / wall_s, 2) if wall_s else None,
    }
