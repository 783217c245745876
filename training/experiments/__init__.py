"""Reproductions: slow experiments run as commands, each writing a table."""

from __future__ import annotations

import argparse
import fcntl
import json
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHIPPED_LM = Path("models/pretrained/default/lm/words3.arpa.gz")


def write_report(out: Path, result: dict[str, Any], table: str) -> None:
    """An experiment's result as out.json and its markdown table as out.md (parents made)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table)


@contextmanager
def locked_table(out: Path, settings: dict[str, Any]) -> Iterator[dict[str, Any] | None]:
    """The table at out.json (None when there is none yet), held under a file lock while the
    caller merges rows into it, so side-by-side runs do not lose each other's rows; a table
    made at other settings is refused (its rows would not compare)."""
    path = out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else None
        for key, mine in settings.items():
            if old is not None and old.get(key) != mine:
                raise SystemExit(f"{path} has {key}={old.get(key)!r}, this call {mine!r}: "
                                 "rows at different settings do not compare")
        yield old


def add_run_args(p: argparse.ArgumentParser, *, minutes: float, name: str) -> None:
    """The options of an experiment that trains runs on a synthesized corpus for a budget each
    and scores them on its held-out split (equal_compute, leave_one_engine_out)."""
    p.add_argument("--corpus", type=Path, required=True, help="chorus data synth output")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--minutes", type=float, default=minutes, help="training budget per run")
    p.add_argument("--lm", type=Path, default=SHIPPED_LM, help="word LM for beam + LM")
    p.add_argument("--limit", type=int, default=None, help="test utterances (default: all)")
    p.add_argument("--dev-limit", type=int, default=200, help="dev utterances for LM tuning")
    p.add_argument("--test", type=Path, default=None,
                   help="held-out manifest (default: CORPUS/cuts_test.jsonl.gz)")
    p.add_argument("--work", type=Path, default=Path("runs") / name)
    p.add_argument("--out", type=Path, default=Path("docs/results") / name)
    p.add_argument("--override", action="append", default=[],
                   help="extra recipe override for every run, e.g. optim.max_steps=50")
    p.add_argument("--no-progress", action="store_true")


def merge_runs(args: argparse.Namespace, rows: list[dict[str, Any]],
               markdown: Callable[[dict[str, Any]], str],
               extra: Callable[[dict[str, Any] | None], dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    """Put `rows` into the table at args.out, replacing rows of the same run name, under the
    table's lock; a table made at another budget, recipe, LM or test set is refused. `extra`
    gives further top-level fields from the old table (None when new)."""
    settings = {"minutes_per_run": args.minutes, "recipe": str(args.recipe),
                "lm": str(args.lm), "test": str(args.test or "CORPUS/cuts_test.jsonl.gz"),
                "limit": args.limit}
    with locked_table(args.out, settings) as old:
        names = {r["run"] for r in rows}
        kept = [r for r in (old or {}).get("runs", []) if r["run"] not in names]
        result = {**settings, "date": time.strftime("%Y-%m-%d"), **(extra(old) if extra else {}),
                  "runs": sorted(kept + rows, key=lambda r: r["run"])}
        write_report(args.out, result, markdown(result))
    return result


def subset_manifest(src: Path, ids: set[str], out: Path) -> Path:
    """The cuts of `src` whose ids are in `ids`, written to `out` (parents made)."""
    from lhotse import CutSet

    out.parent.mkdir(parents=True, exist_ok=True)
    CutSet.from_file(src).to_eager().subset(cut_ids=sorted(ids)).to_file(out)
    return out


def with_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """`args` whose training runs use `seed` (a `seed=` override before the user's own)."""
    return argparse.Namespace(**{**vars(args), "override": [f"seed={seed}", *args.override]})


def concat_manifests(parts: Sequence[tuple[Path, Collection[str]]], out: Path) -> Path:
    """The named cuts of each manifest, together, written to `out` (parents made); a cut id in
    two parts is refused (ValueError, training.data.manifests)."""
    from lhotse import CutSet

    from training.data.manifests import check_distinct_ids

    check_distinct_ids(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    cuts = [CutSet.from_file(m).to_eager().subset(cut_ids=sorted(ids)) for m, ids in parts if ids]
    both = cuts[0]
    for c in cuts[1:]:
        both = both + c
    both.to_eager().to_file(out)
    return out


# the encoder fields that fix its weights' shapes, and the lookahead, which a warm start can
# lengthen but not shorten (training.train.warm_start); not dropout or the normaliser mode
ARCHITECTURE = ("num_mel_bins", "conv_channels", "d_model", "num_layers", "rnn", "subsampling",
                "arch", "heads", "ff_mult", "conv_kernel", "left_context", "lookahead")


def encoder_overrides(bundle_dir: str | Path) -> list[str]:
    """`model.FIELD=value` for a bundle's encoder architecture (`ARCHITECTURE`, read from its
    bundle.json): a recipe warm-started from that bundle (`init_from`) builds its shape (a
    widened default, an x2 one with its longer lookahead, say) whatever the recipe says;
    overrides given after these still win (a longer lookahead, say)."""
    from models.bundle import BUNDLE_JSON

    enc = json.loads((Path(bundle_dir) / BUNDLE_JSON).read_text())["model"]["encoder"]
    return [f"model.{k}={enc[k]}" for k in ARCHITECTURE if k in enc]


def train_on(args: argparse.Namespace, manifest: Path, out: Path, init: Path | None,
             name: str) -> Path:
    """Train the recipe at args.recipe on `manifest` for args.minutes (dev: the corpus's),
    warm-started from `init` when given (its architecture: `encoder_overrides`), with
    args.override; -> the bundle's path."""
    from training.config import load_config
    from training.train import train

    corpus = Path(args.corpus)
    cfg = load_config(args.recipe, [
        f"name={name}", f"out_dir={out}", f"optim.max_minutes={args.minutes}",
        f"data.train=[{manifest}]", f"data.dev=[{corpus / 'cuts_dev.jsonl.gz'}]",
        *([f"init_from={init}", *encoder_overrides(init)] if init else []), *args.override])
    return train(cfg, progress=not args.no_progress)


def greedy_wer(bundle_path: Path, test: list[Any]) -> float:
    """Greedy WER (a fraction, 4 decimals) of a bundle on loaded test utterances."""
    from models.bundle import load
    from training.eval.metrics import error_rates
    from training.eval.run import transcribe_ours

    hyps, _ = transcribe_ours(load(bundle_path), test, decoder="greedy", beam_size=1,
                              progress=False)
    return round(error_rates([u.ref for u in test], hyps).wer, 4)
