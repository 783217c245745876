"""What one training step costs per head and loss, on the same real batches, side by side:
CTC, RNN-T with the full loss and RNN-T with the pruned loss (and Gram-CTC), same encoder.

    python -m training.experiments.step_cost --corpus data/synth --batches 8 \
        --out docs/results/step-cost

Each variant runs forward + backward + AdamW on the same `--batches` batches (drawn once by
the recipe's bucketing sampler, augmentation off, so every variant sees identical tensors),
after one warm-up batch; reports mean seconds per step, the ratio to CTC, the peak resident
memory the steps added (each variant runs in its own process so one's peak does not hide
another's) and, for RNN-T, the joiner cells computed per step (B x T' x (U+1) for the full
loss, B x T' x s_range for the pruned one). One thread (OMP_WAIT_POLICY=PASSIVE), like
training. A command, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from training.experiments import write_report

VARIANTS = {  # name -> overrides on the recipe
    "ctc": ["head.type=ctc"],
    "gram_ctc": ["head.type=gram_ctc", "head.gram_size=300"],
    "rnnt-full": ["head.type=rnnt", "head.rnnt_loss=full"],
    "rnnt-pruned": ["head.type=rnnt", "head.rnnt_loss=pruned"],
}


def draw_batches(cfg: Any, n: int) -> list[dict[str, Any]]:
    from lhotse.dataset import DynamicBucketingSampler

    from models.features import FbankConfig
    from training.data.dataset import AsrDataset, feature_stats
    from training.train import _cuts, make_tokenizer

    tok = make_tokenizer(cfg)
    feats = FbankConfig(num_mel_bins=cfg.model.num_mel_bins)
    cuts = _cuts(cfg.data.train)
    mean, _ = feature_stats(cuts, feats, max_cuts=50)
    sampler = DynamicBucketingSampler(cuts, max_duration=cfg.data.max_duration_s,
                                      num_buckets=cfg.data.num_buckets, shuffle=True,
                                      seed=cfg.seed)
    ds = AsrDataset(tokenizer=tok, features=feats, augment=None, feat_mean=mean)
    out = []
    for cutset in sampler:
        out.append(ds[cutset])
        if len(out) == n + 1:
            break
    return out


def measure(name: str, cfg: Any, batches: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    from training.train import make_module, make_tokenizer

    torch.manual_seed(0)
    tok = make_tokenizer(cfg)
    h = cfg.head
    module = make_module(cfg, tok)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cells = [], []
    for i, batch in enumerate(batches):
        if h.type != "ctc":  # targets in this variant's vocabulary (grams differ from chars)
            ids = [torch.tensor(tok.encode(t), dtype=torch.long) for t in batch["texts"]]
            batch = {**batch, "targets": torch.cat(ids),
                     "target_lengths": torch.tensor([len(x) for x in ids])}
        t0 = time.perf_counter()
        loss, _, out_lengths = module.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i > 0:  # the first batch warms up allocators and kernels
            times.append(time.perf_counter() - t0)
            if h.type == "rnnt":
                b, t = len(batch["texts"]), int(out_lengths.max())
                u1 = int(batch["target_lengths"].max()) + 1
                cells.append(b * t * (h.prune_range if h.rnnt_loss == "pruned" else u1))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": name, "params": sum(p.numel() for p in module.model.parameters()),
            "seconds_per_step": round(sum(times) / len(times), 4), "steps": len(times),
            "joiner_cells_per_step": round(sum(cells) / len(cells)) if cells else None,
            "peak_rss_growth_mb": round((rss1 - rss0) / 1024, 1)}


def markdown(result: dict[str, Any]) -> str:
    base = next((r["seconds_per_step"] for r in result["rows"] if r["variant"] == "ctc"), None)
    lines = ["| variant | params | s / step | vs CTC | joiner cells / step | peak RSS growth |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ratio = f"{r['seconds_per_step'] / base:.2f}x" if base else "-"
        cells = f"{r['joiner_cells_per_step']:,}" if r["joiner_cells_per_step"] else "-"
        lines.append(f"| {r['variant']} | {r['params'] / 1e6:.2f} M | "
                     f"{r['seconds_per_step']:.3f} | {ratio} | {cells} | "
                     f"{r['peak_rss_growth_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="chorus data synth output")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("docs/results/step-cost"))
    p.add_argument("--override", action="append", default=[],
                   help="recipe override for every variant, e.g. model.d_model=384")
    p.add_argument("--row", type=Path, default=None,
                   help=argparse.SUPPRESS)  # internal: measure one variant, write its row here
    args = p.parse_args(argv)

    import torch

    from training.config import load_config

    torch.set_num_threads(1)
    data = [f"data.train=[{args.corpus / 'cuts_train.jsonl.gz'}]",
            f"data.dev=[{args.corpus / 'cuts_dev.jsonl.gz'}]", f"model.subsampling={args.stride}",
            *args.override]
    if args.row is not None:  # one variant, in this (fresh) process
        batches = draw_batches(load_config(args.recipe, data), args.batches)
        cfg = load_config(args.recipe, [*data, *VARIANTS[args.variants]])
        row = measure(args.variants, cfg, batches)
        row["audio_seconds_per_batch"] = round(
            sum(float(b["lengths"].sum()) for b in batches[1:]) / 100 / args.batches, 1)
        args.row.write_text(json.dumps(row))
        return 0
    rows = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown {name!r}; known: {', '.join(VARIANTS)}")
        row = args.out.with_name(f"{args.out.name}.{name}.row.json")
        row.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "training.experiments.step_cost", "--corpus",
               str(args.corpus), "--recipe", str(args.recipe), "--batches", str(args.batches),
               "--stride", str(args.stride), "--variants", name, "--row", str(row),
               *sum((["--override", o] for o in args.override), [])]
        subprocess.run(cmd, check=True)
        rows.append(json.loads(row.read_text()))
        row.unlink()
        print(json.dumps(rows[-1]), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "recipe": str(args.recipe),
              "stride": args.stride, "batches": args.batches,
              "audio_seconds_per_batch": [r.pop("audio_seconds_per_batch") for r in rows][0],
              "rows": rows}
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
