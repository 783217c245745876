"""`python -m training.eval.error_kinds`: what kind of word errors a system makes, per engine.

Reads the hypotheses a `chorus eval --json` run wrote (its `hypotheses`: id, engine, ref and
each system's text), aligns each with its reference (jiwer) and splits the word errors into:
substitutions and insertions by a **non-word** (a word not in the vocabulary given, e.g. the
shipped LM's: what a lexicon or an LM would have ruled out: a misspelling), substitutions and
insertions by a real word, and deletions. All as points of WER (per 100 reference words), so
the kinds add up to the WER, pooled overall and per engine.

What it tells: a character CTC model decoded greedily spells; when most of its WER is non-word
substitutions, units that spell whole words (subword units) or a lexicon are the lever, not
the acoustics.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KINDS = ("sub_nonword", "sub_word", "deletion", "ins_nonword", "ins_word")


def error_kinds(refs: Sequence[str], hyps: Sequence[str], vocab: Iterable[str]) -> Counter[str]:
    """Counts of each of KINDS plus `words` (reference words) over the pairs."""
    import jiwer

    vocab = frozenset(vocab)
    out: Counter[str] = Counter()
    h = [x if x.strip() else " " for x in hyps]  # jiwer rejects empty hypotheses
    w = jiwer.process_words(list(refs), h)
    for ref, hyp, chunks in zip(w.references, w.hypotheses, w.alignments, strict=True):
        out["words"] += len(ref)
        for c in chunks:
            if c.type == "substitute":
                for word in hyp[c.hyp_start_idx : c.hyp_end_idx]:
                    out["sub_word" if word in vocab else "sub_nonword"] += 1
            elif c.type == "insert":
                for word in hyp[c.hyp_start_idx : c.hyp_end_idx]:
                    out["ins_word" if word in vocab else "ins_nonword"] += 1
            elif c.type == "delete":
                out["deletion"] += c.ref_end_idx - c.ref_start_idx
    return out


def as_points(c: Counter[str]) -> dict[str, float]:
    """The counts as points of WER (per 100 reference words), with the WER itself."""
    n = max(1, c["words"])
    row = {k: round(100 * c[k] / n, 1) for k in KINDS}
    row["wer"] = round(100 * sum(c[k] for k in KINDS) / n, 1)
    row["words"] = c["words"]
    return row


def by_engine(hypotheses: list[dict[str, Any]], system: str,
              vocab: frozenset[str]) -> dict[str, dict[str, float]]:
    """{"all": row, engine: row, ...} for one system of an eval JSON's hypotheses."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for u in hypotheses:
        groups[u.get("engine", "?")].append(u)
    rows = {"all": as_points(error_kinds([u["ref"] for u in hypotheses],
                                         [u[system] for u in hypotheses], vocab))}
    for engine in sorted(groups):
        us = groups[engine]
        rows[engine] = as_points(error_kinds([u["ref"] for u in us], [u[system] for u in us],
                                             vocab))
    return rows


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| run | engine | WER | sub. by non-word | sub. by word | deletions | "
             "ins. non-word | ins. word |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for engine, r in rows.items():
            lines.append(f"| {name} | {engine} | {r['wer']} | " + " | ".join(
                str(r[k]) for k in KINDS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval.error_kinds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval-json", type=Path, action="append", required=True,
                   help="a `chorus eval --json` file (repeat for several runs)")
    p.add_argument("--vocab", type=Path, required=True,
                   help="an ARPA LM (its unigrams are the vocabulary) or a file of one word a line")
    p.add_argument("--system", default="chorus", help="which system's hypotheses (default chorus)")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    a = p.parse_args(argv)
    if ".arpa" in a.vocab.name:
        from models.lm.arpa import ArpaLM

        vocab = frozenset(ArpaLM.load(a.vocab).vocab)
    else:
        vocab = frozenset(a.vocab.read_text().split())
    results = {}
    for path in a.eval_json:
        d = json.loads(path.read_text())
        if not d.get("hypotheses") or a.system not in d["hypotheses"][0]:
            raise SystemExit(f"{path}: no hypotheses of system {a.system!r} (a `chorus eval "
                             "--json` file has them under `hypotheses`)")
        results[path.stem] = by_engine(d["hypotheses"], a.system, vocab)
    table = markdown(results)
    print(table, end="")
    if a.json:
        a.json.write_text(json.dumps({"vocab": str(a.vocab), "vocab_size": len(vocab),
                                      "results": results}, indent=1) + "\n")
    if a.markdown:
        a.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
