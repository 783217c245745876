"""The active-learning curve: which utterances to label next, EGL vs random vs confidence.

    python -m training.experiments.active_learning --corpus data/synth --start 1000 \
        --budget 1000 --rounds 3 --seeds 0,1,2 --minutes 10 --out docs/results/active-learning

As in Huang et al. 2016: per seed, a random labelled start of `--start` training utterances
(the rest of the train split is the unlabelled pool) trains a model from scratch for
`--minutes`; then each round every method (`chorus select`'s egl, confidence, random) picks
`--budget` more from its own pool with its current model, and the model is trained on
everything labelled so far, warm-started from its previous round, for `--minutes` more. Each
model is scored greedy on the held-out test split (`--test-limit` utterances). The table gives
WER by labels per method (mean over seeds, min / max); the paper's claim to check: EGL reaches
random's final WER with <= 60 % of the labels. JSON + markdown + PNG. Slow by design (rounds x
methods x seeds training runs): a command, not a test (a smoke test runs a few steps in CI).

Warm-started variant (this machine cannot train from scratch to a useful WER in minutes):
`--init-from BUNDLE` starts every seed from a trained model instead of from scratch, with
`--pool M` a manifest that model never trained on (e.g. a corpus of new voices) and `--test` its
held-out split; `--start 0` makes the bundle itself round 0 (the paper's question in its
simplest form: a model exists, which utterances of the pool to label). `--pool-limit N` draws,
per seed, N pool utterances that every method then chooses from (EGL scores each of them once a
round). Each training run's seed is the curve's seed. `--replay M --replay-count N` adds, to
every round's training set, N utterances of M drawn once per seed (the corpus the bundle was
trained on): the paper retrains on everything labelled, and a warm start trained on the new
labels alone forgets what it knew.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments import (
    concat_manifests,
    greedy_wer,
    subset_manifest,
    train_on,
    with_seed,
    write_report,
)

METHODS = ("egl", "confidence", "random")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.bundle import load
    from training.eval.run import load_manifest
    from training.select import choose, score_pool

    corpus, work = Path(args.corpus), Path(args.work)
    train_m = args.pool or corpus / "cuts_train.jsonl.gz"
    every = load_manifest(train_m)
    dur = {u.id: u.duration for u in every}
    test = load_manifest(args.test or corpus / "cuts_test.jsonl.gz", args.test_limit)
    if args.start + args.budget * args.rounds > len(every):
        raise SystemExit(f"--start + --budget x --rounds = "
                         f"{args.start + args.budget * args.rounds} > the pool's {len(every)}")
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        ids = [u.id for u in every]
        random.Random(seed).shuffle(ids)
        start = set(ids[: args.start])
        drawn = set(ids[: args.start + args.pool_limit] if args.pool_limit else ids)
        pool_all = [u for u in every if u.id in drawn]  # this seed's start + pool
        seeded = with_seed(args, seed)
        replayed = replay_ids(args.replay, args.replay_count, seed)
        if replayed & dur.keys():
            raise SystemExit(f"--replay {args.replay} shares cut ids with the pool {train_m}: "
                             "replay the corpus the bundle was trained on, not the pool")
        base = work / f"s{seed}" / "r0"
        b0 = (train_on(seeded, round_manifest(train_m, start, base, args.replay, replayed), base,
                       args.init_from, f"al-{base.name}") if start else args.init_from)
        row0 = {"seed": seed, "round": 0, "labels": len(start),
                "hours": round(sum(dur[i] for i in start) / 3600, 3), "wer": greedy_wer(b0, test)}
        rows += [{**row0, "method": m} for m in args.methods]
        print(json.dumps(row0), flush=True)
        for method in args.methods:
            labelled, bundle = set(start), b0
            for r in range(1, args.rounds + 1):
                pool = [u for u in pool_all if u.id not in labelled]
                if not pool:
                    break  # everything is labelled
                scores = score_pool(load(bundle), pool, method=method, nbest=args.nbest,
                                    progress=False)
                labelled |= set(choose(method, [u.id for u in pool], scores,
                                       [u.duration for u in pool], min(args.budget, len(pool)),
                                       seed=seed + r))
                out = work / f"s{seed}" / f"{method}-r{r}"
                bundle = train_on(seeded, round_manifest(train_m, labelled, out, args.replay,
                                                         replayed), out, bundle, f"al-{out.name}")
                rows.append({"seed": seed, "round": r, "method": method, "labels": len(labelled),
                             "hours": round(sum(dur[i] for i in labelled) / 3600, 3),
                             "wer": greedy_wer(bundle, test)})
                print(json.dumps(rows[-1]), flush=True)
    return {"corpus": str(corpus), "pool": str(train_m), "pool_limit": args.pool_limit,
            "init_from": str(args.init_from) if args.init_from else None,
            "replay": str(args.replay) if args.replay else None,
            "replay_count": args.replay_count if args.replay else 0,
            "nbest": args.nbest, "recipe": str(args.recipe), "override": args.override,
            "methods": args.methods, "start": args.start, "budget": args.budget,
            "rounds": args.rounds, "minutes_per_round": args.minutes, "seeds": args.seeds,
            "test_utterances": len(test), "date": time.strftime("%Y-%m-%d"), "rows": rows}


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One curve from runs of the same settings on different seeds (calls side by side, or one
    after another): their rows together; runs of other settings or the same seed are refused."""
    keep = ("corpus", "pool", "pool_limit", "init_from", "replay", "replay_count", "nbest",
            "recipe", "override", "methods", "start", "budget", "rounds", "minutes_per_round",
            "test_utterances")
    first = results[0]
    for r in results[1:]:
        other = {k: (first.get(k), r.get(k)) for k in keep if first.get(k) != r.get(k)}
        if other:
            raise SystemExit(f"--merge: the runs differ in {other}")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--merge: a seed is in more than one run ({seeds})")
    return {**first, "seeds": seeds, "date": max(r["date"] for r in results),
            "rows": [row for r in results for row in r["rows"]]}


def replay_ids(manifest: Path | None, count: int, seed: int) -> set[str]:
    """`count` ids of `manifest` drawn with `seed` (none without a manifest)."""
    if manifest is None:
        return set()
    from lhotse import CutSet

    ids = sorted(CutSet.from_file(manifest).ids)
    return set(random.Random(seed).sample(ids, min(count, len(ids))))


def round_manifest(pool: Path, labelled: set[str], out: Path, replay: Path | None,
                   replayed: set[str]) -> Path:
    """A round's training manifest: the labelled cuts of `pool` (out/labelled.jsonl.gz), plus the
    `replayed` cuts of `replay` when there are any (then out/train.jsonl.gz holds both)."""
    mine = subset_manifest(pool, labelled, out / "labelled.jsonl.gz")
    if not replayed or replay is None:
        return mine
    return concat_manifests([(pool, labelled), (replay, replayed)], out / "train.jsonl.gz")


def summary(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per method, per round: labels, hours, WER mean / min / max over the seeds."""
    out: dict[str, list[dict[str, Any]]] = {}
    methods = sorted({r["method"] for r in result["rows"]})
    for m in methods:
        for k in range(result["rounds"] + 1):
            got = [r for r in result["rows"] if r["method"] == m and r["round"] == k]
            if got:
                w = [r["wer"] for r in got]
                out.setdefault(m, []).append({
                    "round": k, "labels": int(np.mean([r["labels"] for r in got])),
                    "hours": round(float(np.mean([r["hours"] for r in got])), 3),
                    "wer": round(float(np.mean(w)), 4), "min": min(w), "max": max(w)})
    return out


def markdown(result: dict[str, Any]) -> str:
    s = summary(result)
    lines = [f"Start {result['start']} utterances, +{result['budget']} per round, "
             + (f"{result['minutes_per_round']:g} min per round" if result["minutes_per_round"]
                else "training steps per round as the command's overrides")
             + f", seeds {result['seeds']}, greedy "
             f"WER on {result['test_utterances']} held-out utterances (mean, min / max over "
             f"the seeds) at the labelled utterances (their mean audio hours).", "",
             "| method | " + " | ".join(f"round {k}" for k in range(result["rounds"] + 1)) + " |",
             "|---|" + "---|" * (result["rounds"] + 1)]
    for m, pts in s.items():
        cells = [f"{100 * p['wer']:.1f} ({100 * p['min']:.1f} / {100 * p['max']:.1f}) at "
                 f"{p['labels']} ({p['hours']:g} h)" for p in pts]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, pts in summary(result).items():
        ax.errorbar([p["labels"] for p in pts], [100 * p["wer"] for p in pts],
                    yerr=[[100 * (p["wer"] - p["min"]) for p in pts],
                          [100 * (p["max"] - p["wer"]) for p in pts]], marker="o", label=m,
                    capsize=3)
    ax.set_xlabel("labelled utterances")
    ax.set_ylabel("held-out WER % (greedy)")
    ax.set_title("Active learning: EGL vs confidence vs random")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.active_learning",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, help="chorus data synth output")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="no training: one report from these runs' JSON (other seeds)")
    p.add_argument("--nbest", type=int, default=8, help="hypotheses EGL's expectation runs over")
    p.add_argument("--start", type=int, default=1000, help="labelled utterances at round 0")
    p.add_argument("--budget", type=int, default=1000, help="utterances added per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per round")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--pool", type=Path, default=None,
                   help="the manifest to label from (default: the corpus's train split)")
    p.add_argument("--pool-limit", type=int, default=0,
                   help="per seed, choose from N random pool utterances only (0: all)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="warm-start round 0 from this bundle (with --start 0: round 0 is it)")
    p.add_argument("--replay", type=Path, default=None,
                   help="with --replay-count: a manifest mixed into every round's training")
    p.add_argument("--replay-count", type=int, default=0)
    p.add_argument("--test", type=Path, default=None)
    p.add_argument("--test-limit", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path("runs/active-learning"))
    p.add_argument("--out", type=Path, default=Path("docs/results/active-learning"))
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    bad = [m for m in args.methods if m not in METHODS]
    least = 0 if args.init_from else 1  # round 0 may be the --init-from bundle itself
    if (args.replay is None) != (args.replay_count < 1):
        raise SystemExit("--replay M and --replay-count N >= 1 go together")
    if (bad or args.start < least or args.budget < 1 or args.rounds < 1 or args.nbest < 1
            or args.pool_limit < 0 or 0 < args.pool_limit < args.budget * args.rounds):
        raise SystemExit(f"--methods from {METHODS} (got {bad or args.methods}); --budget, "
                         f"--rounds and --nbest >= 1, --start >= 1 (0 with --init-from), "
                         f"--pool-limit 0 (all) or >= budget x rounds")
    if args.merge:
        result = merge([json.loads(Path(j).read_text()) for j in args.merge])
    elif args.corpus is None:
        raise SystemExit("--corpus is needed (or --merge RUN.json ...)")
    else:
        result = run(args)
    write_report(args.out, result, markdown(result))
    plot(result, args.out.with_suffix(".png"))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
