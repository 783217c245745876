"""MIND's question for an LM: raw text vs raw + its conversational rewrite, at equal tokens.

    python -m training.experiments.mind_lm --corpus data/synth --count 20000 \
        --out docs/results/mind-lm

Raw text: the LM text pool of `chorus lm build --wordnet` (the corpus's train-split sentences
plus WordNet's glosses and examples: the raw form of what the dialogues are made from). The
dialogues: `chorus data dialogues` (`--count`, seeded), train split. Two word 3-grams
(Kneser-Ney) over the same number of tokens: `raw` (raw sentences, shuffled, cut to the
budget) and `raw+dialogues` (every train dialogue turn, then raw sentences up to the same
budget). Perplexity (and OOV) on the held-out dialogue turns (test-split dialogues, whose
sources never reach training), and on the corpus's dev / test transcripts. JSON + markdown.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

from training.experiments import write_report


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.lm.arpa import ArpaLM
    from training.data.text.dialogues import generate
    from training.experiments.lm_compare import ngram_ppl, transcripts
    from training.lm.ngram import estimate
    from training.lm.text import LmTextConfig, train_sentences

    dialogues = list(generate(args.count, args.seed))
    turns = {s: [t.split() for d in dialogues if d.split == s for _, t in d.turns]
             for s in ("train", "test")}
    raw = [s.split() for s in train_sentences(LmTextConfig(
        template_sentences=args.template_sentences, seed=args.seed, wordnet=True))]
    random.Random(args.seed).shuffle(raw)
    budget = sum(map(len, raw)) if args.tokens is None else args.tokens

    def cut(sentences: list[list[str]], tokens: int) -> list[list[str]]:
        out, n = [], 0
        for s in sentences:
            if n + len(s) > tokens:
                break
            out.append(s)
            n += len(s)
        return out

    dlg = cut(turns["train"], budget)
    sets = {"raw": cut(raw, budget),
            "raw+dialogues": dlg + cut(raw, budget - sum(map(len, dlg)))}
    evals: dict[str, list[tuple[list[str], list[str]]]] = {
        "dialogue_test_turns": [([], t) for t in turns["test"]]}
    if args.corpus:
        for split in ("dev", "test"):
            evals[f"corpus_{split}"] = transcripts(Path(args.corpus) / f"cuts_{split}.jsonl.gz")
    rows = []
    for name, text in sets.items():
        t0 = time.monotonic()
        lm = ArpaLM(estimate(text, 3))
        rows.append({"text": name, "sentences": len(text), "tokens": sum(map(len, text)),
                     "dialogue_tokens": sum(map(len, dlg)) if name != "raw" else 0,
                     "build_s": round(time.monotonic() - t0, 1),
                     **{k: ngram_ppl(lm, v) for k, v in evals.items()}})
        print(rows[-1], flush=True)
    return {"count": args.count, "seed": args.seed, "token_budget": budget,
            "dialogues": {s: sum(d.split == s for d in dialogues) for s in ("train", "dev", "test")},
            "date": time.strftime("%Y-%m-%d"), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    sets = [k for k, v in result["rows"][0].items() if isinstance(v, dict)]
    lines = [f"Word 3-grams at {result['token_budget']} training tokens each; dialogues "
             f"{result['dialogues']} (seed {result['seed']}). Perplexity (OOV rate).", "",
             "| text | sentences | tokens | of which dialogue | " + " | ".join(sets) + " |",
             "|---|---|---|---|" + "---|" * len(sets)]
    for r in result["rows"]:
        lines.append(f"| {r['text']} | {r['sentences']} | {r['tokens']} | {r['dialogue_tokens']} | "
                     + " | ".join(f"{r[s]['perplexity']} ({100 * r[s]['oov_rate']:.2f} %)"
                                  for s in sets) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.mind_lm",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=None, help="also score its dev / test text")
    p.add_argument("--count", type=int, default=20000, help="dialogues generated")
    p.add_argument("--tokens", type=int, default=None, help="budget (default: the raw pool's)")
    p.add_argument("--template-sentences", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/results/mind-lm"))
    args = p.parse_args(argv)
    result = run(args)
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
