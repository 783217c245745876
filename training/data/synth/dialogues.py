"""`chorus data synth-dialogues`: MIND-style dialogues spoken turn by turn by two voices.

Input: `chorus data dialogues`'s dialogues.jsonl. Each dialogue keeps its own split (the text
hash of its source, so a test dialogue's source never reaches training) and draws two
different voices from that split's voice pool (`split_voices`, as `chorus data synth` does:
test dialogues are spoken by voices never heard in training), each with its own prosody held
for the whole dialogue, A speaking the odd turns and B the even ones. Every turn is one
utterance (domain "dialogue"; its dialogue id, turn index, role and style in the cut's
custom fields), synthesized in parallel by the corpus's own worker, written as Lhotse
manifests cuts_{train,dev,test}.jsonl.gz: the test split is the conversational held-out set.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data.synth.corpus import (
    SynthConfig,
    UttPlan,
    _cut,
    available_voices,
    draw_prosody,
    synthesize_one,
    wav_path,
)
from training.data.synth.split import SPLITS, split_voices
from training.data.synth.voices import Voice


@dataclass(frozen=True)
class DialogueSynthConfig:
    dialogues: Path
    out: Path
    seed: int = 0
    jobs: int = 2
    limit: int | None = None  # first N dialogues
    engines: tuple[str, ...] | None = None  # default: every installed engine


def plan_dialogues(records: list[dict[str, Any]], pools: dict[str, list[Voice]],
                   cfg: SynthConfig, seed: int) -> list[tuple[UttPlan, dict[str, Any]]]:
    """One plan per turn, with the cut's extra custom fields; two distinct voices per dialogue."""
    out = []
    for rec in records:
        rng = random.Random(f"dialogue-{seed}-{rec['id']}")
        pool = pools[rec["split"]]
        if len({v.id for v in pool}) < 2:
            raise ValueError(f"the {rec['split']} split has fewer than two voices: a dialogue "
                             "needs two (install more engines)")
        a, b = rng.sample(pool, 2)
        roles = {"A": (a, draw_prosody(rng, cfg)), "B": (b, draw_prosody(rng, cfg))}
        for k, turn in enumerate(rec["turns"]):
            voice, prosody = roles[turn["speaker"]]
            plan = UttPlan(f"{rec['split']}-{rec['id']}-t{k:02d}", rec["split"], "dialogue",
                           turn["text"], turn["text"], voice, prosody)
            out.append((plan, {"dialogue": rec["id"], "turn": k, "role": turn["speaker"],
                               "style": rec["style"]}))
    return out


def synthesize_dialogues(cfg: DialogueSynthConfig, *, progress: bool = True) -> dict[str, Any]:
    from lhotse import CutSet
    from tqdm import tqdm

    start = time.monotonic()
    lines = cfg.dialogues.read_text(encoding="utf-8").splitlines()
    records = [json.loads(x) for x in lines if x.strip()][: cfg.limit]
    if not records:
        raise ValueError(f"{cfg.dialogues}: no dialogues")
    base = SynthConfig(out=cfg.out, hours=0.0, seed=cfg.seed, jobs=cfg.jobs)
    if cfg.engines:
        base = dataclasses.replace(base, engines=cfg.engines)
    pools = split_voices(available_voices(base), seed=cfg.seed)
    plans = plan_dialogues(records, pools, base, cfg.seed)
    extra = {p.id: e for p, e in plans}
    done: dict[str, list[Any]] = {s: [] for s in SPLITS}
    failed: Counter[str] = Counter()
    audio_s = 0.0
    bar = tqdm(total=len(plans), unit="turn", disable=not progress, desc="dialogue turns")
    with mp.get_context("fork").Pool(max(1, cfg.jobs)) as pool:
        for plan, duration, _err in pool.imap(synthesize_one, [(p, str(cfg.out)) for p, _ in plans]):
            bar.update()
            if duration is None:
                failed[plan.voice.id] += 1
                continue
            cut = _cut(plan, wav_path(cfg.out, plan), duration)
            cut.supervisions[0].custom.update(extra[plan.id])
            done[plan.split].append(cut)
            audio_s += duration
    bar.close()
    cfg.out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        CutSet.from_cuts(done[split]).to_file(cfg.out / f"cuts_{split}.jsonl.gz")
    stats = {"dialogues": len(records), "turns": len(plans),
             "turns_per_split": {s: len(done[s]) for s in SPLITS},
             "dialogues_per_split": dict(Counter(r["split"] for r in records)),
             "hours": round(audio_s / 3600, 4), "failures": sum(failed.values()),
             "wall_seconds": round(time.monotonic() - start, 1)}
    (cfg.out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats
