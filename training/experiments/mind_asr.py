"""MIND's ASR half: conversational speech vs raw speech at equal audio hours (Akter et al. 2024).

    python -m training.experiments.mind_asr --corpus data/synth --dialogues data/dialogues/audio \
        --init-from models/pretrained/default --hours 1.0 --out docs/results/mind-asr \
        --override optim.max_steps=400 --override model.subsampling=4

The LM half (`training.experiments.mind_lm`) compares text at equal tokens; this one asks the
acoustic model. Rows, each fine-tuned from `--init-from` with the recipe and the same overrides
(so the same steps: equal compute) on `--hours` of audio (whole utterances drawn at random,
seeded, until the hours are reached; the mixed row's raw part fills what its dialogue part
left, so both rows end within one utterance of the same hours):
- `init`: the starting bundle itself, no training;
- `raw`: the corpus's train split only (the monologue style the model was trained on: this row
  is the control for what fine-tuning alone does);
- `raw+dialogues`: `--dialogue-share` of the hours from the dialogue corpus's train split
  (`chorus data dialogues` rewritten as conversations, `chorus data synth-dialogues` spoken turn
  by turn, two voices each), the rest raw as above.
Each row is scored greedy on the dialogue corpus's test split (conversations and voices never
trained on) and on the corpus's test split (what the shift costs the monologue domain).
Slow by design (two training runs): a command, not a test (a smoke test runs in CI).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from training.experiments import concat_manifests, greedy_wer, train_on, with_seed, write_report

ROWS = ("init", "raw", "raw+dialogues")


def draw_hours(utts: list[Any], hours: float, seed: int) -> list[str]:
    """Ids of utterances drawn at random (seeded) until their audio reaches `hours`."""
    order = list(utts)
    random.Random(seed).shuffle(order)
    out, total = [], 0.0
    for u in order:
        if total >= hours * 3600:
            break
        out.append(u.id)
        total += u.duration
    if total < hours * 3600 * 0.99:
        raise SystemExit(f"mind_asr: only {total / 3600:.3f} h to draw from, {hours} h asked")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from training.eval.run import load_manifest

    corpus, dialogues, work = Path(args.corpus), Path(args.dialogues), Path(args.work)
    raw_m, dlg_m = corpus / "cuts_train.jsonl.gz", dialogues / "cuts_train.jsonl.gz"
    raw, dlg = load_manifest(raw_m), load_manifest(dlg_m)
    dur = {u.id: u.duration for u in [*raw, *dlg]}
    tests = {"dialogue_test": load_manifest(dialogues / "cuts_test.jsonl.gz"),
             "corpus_test": load_manifest(args.corpus_test or corpus / "cuts_test.jsonl.gz",
                                          args.test_limit)}
    share = args.dialogue_share
    dlg_part = draw_hours(dlg, args.hours * share, args.seed)
    dlg_h = sum(dur[i] for i in dlg_part) / 3600
    sets = {"raw": [(raw_m, draw_hours(raw, args.hours, args.seed))],
            "raw+dialogues": [(dlg_m, dlg_part),
                              (raw_m, draw_hours(raw, args.hours - dlg_h, args.seed))]}
    seeded = with_seed(args, args.seed)
    rows = []
    for name in ROWS:
        if name == "init":
            bundle, ids = args.init_from, []
        else:
            ids = [i for _, part in sets[name] for i in part]
            out = work / name.replace("+", "-")
            bundle = train_on(seeded, concat_manifests(sets[name], out / "train.jsonl.gz"), out,
                              args.init_from, f"mind-asr-{out.name}")
        dlg_ids = set(ids) & {u.id for u in dlg}
        rows.append({"run": name, "utterances": len(ids),
                     "hours": round(sum(dur[i] for i in ids) / 3600, 3),
                     "dialogue_hours": round(sum(dur[i] for i in dlg_ids) / 3600, 3),
                     **{k: greedy_wer(bundle, v) for k, v in tests.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return {"corpus": str(corpus), "dialogues": str(dialogues), "init_from": str(args.init_from),
            "hours": args.hours, "dialogue_share": share, "seed": args.seed,
            "overrides": args.override,
            "test_utterances": {k: len(v) for k, v in tests.items()},
            "date": time.strftime("%Y-%m-%d"), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    n = result["test_utterances"]
    lines = [f"Fine-tuned from {result['init_from']} on {result['hours']:g} h each (dialogue "
             f"share {result['dialogue_share']:g}), overrides {' '.join(result['overrides'])}; "
             f"greedy WER on {n['dialogue_test']} held-out dialogue turns and "
             f"{n['corpus_test']} corpus test utterances.", "",
             "| run | utterances | hours | of which dialogue | dialogue test WER % | "
             "corpus test WER % |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['utterances']} | {r['hours']} | {r['dialogue_hours']} | "
              f"{100 * r['dialogue_test']:.1f} | {100 * r['corpus_test']:.1f} |"
              for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.mind_asr",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="chorus data synth output")
    p.add_argument("--dialogues", type=Path, required=True,
                   help="chorus data synth-dialogues output")
    p.add_argument("--init-from", type=Path, required=True, help="the bundle every row starts from")
    p.add_argument("--hours", type=float, default=1.0, help="training audio per row")
    p.add_argument("--dialogue-share", type=float, default=0.5,
                   help="of the raw+dialogues row's hours, the dialogue part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=0.0,
                   help="training budget per row (0: the steps in the overrides)")
    p.add_argument("--recipe", type=Path, default=Path("training/recipes/small.yaml"))
    p.add_argument("--corpus-test", type=Path, default=None,
                   help="the monologue test manifest (default: the corpus's test split)")
    p.add_argument("--test-limit", type=int, default=None, help="corpus test utterances")
    p.add_argument("--work", type=Path, default=Path("runs/mind-asr"))
    p.add_argument("--out", type=Path, default=Path("docs/results/mind-asr"))
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.dialogue_share <= 1 or args.hours <= 0:
        raise SystemExit(f"--dialogue-share must be in (0, 1] and --hours > 0, got "
                         f"{args.dialogue_share} and {args.hours}")
    result = run(args)
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
