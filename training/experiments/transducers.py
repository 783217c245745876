"""CTC vs RNN-T vs Gram-CTC with the same encoder and the same wall-clock budget, at time strides
2, 4 and 8 where valid; writes a table (held-out WER/CER, training seconds per epoch, decoding
real-time factor, parameters) as JSON + markdown.

    python -m training.experiments.transducers --corpus data/synth --minutes 10 \
        --out docs/results/transducers

Validity: a CTC-style head needs at most one label per output frame, so (character or gram)
CTC runs at a stride only when the training transcripts' label density there has a median
<= 0.8 and <= 2 % of utterances above 1 (measured, see training.eval.label_density); RNN-T
emits any number of labels per frame and is valid at every stride. Each run trains with the
same recipe (encoder, augmentation, optimiser, `optim.max_minutes`) and greedy-decodes the
held-out test split. Slow by design: a command, not a test (a tiny smoke test runs in CI).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments import write_report

HEADS = ("ctc", "rnnt", "rnnt_pruned", "gram_ctc")  # rnnt_pruned: RNN-T, pruned loss
STRIDES = (2, 4, 8)
MAX_MEDIAN, MAX_INFEASIBLE = 0.8, 0.02

# what the seed papers claim, for the table beside ours
CLAIMS = {
    "rnnt": "Graves 2012 / Rao et al. 2017: RNN-T beats CTC without an external LM",
    "gram_ctc": "Liu et al. 2017: Gram-CTC matches or beats CTC, and at a larger stride "
                "(fewer frames) it trains and decodes faster",
}


@dataclass(frozen=True)
class Run:
    head: str
    stride: int

    @property
    def name(self) -> str:
        return f"{self.head}-x{self.stride}"


def plan(train_manifest: str, heads: tuple[str, ...], strides: tuple[int, ...],
         grams: list[str]) -> tuple[list[Run], dict[str, Any]]:
    """The valid (head, stride) runs and the density evidence for each decision."""
    from training.eval.label_density import densities, longest_match

    runs, why = [], {}
    for head in heads:
        for s in strides:
            if head.startswith("rnnt"):
                runs.append(Run(head, s))
                why[f"{head}-x{s}"] = "valid (RNN-T: any labels per frame)"
                continue
            seg = longest_match(grams) if head == "gram_ctc" else list
            r = densities(train_manifest, s, seg)
            med, bad = float(np.median(r)), float(np.mean(r > 1))
            ok = med <= MAX_MEDIAN and bad <= MAX_INFEASIBLE
            why[f"{head}-x{s}"] = (f"{'valid' if ok else 'invalid'}: label density median "
                                   f"{med:.2f}, {100 * bad:.1f} % of utterances > 1")
            if ok:
                runs.append(Run(head, s))
    return runs, why


def run_one(run: Run, args: argparse.Namespace, grams: list[str]) -> dict[str, Any]:
    from models.bundle import load
    from training.config import load_config
    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all, load_manifest
    from training.train import train

    corpus = Path(args.corpus)
    out = Path(args.work) / run.name
    overrides = [f"name={run.name}", f"out_dir={out}", f"model.subsampling={run.stride}",
                 f"head.type={run.head.removesuffix('_pruned')}",
                 f"optim.max_minutes={args.minutes}",
                 f"data.train=[{corpus / 'cuts_train.jsonl.gz'}]",
                 f"data.dev=[{corpus / 'cuts_dev.jsonl.gz'}]", *args.override]
    if run.head == "rnnt_pruned":
        overrides.append("head.rnnt_loss=pruned")
    if run.head == "gram_ctc":  # JSON quotes every gram (YAML would read "on", "no" as bools)
        overrides.append(f"head.grams={json.dumps(grams)}")
    cfg = load_config(args.recipe, overrides)
    t0 = time.monotonic()
    bundle_dir = train(cfg, progress=not args.no_progress)
    train_s = time.monotonic() - t0
    bundle = load(bundle_dir)
    steps = int(bundle.provenance.get("steps", 0))
    # epochs done = audio seen / audio in the training set (batches are max_duration_s long)
    from lhotse import CutSet

    train_audio = sum(c.duration for c in CutSet.from_file(corpus / "cuts_train.jsonl.gz"))
    epochs = steps * cfg.data.max_duration_s / train_audio
    utts = load_manifest(args.test or corpus / "cuts_test.jsonl.gz", args.limit)
    audio_s = sum(u.duration for u in utts)
    outs, cpu_fwd = forward_all(bundle, utts, progress=not args.no_progress, desc=run.name)
    hyps, cpu_dec = decode_all(bundle, outs, decoder="greedy", beam_size=1, lm=None)
    r = error_rates([u.ref for u in utts], hyps)
    return {"run": run.name, "head": run.head, "stride": run.stride,
            "frame_ms": 10 * run.stride, "params": bundle.model.num_parameters(),
            "vocab": bundle.tokenizer.vocab_size, "steps": steps,
            "train_seconds": round(bundle.provenance.get("train_seconds", train_s), 1),
            "epochs": round(epochs, 3),
            "train_seconds_per_epoch": round(bundle.provenance.get("train_seconds", train_s)
                                             / max(epochs, 1e-9), 1),
            "best_dev_wer": bundle.provenance.get("best_dev_wer"),
            "test_wer": round(r.wer, 4), "test_cer": round(r.cer, 4),
            "decode_rtf": round((cpu_fwd + cpu_dec) / audio_s, 5),
            "test_utterances": len(utts), "bundle": str(bundle_dir)}


def previous_rows(args: argparse.Namespace, rerun: set[str]) -> list[dict[str, Any]]:
    """--merge: the rows of the existing table at --out that this call does not re-run, each
    dated (rows written before rows carried dates take the table's date)."""
    path = args.out.with_suffix(".json")
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    for key, mine in (("minutes_per_run", args.minutes), ("recipe", str(args.recipe)),
                      ("gram_size", args.gram_size)):
        if old.get(key) != mine:
            raise SystemExit(f"--merge: {path} has {key}={old.get(key)!r}, this call "
                             f"{mine!r}; rows at different settings do not compare")
    return [{**r, "date": r.get("date", old["date"])} for r in old["runs"]
            if r["run"] not in rerun]


def markdown(result: dict[str, Any]) -> str:
    lines = ["| run | frame | params | steps | epochs | train s / epoch | dev WER | test WER | "
             "test CER | decode RTF | date |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        dev = f"{100 * r['best_dev_wer']:.1f} %" if r["best_dev_wer"] is not None else "-"
        lines.append(f"| {r['run']} | {r['frame_ms']} ms | {r['params'] / 1e6:.2f} M | "
                     f"{r['steps']} | {r['epochs']:.2f} | {r['train_seconds_per_epoch']:.0f} | "
                     f"{dev} | {100 * r['test_wer']:.1f} % | {100 * r['test_cer']:.1f} % | "
                     f"{r['decode_rtf']:.4f} | {r.get('date', result['date'])} |")
    skipped = [f"- {k}: {v}" for k, v in result["validity"].items()]
    claims = [f"- {v}" for v in CLAIMS.values()]
    return "\n".join([*lines, "", "Validity of each (head, stride):", *skipped, "",
                      "What the seed papers claim:", *claims]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.transducers",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="chorus data synth output")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per run")
    p.add_argument("--heads", default=",".join(HEADS))
    p.add_argument("--strides", default=",".join(map(str, STRIDES)))
    p.add_argument("--only", default="",
                   help="comma-separated run names to keep of the valid ones, e.g. ctc-x4,rnnt-x4")
    p.add_argument("--gram-size", type=int, default=300)
    p.add_argument("--limit", type=int, default=None, help="test utterances (default: all)")
    p.add_argument("--test", type=Path, default=None,
                   help="held-out manifest (default: CORPUS/cuts_test.jsonl.gz)")
    p.add_argument("--work", type=Path, default=Path("runs/transducers"))
    p.add_argument("--out", type=Path, default=Path("docs/results/transducers"))
    p.add_argument("--override", action="append", default=[],
                   help="extra recipe override for every run, e.g. optim.max_steps=50")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of an existing --out table that this call does not "
                        "re-run (same minutes per run, recipe and gram size required)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import gzip

    from training.grams import select_grams

    train_manifest = str(args.corpus / "cuts_train.jsonl.gz")
    with gzip.open(train_manifest, "rt") as f:
        texts = [json.loads(line)["supervisions"][0]["text"] for line in f]
    grams = select_grams(texts, size=args.gram_size)
    heads = tuple(h for h in args.heads.split(",") if h)
    strides = tuple(int(s) for s in args.strides.split(",") if s)
    runs, validity = plan(train_manifest, heads, strides, grams)
    if args.only:
        keep = set(args.only.split(","))
        runs = [r for r in runs if r.name in keep]
    print(f"transducers: {len(runs)} runs x {args.minutes} min: "
          f"{', '.join(r.name for r in runs)}", flush=True)
    kept = previous_rows(args, {r.name for r in runs}) if args.merge else []
    order = [f"{h}-x{s}" for h in HEADS for s in STRIDES]
    results: list[dict[str, Any]] = []
    for i, run in enumerate(runs, 1):
        print(f"transducers: [{i}/{len(runs)}] {run.name}", flush=True)
        results.append({**run_one(run, args, grams), "date": time.strftime("%Y-%m-%d")})
        print(json.dumps(results[-1]), flush=True)
        rows = sorted(kept + results, key=lambda r: order.index(r["run"]))
        result = {"date": time.strftime("%Y-%m-%d"), "minutes_per_run": args.minutes,
                  "recipe": str(args.recipe), "gram_size": args.gram_size,
                  "validity": validity, "runs": rows}
        write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
