"""Robust encoders at equal training compute: corrupted views, + L1, + GAN, + both, PCEN; each
continued from the shipped model for the same wall-clock minutes, then scored on the clean
held-out split and every corrupted copy of it (`chorus data corrupt`); JSON + markdown.

    python -m training.experiments.robust --corpus data/synth --corrupt-dir data/corrupt \
        --minutes 30 --only aug,l1 --out docs/results/robust

Variants (each also takes the --override list; `shipped` trains nothing: the reference row):
- shipped: the CTC model (models/pretrained/ctc, the shipped default until session 26) as it
  is (the variants are CTC recipes continued from it);
- cont: the shipped recipe's own augmentation continued for the same minutes (what more
  training alone buys);
- aug: corrupted views from the corruption library (training.data.views) instead;
- l1, gan, both: aug plus the paired-embedding L1 term, the WGAN-GP critic, or both
  (training.robust);
- pcen: aug with trainable PCEN instead of log-mel (training.frontend).
Scoring on every set: greedy and beam 8 + the shipped word 3-gram at the shipped weight and
bonus (the same for every row; no per-row tuning), and the mean relative distance between the
clean and the corrupted view's encoder embeddings (training.eval.embeddings) on each corrupted
set. Calls may run side by side (one per core) into one table: rows merge under a file lock.
Slow by design: a command, not a test (a smoke test runs a few steps in CI).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from training.experiments import encoder_overrides, locked_table, write_report

SHIPPED = Path("models/pretrained/ctc")  # the CTC recipes' start (and its LM, weight, bonus)
L1, GAN = "robust.l1_weight=2.0", "robust.gan_weight=0.3"
CRITIC = ["robust.critic_steps=3", "robust.critic_frames=1024"]
VARIANTS: dict[str, list[str]] = {
    "shipped": [],
    "cont": [],
    "aug": ["robust.corrupt=true"],
    "l1": ["robust.corrupt=true", L1],
    "gan": ["robust.corrupt=true", GAN, *CRITIC],
    "both": ["robust.corrupt=true", L1, GAN, *CRITIC],
    "pcen": ["robust.corrupt=true", "frontend=pcen"],
}
# the corrupted sets, in table order: (file stem after cuts_test-, column heading)
SETS = (("noise20", "20 dB"), ("noise10", "10 dB"), ("noise5", "5 dB"), ("noise0", "0 dB"),
        ("babble10", "babble 10 dB"), ("farfield20", "far-field"), ("telephone", "telephone"))


def train_variant(name: str, args: argparse.Namespace) -> Path:
    from training.config import load_config
    from training.train import train

    corpus = Path(args.corpus)
    cfg = load_config(args.recipe, [
        f"name=robust-{name}", f"out_dir={Path(args.work) / name}",
        f"init_from={args.init_from}", *encoder_overrides(args.init_from),
        "optim.lr=0.001", "optim.warmup_steps=150",
        f"optim.max_minutes={args.minutes}", f"data.train=[{corpus / 'cuts_train.jsonl.gz'}]",
        f"data.dev=[{corpus / 'cuts_dev.jsonl.gz'}]", *VARIANTS[name], *args.override])
    return train(cfg, progress=not args.no_progress)


def score(bundle_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Greedy and beam + LM WER / CER on the clean set and each corrupted set, and the
    embedding distance on each corrupted set."""
    from models.bundle import load
    from training.eval.embeddings import distance, pair
    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all, load_manifest

    bundle = load(bundle_path)
    lm = load(SHIPPED).lm  # the shipped LM, weight and bonus, for every row
    clean_path = Path(args.test or Path(args.corpus) / "cuts_test.jsonl.gz")
    clean = load_manifest(clean_path, args.limit)
    stem = clean_path.name.split(".")[0]  # cuts_test: its corrupted copies are cuts_test-K
    sets = {"clean": clean_path, **{k: Path(args.corrupt_dir) / f"{stem}-{k}.jsonl.gz"
                                    for k, _ in SETS}}
    out: dict[str, Any] = {}
    for key, path in sets.items():
        utts = clean if key == "clean" else load_manifest(path, args.limit)
        refs = [u.ref for u in utts]
        outs, _ = forward_all(bundle, utts, progress=not args.no_progress, desc=key)
        greedy, _ = decode_all(bundle, outs, decoder="greedy", beam_size=1)
        beam, _ = decode_all(bundle, outs, decoder="beam", beam_size=8, lm=lm)
        g, b = error_rates(refs, greedy), error_rates(refs, beam)
        out[key] = {"wer_greedy": round(g.wer, 4), "cer_greedy": round(g.cer, 4),
                    "wer_beam_lm": round(b.wer, 4), "cer_beam_lm": round(b.cer, 4),
                    "utterances": len(utts)}
        if key != "clean":
            out[key]["embedding_distance"] = round(
                distance(bundle, pair(clean, utts), progress=False)["relative_l2"], 4)
        print(f"robust: {bundle_path}: {key}: {json.dumps(out[key])}", flush=True)
    return out


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from models.bundle import load

    bundle_path = Path(args.init_from) if name == "shipped" else train_variant(name, args)
    prov = load(bundle_path).provenance
    return {"run": name, "overrides": [*VARIANTS[name], *(args.override if name != "shipped"
                                                          else [])],
            "core_minutes": 0 if name == "shipped" else args.minutes,
            "steps": 0 if name == "shipped" else int(prov.get("steps", 0)),
            "best_dev_wer": prov.get("best_dev_wer"), "bundle": str(bundle_path),
            "sets": score(bundle_path, args), "date": time.strftime("%Y-%m-%d")}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(result: dict[str, Any]) -> str:
    heads = ["clean", *[h for _, h in SETS]]
    keys = ["clean", *[k for k, _ in SETS]]
    lines = [f"Beam 8 + 3-gram WER % (greedy WER % in brackets); {result['minutes_per_run']:g} "
             "minutes per trained row, continued from the shipped model.", "",
             "| run | steps | " + " | ".join(heads) + " | embedding distance (10 dB / far-field) |",
             "|---|---|" + "---|" * len(heads) + "---|"]
    for r in result["runs"]:
        s = r["sets"]
        cells = [f"{_pct(s[k]['wer_beam_lm'])} ({_pct(s[k]['wer_greedy'])})" if k in s else "-"
                 for k in keys]
        dist = " / ".join(f"{s[k]['embedding_distance']:.3f}" if k in s else "-"
                          for k in ("noise10", "farfield20"))
        lines.append(f"| {r['run']} | {r['steps']} | " + " | ".join(cells) + f" | {dist} |")
    return "\n".join(lines) + "\n"


def merge(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Put `rows` into the table at --out (replacing rows of the same name), in variant order."""
    settings = {"minutes_per_run": args.minutes, "recipe": str(args.recipe),
                "init_from": str(args.init_from), "limit": args.limit,
                "test": str(args.test or "CORPUS/cuts_test.jsonl.gz")}
    with locked_table(args.out, settings) as old:
        names = {r["run"] for r in rows}
        kept = [r for r in (old or {}).get("runs", []) if r["run"] not in names]
        result = {**settings, "date": time.strftime("%Y-%m-%d"),
                  "runs": sorted(kept + rows, key=lambda r: list(VARIANTS).index(r["run"]))}
        write_report(args.out, result, markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.robust",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="chorus data synth output")
    p.add_argument("--corrupt-dir", type=Path, required=True,
                   help="chorus data corrupt output: cuts_test-{noise20,...}.jsonl.gz")
    p.add_argument("--only", required=True, help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--init-from", type=Path, default=SHIPPED)
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per row")
    p.add_argument("--limit", type=int, default=None, help="utterances per test set")
    p.add_argument("--test", type=Path, default=None,
                   help="clean held-out manifest (default: CORPUS/cuts_test.jsonl.gz)")
    p.add_argument("--work", type=Path, default=Path("runs/robust"))
    p.add_argument("--out", type=Path, default=Path("docs/results/robust"))
    p.add_argument("--override", action="append", default=[],
                   help="extra recipe override for every trained row")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    result = merge(args, [])
    for name in names:
        row = run_one(name, args)
        result = merge(args, [row])
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
