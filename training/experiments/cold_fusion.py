"""Cold fusion's domain-transfer study (Sriram et al. 2017, sections 4.3-4.4), on the corpus.

    python -m training.experiments.cold_fusion --corpus data/synth --work runs/cold-fusion \
        --out docs/results/cold-fusion --only data,lm-source,lm-target,baseline,cold,...

Source domain: free text (the corpus's `fortunes`); target domain: the template domains people
say to a device (addresses, commands, dates, money, numbers, times). Steps (`--only`, any order
the files allow; two calls may run side by side, one per core; rows merge under a file lock):
- `data`: source / target manifests of each split; the LM texts (train split only: the corpus
  text pool's fortunes; template sentences of the target domains); a word 3-gram of each;
- `lm-source`, `lm-target`: a character LSTM LM of each text (`chorus lm train --units char`);
- `baseline`: an RNN-T (pruned loss) on the source train split only; `cold`: the same with cold
  fusion of the frozen source LM. Both start from the shipped model's encoder (which heard every
  domain's audio: what transfers here is the label side, the predictor's implicit LM, which is
  what cold fusion is about) and train for `--minutes` each;
- `swap`: the cold model with the target LM swapped in, no training;
- `ft-baseline-P`, `ft-cold-P` (P = 1, 5, 10): fine-tuned for `--ft-minutes` on P % of the
  target train split (dev: the target dev split), the cold model with the target LM swapped in.
Every training step scores its model at once: greedy WER on both test splits, and on the target
test split beam search alone and with shallow fusion of each word 3-gram (weight and bonus tuned
on target dev utterances). Slow by design: a command, not a test (a smoke test runs in CI).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from training.experiments import SHIPPED_LM, encoder_overrides, merge_runs, subset_manifest

SOURCE = ("fortunes",)
TARGET = ("addresses", "commands", "dates", "money", "numbers", "times")
FRACTIONS = (1, 5, 10)
BEAM = 4
LM_GRID = ((0.3, 1.0), (0.3, 2.0), (0.6, 1.0), (0.6, 2.0))  # (weight, word bonus)
TRAIN_STEPS = ("baseline", "cold", *(f"ft-{m}-{p}" for m in ("baseline", "cold")
                                     for p in FRACTIONS))
STEPS = ("data", "lm-source", "lm-target", *TRAIN_STEPS, "swap", "rescore", "render")


def paths(work: Path) -> dict[str, Path]:
    d = work / "data"
    out = {f"{dom}_{split}": d / f"{dom}_{split}.jsonl.gz"
           for dom in ("source", "target") for split in ("train", "dev", "test")}
    out.update({f"target_train_{p}": d / f"target_train_{p}.jsonl.gz" for p in FRACTIONS})
    out.update({f"{dom}_text": d / f"{dom}.txt" for dom in ("source", "target")})
    out.update({f"{dom}_arpa": d / f"{dom}.arpa.gz" for dom in ("source", "target")})
    out.update({f"lm_{dom}": work / "lm" / dom for dom in ("source", "target")})
    return out


def make_data(args: argparse.Namespace) -> dict[str, Any]:
    """Domain manifests, fine-tuning subsets (nested: 1 % within 5 % within 10 %), LM texts."""
    from lhotse import CutSet

    from models.lm.arpa import write_arpa
    from training.data.synth.split import text_split
    from training.data.text.sources import fortune_sentences
    from training.data.text.templates import TEMPLATES
    from training.lm.ngram import estimate

    p = paths(args.work)
    counts: dict[str, int] = {}
    for split in ("train", "dev", "test"):
        cuts = CutSet.from_file(args.corpus / f"cuts_{split}.jsonl.gz").to_eager()
        for dom, names in (("source", SOURCE), ("target", TARGET)):
            ids = {c.id for c in cuts if (c.supervisions[0].custom or {}).get("domain") in names}
            subset_manifest(args.corpus / f"cuts_{split}.jsonl.gz", ids, p[f"{dom}_{split}"])
            counts[f"{dom}_{split}"] = len(ids)
    target_ids = sorted(c.id for c in CutSet.from_file(p["target_train"]))
    random.Random(f"cold-fusion-{args.seed}").shuffle(target_ids)
    for frac in FRACTIONS:
        n = max(1, round(len(target_ids) * frac / 100))
        subset_manifest(p["target_train"], set(target_ids[:n]), p[f"target_train_{frac}"])
        counts[f"target_train_{frac}"] = n
    rng = random.Random(f"cold-fusion-text-{args.seed}")
    texts = {"source": [s for s in fortune_sentences() if text_split(s) == "train"],
             "target": []}
    for name in TARGET:
        if name in TEMPLATES:  # money, numbers, ... are template domains
            for _ in range(args.template_sentences):
                text, _ = TEMPLATES[name](rng)
                if text_split(text) == "train":
                    texts["target"].append(text)
    for dom, sentences in texts.items():
        p[f"{dom}_text"].write_text("\n".join(sentences) + "\n")
        write_arpa(p[f"{dom}_arpa"], estimate(s.split() for s in sentences))
        counts[f"{dom}_text_sentences"] = len(sentences)
    return counts


def train_lm(dom: str, args: argparse.Namespace) -> dict[str, Any]:
    from training.eval.run import load_manifest
    from training.lm.neural import NeuralTrainConfig, examples, perplexity, train

    p = paths(args.work)
    sentences = [line.split() for line in p[f"{dom}_text"].read_text().splitlines() if line]
    cfg = NeuralTrainConfig(type="lstm", units="char", embed=args.lm_embed,
                            hidden=args.lm_hidden, minutes=args.lm_minutes, seed=args.seed)
    dev: list[tuple[list[str], list[str]]] = [([], u.ref.split())
                                              for u in load_manifest(p[f"{dom}_dev"])]
    summary = train(cfg, examples([[s] for s in sentences]), dev, p[f"lm_{dom}"],
                    progress=not args.no_progress)
    from models.lm.neural import load

    lm = load(p[f"lm_{dom}"])
    ppl = {f"{d}_test": perplexity(lm, [([], u.ref.split()) for u in load_manifest(p[f"{d}_test"])])
           for d in ("source", "target")}
    return {"run": f"lm-{dom}", "kind": "lm", "steps": summary["steps"],
            "params": summary["params"], "char_perplexity": ppl,
            "date": time.strftime("%Y-%m-%d")}


def train_model(step: str, args: argparse.Namespace) -> Path:
    from training.config import load_config
    from training.train import train

    p = paths(args.work)
    parts = step.split("-")
    kind = parts[1] if parts[0] == "ft" else parts[0]  # baseline | cold
    common = ["head.type=rnnt", "head.rnnt_loss=pruned"]
    if parts[0] == "ft":
        frac = parts[2]
        init = args.work / kind / "bundle"
        over = [f"init_from={init}", *encoder_overrides(init), "init_scope=all",
                f"optim.max_minutes={args.ft_minutes}",
                f"data.train=[{p[f'target_train_{frac}']}]", f"data.dev=[{p['target_dev']}]",
                f"optim.lr={args.ft_lr}", "optim.warmup_steps=30",
                f"optim.val_every_steps={args.ft_val_every}"]
        if kind == "cold":
            over.append(f"head.cold_fusion_lm={p['lm_target']}")
    else:
        over = [f"init_from={args.init_from}", *encoder_overrides(args.init_from),
                "init_scope=encoder",
                f"optim.max_minutes={args.minutes}", f"data.train=[{p['source_train']}]",
                f"data.dev=[{p['source_dev']}]", f"optim.lr={args.lr}", "optim.warmup_steps=150"]
        if kind == "cold":
            over.append(f"head.cold_fusion_lm={p['lm_source']}")
    cfg = load_config(args.recipe, [f"name=cold-fusion-{step}", f"out_dir={args.work / step}",
                                    *common, *over, *args.override])
    return train(cfg, progress=not args.no_progress)


def swap_bundle(args: argparse.Namespace) -> Path:
    """The cold model with the target LM's weights in place of the source LM's (no training)."""
    from models.bundle import load, save
    from models.lm.neural import load as load_lm

    p = paths(args.work)
    b = load(args.work / "cold" / "bundle")
    fusion = getattr(b.model.head, "fusion", None)
    if fusion is None:
        raise SystemExit(f"{b.path}: not a cold-fused bundle")
    fusion.load_lm(load_lm(p["lm_target"]))
    return save(args.work / "swap" / "bundle", b.model, features=b.features,
                tokenizer=b.tokenizer, decoding=b.decoding,
                provenance={**b.provenance, "cold_fusion_lm_swapped_in": str(p["lm_target"])})


def score(bundle_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from models.bundle import load
    from models.decoding import LmConfig, LmFusion
    from models.lm.arpa import ArpaLM
    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all, load_manifest

    p = paths(args.work)
    bundle = load(bundle_path)
    out: dict[str, Any] = {"steps": int(bundle.provenance.get("steps", 0)),
                           "best_dev_wer": bundle.provenance.get("best_dev_wer"),
                           "params": bundle.model.num_parameters()}
    sets = {d: load_manifest(p[f"{d}_test"], args.limit) for d in ("source", "target")}
    encs = {d: forward_all(bundle, u, progress=False)[0] for d, u in sets.items()}

    def wer(d: str, decoder: str, lm: Any = None, utts: Any = None, outs: Any = None) -> float:
        utts, outs = utts or sets[d], outs or encs[d]
        hyps, _ = decode_all(bundle, outs, decoder=decoder, beam_size=BEAM, lm=lm)
        return round(error_rates([u.ref for u in utts], hyps).wer, 4)

    for d in sets:
        out[f"{d}_greedy"] = wer(d, "greedy")
    out["target_beam"] = wer("target", "beam")
    dev = load_manifest(p["target_dev"], args.dev_limit)
    dev_outs, _ = forward_all(bundle, dev, progress=False)
    for name in ("source", "target"):
        lm = ArpaLM.load(p[f"{name}_arpa"])
        best = min(LM_GRID, key=lambda wb: wer("target", "beam",
                                               LmFusion(lm, LmConfig(wb[0], wb[1], 10.0)),
                                               dev, dev_outs))
        out[f"target_beam_{name}_lm"] = wer("target", "beam",
                                            LmFusion(lm, LmConfig(best[0], best[1], 10.0)))
        out[f"{name}_lm_weight_bonus"] = list(best)
    return out


def rescore_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every model row of the table at --out scored again from its bundle under --work, with
    today's decoders (training curves kept): how a decoder fix reaches the table without
    training anything again."""
    table = Path(f"{args.out}.json")
    if not table.is_file():
        raise SystemExit(f"rescore: no table at {table}")
    rows = []
    for old in json.loads(table.read_text())["runs"]:
        bundle = args.work / old["run"] / "bundle"
        if old.get("kind") != "asr" or not bundle.is_dir():
            continue
        row = {**old, **score(bundle, args), "date": time.strftime("%Y-%m-%d"),
               "bundle": str(bundle), "rescored": True}
        print({k: v for k, v in row.items() if k != "curve"}, flush=True)
        rows.append(row)
    return rows


def run_step(step: str, args: argparse.Namespace) -> dict[str, Any] | None:
    if step == "data":
        print(make_data(args), flush=True)
        return None
    if step == "render":
        render(args)
        return None
    if step.startswith("lm-"):
        return train_lm(step.removeprefix("lm-"), args)
    bundle = swap_bundle(args) if step == "swap" else train_model(step, args)
    row = {"run": step, "kind": "asr", **score(bundle, args), "date": time.strftime("%Y-%m-%d"),
           "bundle": str(bundle), "curve": curve(args.work / step)}
    print(row, flush=True)
    return row


def curve(run_dir: Path) -> dict[str, list[list[float]]]:
    """A run's logged training loss (mean per 100 steps) and dev WER by step (metrics.csv of its
    last Lightning version; empty for a run that trained nothing)."""
    import csv

    logs = sorted((run_dir / "logs").glob("version_*/metrics.csv"),
                  key=lambda q: int(q.parent.name.split("_")[1]))
    if not logs:
        return {"train_loss": [], "dev_wer": []}
    rows = list(csv.DictReader(logs[-1].open()))
    dev = [[int(r["step"]), round(float(r["dev_wer"]), 4)] for r in rows if r.get("dev_wer")]
    bins: dict[int, list[float]] = {}
    for r in rows:
        if r.get("train_loss"):
            bins.setdefault(int(r["step"]) // 100, []).append(float(r["train_loss"]))
    loss = [[100 * k + 50, round(sum(v) / len(v), 4)] for k, v in sorted(bins.items())]
    return {"train_loss": loss, "dev_wer": dev}


def render(args: argparse.Namespace) -> None:
    """The table again from its JSON, with each row's training curve read from its run."""
    import json

    from training.experiments import write_report

    result = json.loads(args.out.with_suffix(".json").read_text())
    for r in result["runs"]:
        if r.get("kind") == "asr" and "curve" not in r and (args.work / r["run"]).is_dir():
            r["curve"] = curve(args.work / r["run"])
    write_report(args.out, result, markdown(result))


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(result: dict[str, Any]) -> str:
    runs = {r["run"]: r for r in result["runs"]}
    lines = ["| model | LM in the model | target labels | steps | source test greedy | "
             "target test greedy | target beam | + shallow source 3-gram | "
             "+ shallow target 3-gram |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("baseline", "cold", "swap", *(f"ft-{m}-{p}" for p in FRACTIONS
                                               for m in ("baseline", "cold"))):
        r = runs.get(name)
        if r is None:
            continue
        kind = "cold" if "cold" in name or name == "swap" else "baseline"
        lm = "-" if kind == "baseline" else ("source" if name == "cold" else "target")
        labels = f"{name.rsplit('-', 1)[1]} %" if name.startswith("ft-") else "0"
        lines.append(f"| {kind} | {lm} | {labels} | {r['steps']} | {_pct(r['source_greedy'])} | "
                     f"{_pct(r['target_greedy'])} | {_pct(r['target_beam'])} | "
                     f"{_pct(r['target_beam_source_lm'])} | {_pct(r['target_beam_target_lm'])} |")
    lms = [r for r in result["runs"] if r.get("kind") == "lm"]
    if lms:
        lines += ["", "| character LM | params | steps | perplexity per character: source test | "
                  "target test |", "|---|---|---|---|---|"]
        for r in lms:
            ppl = r["char_perplexity"]
            lines.append(f"| {r['run']} | {r['params']} | {r['steps']} | "
                         f"{ppl['source_test']['perplexity']} | {ppl['target_test']['perplexity']} |")
    src = [runs[n] for n in ("baseline", "cold") if n in runs and runs[n].get("curve")]
    if src:  # convergence: the paper's first claim
        every = 500  # the recipe's validation interval: rows at its multiples, then each final
        steps = sorted({s for r in src for s, _ in r["curve"]["dev_wer"] if (s + 1) % every == 0})
        lines += ["", "| source training: step | " + " | ".join(
            f"{r['run']} dev WER | {r['run']} train loss" for r in src) + " |",
                  "|---|" + "---|---|" * len(src)]
        for step in [*steps, None]:
            cells = []
            for r in src:
                dev = {int(k): v for k, v in r["curve"]["dev_wer"]}
                at = step if step is not None else max(dev, default=0)
                near = [v for k, v in r["curve"]["train_loss"] if at - 100 < k - 50 <= at]
                wer = _pct(dev.get(at)) + (f" (step {at})" if step is None else "")
                cells += [wer, f"{near[-1]:.3f}" if near else "-"]
            lines.append(f"| {step if step is not None else 'final'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--only", required=True, help=f"comma-separated steps of {STEPS}")
    ap.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    ap.add_argument("--init-from", type=Path, default=SHIPPED_LM.parent.parent)
    ap.add_argument("--minutes", type=float, default=40.0, help="source training per model")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ft-minutes", type=float, default=8.0, help="fine-tuning per model")
    ap.add_argument("--ft-lr", type=float, default=5e-4)
    ap.add_argument("--ft-val-every", type=int, default=100)
    ap.add_argument("--lm-minutes", type=float, default=6.0)
    ap.add_argument("--lm-embed", type=int, default=64)
    ap.add_argument("--lm-hidden", type=int, default=256)
    ap.add_argument("--template-sentences", type=int, default=20000)
    ap.add_argument("--limit", type=int, default=None, help="test utterances per domain")
    ap.add_argument("--dev-limit", type=int, default=100, help="target dev utterances (LM tuning)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/cold-fusion"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/cold-fusion"))
    ap.add_argument("--override", action="append", default=[])
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    steps = [s for s in args.only.split(",") if s]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise SystemExit(f"--only: unknown steps {bad}; steps are {STEPS}")
    settings = argparse.Namespace(out=args.out, minutes=args.minutes, recipe=args.recipe,
                                  lm=f"ft {args.ft_minutes} min", test="source/target test",
                                  limit=args.limit)
    for step in steps:  # each row lands in the table as soon as it is made: a stopped chain
        if step == "rescore":  # keeps the rows it finished
            for rescored in rescore_rows(args):
                merge_runs(settings, [rescored], markdown)
            continue
        row = run_step(step, args)
        if row is not None:
            merge_runs(settings, [row], markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
