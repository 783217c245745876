"""One-shot GPU training on a lent device machine: pack here, train there, bring the bundle back.

A lent GPU machine (docs/training.md: an H200, at most 10 minutes a command and about 15 in
all, 64 MiB carried per call with the working tree, 8 files of <= 16 MiB back, no TTS engines,
no package index, no Lhotse or audio libraries) gets the corpus as packed int8 features
(training.data.packed) and trains from them:

    python -m training.gpu_oneshot prepare --corpus data/synth --carry .gpu        # here
    # device run, carry [".gpu"], from the repository root there:
    python3 -m training.gpu_oneshot run --carry .gpu --out "$OUT" --minutes 8      # there
    python -m training.gpu_oneshot fetch --from FILES_AT --out runs/gpu/bundle       # here

`prepare` writes the packs (a seeded random subset of the train split that fits the byte
budget, the first dev utterances) and job.json (recipe and overrides); `run` trains with
accelerator=gpu, bf16 autocast, fused AdamW and parallel loaders, and writes the bundle's files
to OUT, the weights split into parts small enough to come back; `fetch` joins them and checks
that the bundle loads. `run --accelerator cpu` is the same path on a CPU (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

PART_BYTES = 15 * 2**20  # each file back must stay under 16 MiB
BACK = ("bundle.json", "tokens.txt", "tokens.model", "summary.json", "metrics.csv")
MAX_PARTS = 8 - len(BACK)  # 8 files come back at most


def prepare(corpus: Path, carry: Path, *, budget_mib: float, dev_utts: int, recipe: Path,
            overrides: list[str], seed: int = 0, progress: bool = True) -> dict[str, Any]:
    from lhotse import CutSet

    from models.features import FbankConfig
    from training.config import load_config
    from training.data.packed import pack

    cfg = load_config(recipe, overrides)  # fails here, not there, on a bad override
    feats = FbankConfig(num_mel_bins=cfg.model.num_mel_bins)
    carry.mkdir(parents=True, exist_ok=True)
    dev = pack(CutSet.from_file(corpus / "cuts_dev.jsonl.gz").subset(first=dev_utts),
               carry / "dev.npz", feats, progress=progress)
    left = int(budget_mib * 2**20) - dev["bytes"]
    # int8 frames compress about 1.3x: aim the raw frames at the budget, then check the file
    train = pack(CutSet.from_file(corpus / "cuts_train.jsonl.gz"), carry / "train.npz", feats,
                 max_bytes=int(left * 1.25), seed=seed, progress=progress)
    if train["bytes"] > left:
        train = pack(CutSet.from_file(corpus / "cuts_train.jsonl.gz"), carry / "train.npz",
                     feats, max_bytes=int(left * 1.25 * left / train["bytes"]), seed=seed,
                     progress=progress)
    job = {"recipe": str(recipe), "overrides": overrides, "train": train, "dev": dev}
    (carry / "job.json").write_text(json.dumps(job, indent=1) + "\n")
    return job


def run(carry: Path, out: Path, *, minutes: float, accelerator: str, max_steps: int | None,
        workers: int, progress: bool = True) -> Path:
    from training.config import load_config
    from training.train import train

    job = json.loads((carry / "job.json").read_text())
    gpu = accelerator in ("gpu", "cuda")
    work = Path("/tmp/chorus-oneshot") if gpu else out / "work"
    overrides = [*job["overrides"], f"data.train=[{carry / 'train.npz'}]",
                 f"data.dev=[{carry / 'dev.npz'}]", f"out_dir={work}", f"accelerator={accelerator}",
                 f"precision={'bf16-mixed' if gpu else '32-true'}", f"data.num_workers={workers}",
                 "devices=1"]
    overrides += ([f"optim.max_steps={max_steps}", "optim.max_minutes=0"] if max_steps
                  else [f"optim.max_minutes={minutes}"])
    bundle = train(load_config(job["recipe"], overrides), progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    for name in BACK[:4]:
        src = (bundle / name) if name != "summary.json" else work / name
        if src.is_file():
            shutil.copyfile(src, out / name)
    metrics = sorted((work / "logs").glob("version_*/metrics.csv"))
    if metrics:
        shutil.copyfile(metrics[-1], out / "metrics.csv")
    weights = (bundle / "model.safetensors").read_bytes()
    parts = [weights[i: i + PART_BYTES] for i in range(0, len(weights), PART_BYTES)]
    if len(parts) > MAX_PARTS:
        raise SystemExit(f"the weights ({len(weights) / 2**20:.0f} MiB) need {len(parts)} parts; "
                         f"at most {MAX_PARTS} come back: train a smaller model")
    for i, part in enumerate(parts):
        (out / f"model.safetensors.part{i}").write_bytes(part)
    return out


def fetch(src: Path, out: Path) -> Path:
    from models.bundle import WEIGHTS, load

    parts = sorted(src.glob("model.safetensors.part*"), key=lambda p: int(p.suffix[5:]))
    if not parts or not (src / "bundle.json").is_file():
        raise SystemExit(f"{src}: no bundle.json or weight parts (is this a run's files_at?)")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / WEIGHTS, "wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    for name in BACK:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    load(out)  # the joined bundle must load
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.gpu_oneshot",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="here: pack the corpus and the job into --carry")
    a.add_argument("--corpus", type=Path, required=True)
    a.add_argument("--carry", type=Path, default=Path(".gpu"))
    a.add_argument("--budget-mib", type=float, default=44.0,
                   help="bytes for both packs (64 MiB a call, less the working tree)")
    a.add_argument("--dev-utts", type=int, default=200)
    a.add_argument("--recipe", type=Path, default=Path("training/recipes/gpu-oneshot.yaml"))
    a.add_argument("--override", action="append", default=[])
    a.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("run", help="there: train from the carried packs, write the bundle to --out")
    r.add_argument("--carry", type=Path, default=Path(".gpu"))
    r.add_argument("--out", type=Path, required=True, help="the device's $OUT")
    r.add_argument("--minutes", type=float, default=8.0)
    r.add_argument("--accelerator", default="gpu")
    r.add_argument("--max-steps", type=int, default=None, help="instead of --minutes (tests)")
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--no-progress", action="store_true")
    f = sub.add_parser("fetch", help="here: join the files that came back into a bundle")
    f.add_argument("--from", dest="src", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        job = prepare(args.corpus, args.carry, budget_mib=args.budget_mib, dev_utts=args.dev_utts,
                      recipe=args.recipe, overrides=args.override, progress=not args.no_progress)
        print(json.dumps(job, indent=1))
        print(f"next (device run, carry [{str(args.carry)!r}]): python3 -m training.gpu_oneshot "
              f"run --carry {args.carry} --out \"$OUT\" --minutes 8", file=sys.stderr)
    elif args.cmd == "run":
        print(run(args.carry, args.out, minutes=args.minutes, accelerator=args.accelerator,
                  max_steps=args.max_steps, workers=args.workers, progress=not args.no_progress))
    else:
        print(fetch(args.src, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
