"""Nemotron-style filter rounds at equal size: unfiltered vs filtered vs round 2.

    python -m training.experiments.refine_rounds --corpus data/synth --keep 0.6 --minutes 30 \
        --out docs/results/refine-rounds

The candidates are the corpus's train split (what `chorus data synth` generated: text x voice
x the engine's rendering). Rows, each trained from scratch with the recipe for `--minutes` on
one core and scored greedy on the held-out test split:
- `unfiltered`: a seeded random `keep` fraction of the candidates;
- `filtered`: `chorus data refine` with the `--scorer` model (default: the shipped bundle):
  signal checks, then the lowest round-trip CER, to the same size;
- `round2`: the candidates re-scored by the `filtered` row's own model (weak-to-strong: the
  model the filtered data made picks the next set), to the same size.
The shipped scorer was trained on these very utterances, so its round-trip CER says which ones
it could not fit even after training on them, where text and audio most likely disagree; the
round-2 model has seen only round 1's set, which favours keeping it (the overlap is reported).
What each filter removed (by reason, engine, voice, domain, with examples) is in the report.
Warm-started variant: `--init-from B` fine-tunes every row from bundle B (scored as row `init`),
with `--pool M` candidates B never trained on (e.g. a corpus of new voices) and `--test` their
held-out split: then the scorer's round-trip CER is what the Nemotron recipe means, a model
judging data it has not seen.
Slow by design (three training runs): a command, not a test (a smoke test runs in CI).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from training.experiments import greedy_wer, subset_manifest, train_on, write_report

ROWS = ("unfiltered", "filtered", "round2")


def refine(scorer: Path, pool: list[Any], keep: float) -> tuple[list[str], dict[str, Any]]:
    from models.bundle import load
    from training.refine import RefineConfig, filter_pool, report, score_pool

    bundle = load(scorer)
    cfg = RefineConfig(max_cer=float("inf"), keep=keep)  # equal sizes: rank, no CER threshold
    cands = score_pool(bundle, pool, bundle.lm.lm if bundle.lm is not None else None,
                       progress=False)
    kept, removed = filter_pool(cands, cfg)
    rep = report(cands, kept, removed, cfg)
    rep.pop("scores")  # per utterance: too long for the table's JSON
    return kept, rep


def run(args: argparse.Namespace) -> dict[str, Any]:
    from training.eval.run import load_manifest

    corpus, work = Path(args.corpus), Path(args.work)
    train_m = args.pool or corpus / "cuts_train.jsonl.gz"
    pool = load_manifest(train_m)
    if args.pool_limit:  # a seeded draw: a manifest in engine or voice order stays mixed
        pool = random.Random(args.seed).sample(pool, min(args.pool_limit, len(pool)))
    dur = {u.id: u.duration for u in pool}
    test = load_manifest(args.test or corpus / "cuts_test.jsonl.gz", args.test_limit)
    rows: list[dict[str, Any]] = []
    if args.init_from:
        rows.append({"run": "init", "utterances": 0, "hours": 0.0, "overlap_with_filtered": 0.0,
                     "wer": greedy_wer(args.init_from, test)})
    kept_r1, rep_r1 = refine(args.scorer, pool, args.keep)
    ids = [u.id for u in pool]
    random.Random(args.seed).shuffle(ids)
    sets: dict[str, list[str]] = {"unfiltered": ids[: len(kept_r1)], "filtered": kept_r1}
    reports: dict[str, Any] = {"filtered": rep_r1}
    bundles: dict[str, Path] = {}
    for name in ROWS:
        if name == "round2":
            sets[name], reports[name] = refine(bundles["filtered"], pool, args.keep)
        chosen = set(sets[name])
        if not chosen:
            raise SystemExit(f"refine rounds: the {name} row has no utterances (pool "
                             f"{len(pool)}, keep {args.keep})")
        out = work / name
        bundle = train_on(args, subset_manifest(train_m, chosen, out / "train.jsonl.gz"), out,
                          args.init_from, f"refine-{name}")
        bundles[name] = bundle
        rows.append({"run": name, "utterances": len(chosen),
                     "hours": round(sum(dur[i] for i in chosen) / 3600, 3),
                     "overlap_with_filtered": round(len(chosen & set(kept_r1)) / len(chosen), 4),
                     "wer": greedy_wer(bundle, test)})
        print(json.dumps(rows[-1]), flush=True)
    return {"corpus": str(corpus), "pool_manifest": str(train_m),
            "init_from": str(args.init_from) if args.init_from else None,
            "scorer": str(args.scorer), "keep": args.keep,
            "pool": len(pool), "minutes_per_run": args.minutes, "seed": args.seed,
            "test_utterances": len(test), "date": time.strftime("%Y-%m-%d"), "rows": rows,
            "reports": reports}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['pool']} candidates, keep {result['keep']:g}, "
             + (f"{result['minutes_per_run']:g} min per run " if result["minutes_per_run"]
                else "training steps per run as the command's overrides, ")
             + f"{'from ' + result['init_from'] if result.get('init_from') else 'from scratch'}, "
             f"greedy WER on "
             f"{result['test_utterances']} held-out utterances; scorer {result['scorer']}.", "",
             "| run | utterances | hours | overlap with filtered | test WER % |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['utterances']} | {r['hours']} | "
              f"{100 * r['overlap_with_filtered']:.1f} % | {100 * r['wer']:.1f} |"
              for r in result["rows"]]
    for name, rep in result["reports"].items():
        lines += ["", f"What `{name}` removed: " + ", ".join(
            f"{k} {v}" for k, v in sorted(rep["reasons"].items())), "",
            "| engine | pool | removed | fraction |", "|---|---|---|---|"]
        lines += [f"| {g} | {v['pool']} | {v['removed']} | {v['fraction']:.1%} |"
                  for g, v in rep["by_engine"].items()]
        lines += ["", "| domain | pool | removed | fraction |", "|---|---|---|---|"]
        lines += [f"| {g} | {v['pool']} | {v['removed']} | {v['fraction']:.1%} |"
                  for g, v in rep["by_domain"].items()]
        lines += ["", "| removed (worst CER) | engine / voice / domain | CER | text | heard |",
                  "|---|---|---|---|---|"]
        lines += [f"| {e['id']} | {e['engine']} / {e['voice']} / {e['domain']} | {e['cer']} | "
                  f"{e['ref']} | {e['hyp']} |" for e in rep["examples"][:5]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.refine_rounds",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="chorus data synth output")
    p.add_argument("--keep", type=float, default=0.6, help="fraction of the candidates per row")
    p.add_argument("--scorer", type=Path, default=Path("models/pretrained/default"))
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per row")
    p.add_argument("--seed", type=int, default=0, help="the unfiltered row's random subset")
    p.add_argument("--pool", type=Path, default=None,
                   help="the candidates' manifest (default: the corpus's train split)")
    p.add_argument("--pool-limit", type=int, default=None,
                   help="N candidates drawn at random (--seed) from the pool")
    p.add_argument("--init-from", type=Path, default=None,
                   help="fine-tune every row from this bundle (default: from scratch)")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--test", type=Path, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--work", type=Path, default=Path("runs/refine-rounds"))
    p.add_argument("--out", type=Path, default=Path("docs/results/refine-rounds"))
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.keep < 1:
        raise SystemExit(f"--keep must be a fraction in (0, 1), got {args.keep}")
    if args.pool_limit is not None and args.pool_limit < 1:
        raise SystemExit(f"--pool-limit must be >= 1 candidate, got {args.pool_limit}")
    result = run(args)
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
