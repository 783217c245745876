"""Generalisation to a TTS engine never heard: train without one engine, test on it.

    python -m training.experiments.leave_one_engine_out --corpus data/synth --minutes 30 \
        --only none,pico,flite --out docs/results/leave-one-engine-out

Each run trains the recipe from scratch for the same wall-clock minutes on one core, on the
corpus's train split minus every utterance of one engine (`none`: all engines, the reference
row); its dev set drops that engine too, so model selection never hears it. Then the whole
held-out test split (voices and sentences never in training) is scored per engine, greedy and
beam + the shipped word 3-gram (weight and bonus tuned on the run's dev set, the small grid of
training.experiments.equal_compute). The table sets each engine's WER when it was left out
beside its WER in the `none` run, where only its voices were new: the gap is what an unheard
engine costs, the proxy for a human voice, which no engine here sounds like. Calls may run side
by side (one per core) into one table: rows merge under a file lock. Slow by design: a command,
not a test (a smoke test runs a few steps in CI).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from training.experiments import add_run_args, merge_runs
from training.experiments.equal_compute import tune_lm


def _other_engine(engine: str | None, cut: Any) -> bool:
    return (cut.supervisions[0].custom or {}).get("engine") != engine


def without_engine(manifest: Path, engine: str | None, out: Path) -> tuple[Path, int, int]:
    """The manifest minus `engine`'s cuts, written to `out` -> (path, kept, dropped)."""
    from lhotse import CutSet

    cuts = CutSet.from_file(manifest)
    kept = cuts.filter(partial(_other_engine, engine))
    out.parent.mkdir(parents=True, exist_ok=True)
    kept.to_file(out)
    n_kept, n_all = len(kept.to_eager()), len(cuts.to_eager())
    if n_kept == 0:
        raise SystemExit(f"{manifest}: nothing left without engine {engine!r}")
    return out, n_kept, n_all - n_kept


def run_one(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    from models.bundle import load
    from models.decoding import LmConfig, LmFusion
    from models.lm.arpa import ArpaLM
    from training.config import load_config
    from training.eval.metrics import breakdown, error_rates
    from training.eval.run import decode_all, forward_all, load_manifest
    from training.train import train

    corpus, work = Path(args.corpus), Path(args.work) / engine
    drop = None if engine == "none" else engine
    train_m, n_train, dropped = without_engine(corpus / "cuts_train.jsonl.gz", drop,
                                               work / "cuts_train.jsonl.gz")
    dev_m, _, _ = without_engine(corpus / "cuts_dev.jsonl.gz", drop, work / "cuts_dev.jsonl.gz")
    if drop is not None and dropped == 0:
        raise SystemExit(f"engine {engine!r} has no training utterances in {corpus}")
    cfg = load_config(args.recipe, [
        f"name=loeo-{engine}", f"out_dir={work}", f"optim.max_minutes={args.minutes}",
        f"data.train=[{train_m}]", f"data.dev=[{dev_m}]", *args.override])
    bundle = load(train(cfg, progress=not args.no_progress))
    lm = ArpaLM.load(args.lm)
    weight, bonus, _ = tune_lm(bundle, load_manifest(dev_m, args.dev_limit), lm)
    utts = load_manifest(args.test or corpus / "cuts_test.jsonl.gz", args.limit)
    refs, engines = [u.ref for u in utts], [u.engine for u in utts]
    outs, _ = forward_all(bundle, utts, progress=not args.no_progress, desc=f"loeo-{engine}")
    greedy, _ = decode_all(bundle, outs, decoder="greedy", beam_size=1, lm=None)
    beam, _ = decode_all(bundle, outs, decoder="beam", beam_size=8,
                         lm=LmFusion(lm, LmConfig(weight, bonus, 10.0)))

    def rates(hyps: list[str]) -> dict[str, dict[str, float]]:
        per = breakdown(refs, hyps, engines)
        per["all"] = error_rates(refs, hyps)
        return {k: {"wer": round(r.wer, 4), "cer": round(r.cer, 4)} for k, r in per.items()}

    return {"run": engine, "left_out": drop, "train_utterances": n_train,
            "dropped_utterances": dropped, "core_minutes": args.minutes,
            "steps": int(bundle.provenance.get("steps", 0)),
            "best_dev_wer": bundle.provenance.get("best_dev_wer"), "lm_weight": weight,
            "lm_bonus": bonus, "greedy": rates(greedy), "beam_lm": rates(beam),
            "test_utterances": len(utts), "date": time.strftime("%Y-%m-%d"),
            "bundle": str(work / "bundle"), "overrides": list(args.override)}


def heard(runs: dict[str, dict[str, Any]], engine: str, kind: str) -> list[dict[str, float]]:
    """`engine`'s test error rates in every run that trained on it (all but its own)."""
    return [r[kind][engine] for name, r in sorted(runs.items())
            if name != engine and engine in r[kind]]


def markdown(result: dict[str, Any]) -> str:
    """Each engine's WER / CER when left out beside its mean over the runs that heard it
    (every other run: `none` and the other engines' left-out runs), with their range: at a
    short budget the spread between runs is as large as the effect, and one reference run
    alone would hide it."""
    runs = {r["run"]: r for r in result["runs"]}
    ref = runs.get("none")
    lines = ["| engine left out | train utts | steps | its test WER / CER, greedy: left out | "
             "heard (mean of the other runs) | beam + LM: left out | heard (mean) | heard, "
             "beam + LM WER: range over runs | gap, beam + LM WER | runs | date |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(rates: dict[str, float] | None) -> str:
        return "-" if rates is None else f"{100 * rates['wer']:.1f} / {100 * rates['cer']:.1f}"

    def mean(rs: list[dict[str, float]]) -> dict[str, float] | None:
        if not rs:
            return None
        return {k: sum(r[k] for r in rs) / len(rs) for k in ("wer", "cer")}

    for name, r in sorted(runs.items()):
        if name == "none":
            continue
        g, b = heard(runs, name, "greedy"), heard(runs, name, "beam_lm")
        own = r["beam_lm"].get(name)
        mb = mean(b)
        span = f"{100 * min(x['wer'] for x in b):.1f}-{100 * max(x['wer'] for x in b):.1f}" \
            if b else "-"
        gap = f"{100 * (own['wer'] - mb['wer']):+.1f}" if own and mb else "-"
        lines.append(f"| {name} | {r['train_utterances']} | {r['steps']} | "
                     f"{cell(r['greedy'].get(name))} | {cell(mean(g))} | {cell(own)} | "
                     f"{cell(mb)} | {span} | {gap} | {len(b)} | {r['date']} |")
    if ref is not None:
        lines += ["", f"Reference `none` (all engines; {ref['steps']} steps): held-out WER / CER "
                  f"greedy {cell(ref['greedy']['all'])}, beam + LM {cell(ref['beam_lm']['all'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.leave_one_engine_out",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="",
                   help="comma-separated engines to leave out, `none` for the reference")
    p.add_argument("--render", action="store_true",
                   help="only write the table at --out again from its JSON (no training)")
    add_run_args(p, minutes=30.0, name="leave-one-engine-out")
    args = p.parse_args(argv)
    if args.render:
        print(markdown(merge_runs(args, [], markdown)))
        return 0
    names = [n for n in args.only.split(",") if n]
    if not names:
        raise SystemExit("--only: name at least one engine (or none)")
    for i, engine in enumerate(names, 1):
        print(f"leave_one_engine_out: [{i}/{len(names)}] {engine} ({args.minutes:g} min)",
              flush=True)
        row = run_one(engine, args)
        print(json.dumps(row), flush=True)
        result = merge_runs(args, [row], markdown)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
