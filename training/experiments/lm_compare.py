"""n-gram vs LSTM vs TCNLM on the same text, the neural two at equal parameters.

    python -m training.experiments.lm_compare --corpus data/synth \
        --dialogues data/dialogues/dialogues.jsonl --minutes 20 --out docs/results/lm-compare

Text: the corpus's train-split text pool (each sentence its own document) plus the train
split of the dialogues (each dialogue one document). Models: a Kneser-Ney 3-gram estimated
from exactly those sentences; an LSTM LM; a TCNLM whose factor rank is chosen so its
parameters (topic model included) equal the LSTM's (same vocabulary, so the same embedding
and output matrices). Each neural LM trains for `--minutes` on one core. Scored: perplexity on
the corpus's dev and test transcripts (single utterances: no context, so TCNLM's topics are
the prior's), and on the dev-split dialogue turns with their preceding turns as context (and
without, to show what the context is worth). Also TCNLM's topics (top words, a sample).
Slow by design: a command, not a test (a smoke test runs it tiny).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path
from typing import Any

from training.experiments import write_report


def transcripts(path: Path) -> list[tuple[list[str], list[str]]]:
    with gzip.open(path, "rt") as f:
        return [([], json.loads(line)["supervisions"][0]["text"].split()) for line in f]


def equal_factor(embed: int, hidden: int, topics: int, bow: int, ntm_hidden: int) -> int:
    """TCNLM's factor rank F whose recurrent layer + topic model have the LSTM layer's
    parameters. LSTM: 4H(E + H) + 8H (torch's two bias vectors). TCNLM: F(4E + 12H + 8K)
    (Wc_x 4FE, Wc_h 4FH, Wb_x and Wb_h 4FK each, Wa_x and Wa_h 4HF each) + 4H bias + the topic
    model (encoder Vb x N + N, mu and logvar N x K + K each, beta K x Vb + Vb)."""
    lstm = 4 * hidden * (embed + hidden) + 8 * hidden
    ntm = (bow * ntm_hidden + ntm_hidden) + 2 * (ntm_hidden * topics + topics) + (topics * bow + bow)
    per_f = 4 * embed + 4 * hidden + 8 * topics + 8 * hidden  # Wc_x, Wc_h, Wb_x/_h, Wa_x/_h
    f = (lstm - ntm - 4 * hidden) // per_f
    if f < 1:
        raise SystemExit(f"the topic model alone ({ntm} parameters) outweighs the LSTM layer "
                         f"({lstm}): use a smaller --bow-size or more --hidden")
    return int(f)


def ngram_ppl(lm: Any, data: list[tuple[list[str], list[str]]]) -> dict[str, float]:
    from training.lm.neural import perplexity_of

    sentences = [s for _, s in data]
    return perplexity_of([lm.sentence_logprob(s) for s in sentences], sentences, lm.vocab)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.lm.arpa import ArpaLM
    from models.lm.neural import load
    from training.lm.neural import (
        NeuralTrainConfig,
        dialogue_documents,
        examples,
        perplexity,
        topic_report,
        train,
    )
    from training.lm.ngram import estimate
    from training.lm.text import LmTextConfig, train_sentences

    corpus, work = Path(args.corpus), Path(args.work)
    docs = [[s.split()] for s in train_sentences(LmTextConfig(
        template_sentences=args.template_sentences))] if not args.no_corpus_text else []
    docs += dialogue_documents(args.dialogues, "train")
    train_set = examples(docs)
    evals = {"dev": transcripts(corpus / "cuts_dev.jsonl.gz"),
             "test": transcripts(corpus / "cuts_test.jsonl.gz"),
             "dialogues": examples(dialogue_documents(args.dialogues, "dev"))}
    evals["dialogues_no_context"] = [([], s) for _, s in evals["dialogues"]]
    t0 = time.monotonic()
    ngram = ArpaLM(estimate([s for _, s in train_set], 3))
    rows = [{"model": "3-gram (Kneser-Ney)", "params": sum(len(t) for t in ngram.ngrams),
             "minutes": round((time.monotonic() - t0) / 60, 2), "steps": None,
             **{k: ngram_ppl(ngram, v) for k, v in evals.items()}}]
    factor = equal_factor(args.embed, args.hidden, args.topics, args.bow_size, args.ntm_hidden)
    topics: list[dict[str, Any]] = []
    for kind in ("lstm", "tcnlm"):
        cfg = NeuralTrainConfig(type=kind, embed=args.embed, hidden=args.hidden,
                                topics=args.topics, factor=factor, bow_size=args.bow_size,
                                ntm_hidden=args.ntm_hidden, minutes=args.minutes,
                                max_steps=args.max_steps, seed=args.seed,
                                kl_anneal_steps=args.kl_anneal_steps)
        summary = train(cfg, train_set, None, work / kind, progress=not args.no_progress)
        model = load(work / kind)
        rows.append({"model": kind, "params": summary["params"], "minutes": summary["minutes"],
                     "steps": summary["steps"], "factor": factor if kind == "tcnlm" else None,
                     **{k: perplexity(model, v) for k, v in evals.items()}})
        if kind == "tcnlm":
            topics = topic_report(model, seed=args.seed)
        print(json.dumps(rows[-1]), flush=True)
    return {"corpus": str(corpus), "dialogues": str(args.dialogues),
            "train_sentences": len(train_set), "documents": len(docs),
            "minutes_per_neural_lm": args.minutes, "date": time.strftime("%Y-%m-%d"),
            "rows": rows, "topics": topics}


def markdown(result: dict[str, Any]) -> str:
    sets = ("dev", "test", "dialogues", "dialogues_no_context")
    lines = [f"{result['train_sentences']} training sentences in {result['documents']} "
             f"documents; neural LMs {result['minutes_per_neural_lm']:g} min each on one core. "
             "Perplexity (OOV rate) on the corpus's dev / test transcripts and on dev-split "
             "dialogue turns with and without their preceding turns.", "",
             "| model | params | steps | " + " | ".join(sets) + " |", "|---|---|---|" + "---|" * len(sets)]
    for r in result["rows"]:
        cells = [f"{r[s]['perplexity']} ({100 * r[s]['oov_rate']:.1f} %)" for s in sets]
        lines.append(f"| {r['model']} | {r['params']} | {r['steps'] or '-'} | "
                     + " | ".join(cells) + " |")
    if result["topics"]:
        lines += ["", "| TCNLM topic | top words | sample |", "|---|---|---|"]
        lines += [f"| {t['topic']} | {' '.join(t['top_words'])} | {t['sample']} |"
                  for t in result["topics"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.experiments.lm_compare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="manifests for dev / test text")
    p.add_argument("--dialogues", type=Path, required=True, help="chorus data dialogues output")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per neural LM")
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--topics", type=int, default=16)
    p.add_argument("--bow-size", type=int, default=500)
    p.add_argument("--kl-anneal-steps", type=int, default=0, help="tcnlm: KL warm-up steps")
    p.add_argument("--ntm-hidden", type=int, default=128)
    p.add_argument("--template-sentences", type=int, default=20000)
    p.add_argument("--no-corpus-text", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("runs/lm-compare"))
    p.add_argument("--out", type=Path, default=Path("docs/results/lm-compare"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    result = run(args)
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
