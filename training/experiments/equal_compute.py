"""Accuracy per core-minute: output units, heads, strides and encoders trained for the same
wall-clock budget on one core each, scored on the held-out split; JSON + markdown.

    python -m training.experiments.equal_compute --corpus data/synth --minutes 60 \
        --only char-ctc-x4,sw256-ctc-x8 --out docs/results/equal-compute

A variant's name says what differs from the recipe: `UNITS-HEAD-xSTRIDE[-ENCODER]` with UNITS
`char` or `swN` (sentencepiece, N units), HEAD `ctc` or `rnnt_pruned`, STRIDE 2, 4 or 8 and
ENCODER `rnn` (the recipe's, the default) or any `model.arch` the encoder offers. CTC runs only
where the units' label density allows (median <= 0.8 labels per output frame, <= 2 % of
utterances above 1: see training.experiments.transducers). Each run: train (`optim.max_minutes`),
then on the held-out split greedy and beam + LM, the LM being the shipped bundle's word 3-gram
with weight and word bonus tuned on dev for this run (a small grid, the same for every run),
and real-time streams per core (`chorus bench model`, greedy). Calls may run side by side (one
per core) into the same table: rows are merged under a file lock, and a table refuses rows of
another budget or recipe. Slow by design: a command, not a test (a tiny smoke test runs in CI).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments import add_run_args, merge_runs

NAME = re.compile(r"^(char|sw(\d+))-(ctc|rnnt_pruned)-x(2|4|8)(?:-([a-z_]+))?$")
MAX_MEDIAN, MAX_INFEASIBLE = 0.8, 0.02
LM_WEIGHTS, LM_BONUSES = (0.3, 0.5, 0.8), (1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Variant:
    name: str
    units: int  # 0: characters, else sentencepiece vocabulary size
    head: str  # ctc | rnnt_pruned
    stride: int
    arch: str  # encoder architecture ("rnn": the recipe's recurrent encoder)

    def overrides(self) -> list[str]:
        out = [f"model.subsampling={self.stride}", f"head.type={self.head.removesuffix('_pruned')}"]
        if self.units:
            out += ["head.units=subword", f"head.subword_vocab={self.units}"]
        if self.head == "rnnt_pruned":
            out.append("head.rnnt_loss=pruned")
        if self.arch != "rnn":
            out.append(f"model.arch={self.arch}")
        return out


def parse(name: str) -> Variant:
    m = NAME.match(name)
    if not m:
        raise SystemExit(f"variant {name!r}: expected UNITS-HEAD-xSTRIDE[-ENCODER], e.g. "
                         "char-ctc-x4, sw256-ctc-x8, sw500-rnnt_pruned-x8-conformer")
    return Variant(name, int(m.group(2) or 0), m.group(3), int(m.group(4)), m.group(5) or "rnn")


def validity(v: Variant, train_manifest: str, tokenizer: Any) -> tuple[bool, str]:
    """Whether a CTC head can emit these units at this stride (RNN-T always can)."""
    if v.head != "ctc":
        return True, "valid (RNN-T: any labels per frame)"
    from training.eval.label_density import densities

    def segment(text: str) -> list[int]:
        return tokenizer.encode(text)

    r = densities(train_manifest, v.stride, segment if tokenizer is not None else list)
    med, bad = float(np.median(r)), float(np.mean(r > 1))
    ok = med <= MAX_MEDIAN and bad <= MAX_INFEASIBLE
    return ok, (f"{'valid' if ok else 'invalid'}: label density median {med:.2f}, "
                f"{100 * bad:.1f} % of utterances > 1")


def tune_lm(bundle: Any, dev: list[Any], lm: Any) -> tuple[float, float, float]:
    """(weight, bonus, dev WER) of the best beam + LM setting on the dev utterances."""
    from models.decoding import LmConfig, LmFusion
    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all

    outs, _ = forward_all(bundle, dev, progress=False)
    best = (0.0, 0.0, float("inf"))
    for w in LM_WEIGHTS:
        for b in LM_BONUSES:
            hyps, _ = decode_all(bundle, outs, decoder="beam", beam_size=8,
                                 lm=LmFusion(lm, LmConfig(w, b, 10.0)))
            wer = error_rates([u.ref for u in dev], hyps).wer
            if wer < best[2]:
                best = (w, b, wer)
    return best


def run_one(v: Variant, args: argparse.Namespace) -> dict[str, Any]:
    from models.benchmark import BenchConfig, bench_model
    from models.bundle import load
    from models.decoding import LmConfig, LmFusion
    from models.lm.arpa import ArpaLM
    from training.config import load_config
    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all, load_manifest
    from training.train import train

    corpus = Path(args.corpus)
    cfg = load_config(args.recipe, [
        f"name={v.name}", f"out_dir={Path(args.work) / v.name}", *v.overrides(),
        f"optim.max_minutes={args.minutes}", f"data.train=[{corpus / 'cuts_train.jsonl.gz'}]",
        f"data.dev=[{corpus / 'cuts_dev.jsonl.gz'}]", *args.override])
    bundle = load(train(cfg, progress=not args.no_progress))
    steps = int(bundle.provenance.get("steps", 0))
    lm = ArpaLM.load(args.lm)
    dev = load_manifest(corpus / "cuts_dev.jsonl.gz", args.dev_limit)
    weight, bonus, dev_lm_wer = tune_lm(bundle, dev, lm)
    utts = load_manifest(args.test or corpus / "cuts_test.jsonl.gz", args.limit)
    refs = [u.ref for u in utts]
    audio_s = sum(u.duration for u in utts)
    outs, cpu_fwd = forward_all(bundle, utts, progress=not args.no_progress, desc=v.name)
    greedy, cpu_greedy = decode_all(bundle, outs, decoder="greedy", beam_size=1, lm=None)
    beam, cpu_beam = decode_all(bundle, outs, decoder="beam", beam_size=8,
                                lm=LmFusion(lm, LmConfig(weight, bonus, 10.0)))
    g, b = error_rates(refs, greedy), error_rates(refs, beam)
    bench = bench_model(bundle, BenchConfig(threads=1, repeats=3))
    return {"run": v.name, "units": v.units or "char", "head": v.head, "stride": v.stride,
            "arch": v.arch, "vocab": bundle.tokenizer.vocab_size,
            "params": bundle.model.num_parameters(), "core_minutes": args.minutes,
            "steps": steps, "best_dev_wer": bundle.provenance.get("best_dev_wer"),
            "lm_weight": weight, "lm_bonus": bonus, "dev_wer_beam_lm": round(dev_lm_wer, 4),
            "test_wer_greedy": round(g.wer, 4), "test_cer_greedy": round(g.cer, 4),
            "test_wer_beam_lm": round(b.wer, 4), "test_cer_beam_lm": round(b.cer, 4),
            "rtf_greedy": round((cpu_fwd + cpu_greedy) / audio_s, 5),
            "rtf_beam_lm": round((cpu_fwd + cpu_beam) / audio_s, 5),
            "streams_per_core": bench["realtime_streams_per_core"], "test_utterances": len(utts),
            "overrides": list(args.override), "date": time.strftime("%Y-%m-%d"),
            "bundle": str(Path(args.work) / v.name / "bundle")}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| run | params | core-min | steps | dev WER | test WER / CER greedy | "
             "test WER / CER beam + LM | LM w / bonus | streams / core | date |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        dev = f"{100 * r['best_dev_wer']:.1f}" if r["best_dev_wer"] is not None else "-"
        lines.append(
            f"| {r['run']} | {r['params'] / 1e6:.2f} M | {r['core_minutes']:g} | {r['steps']} | "
            f"{dev} | {100 * r['test_wer_greedy']:.1f} / {100 * r['test_cer_greedy']:.1f} | "
            f"{100 * r['test_wer_beam_lm']:.1f} / {100 * r['test_cer_beam_lm']:.1f} | "
            f"{r['lm_weight']:g} / {r['lm_bonus']:g} | {r['streams_per_core']} | {r['date']} |")
    why = [f"- {k}: {v}" for k, v in sorted(result["validity"].items())]
    return "\n".join([*lines, "", "Validity (CTC label density at the run's stride):", *why]) + "\n"


def merge(args: argparse.Namespace, rows: list[dict[str, Any]], why: dict[str, str]) -> dict[str, Any]:
    """Put `rows` into the table at --out (replacing rows of the same name)."""
    return merge_runs(args, rows, markdown,
                      lambda old: {"validity": {**(old or {}).get("validity", {}), **why}})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.equal_compute",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--only", required=True,
                   help="comma-separated variants, e.g. char-ctc-x4,sw256-ctc-x8")
    add_run_args(p, minutes=60.0, name="equal-compute")
    args = p.parse_args(argv)

    from models.tokenizer import CharTokenizer
    from training.eval.run import load_manifest
    from training.units import train_subword

    variants = [parse(n) for n in args.only.split(",") if n]
    train_manifest = str(args.corpus / "cuts_train.jsonl.gz")
    texts = [u.ref for u in load_manifest(train_manifest)]
    why, runnable = {}, []
    for v in variants:
        tok = train_subword(texts, v.units) if v.units else CharTokenizer()
        ok, why[v.name] = validity(v, train_manifest, tok if v.units else None)
        print(f"equal_compute: {v.name}: {why[v.name]}", flush=True)
        if ok:
            runnable.append(v)
    result = merge(args, [], why)
    for i, v in enumerate(runnable, 1):
        print(f"equal_compute: [{i}/{len(runnable)}] {v.name} ({args.minutes:g} min)", flush=True)
        row = run_one(v, args)
        print(json.dumps(row), flush=True)
        result = merge(args, [row], {})
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
