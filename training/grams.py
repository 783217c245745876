"""Gram sets for Gram-CTC (Liu et al. 2017): characters plus frequent n-grams (n <= 3).

Selection follows the paper's first recipe: count every character n-gram inside words over the
training text and keep the most frequent ones. Its second recipe, refinement by decoding, keeps
only the grams a trained model actually emits (`refine_grams`), so the next model does not
spend outputs on grams it never uses. Grams never contain a space, so word boundaries stay
tokens of their own and word timestamps work as for characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from models.tokenizer import DEFAULT_SYMBOLS, CharTokenizer


def gram_counts(texts: Iterable[str], max_n: int = 3) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        for word in text.split():
            for n in range(2, max_n + 1):
                for i in range(len(word) - n + 1):
                    counts[word[i : i + n]] += 1
    return counts


def select_grams(texts: Iterable[str], *, max_n: int = 3, size: int = 100) -> list[str]:
    """The `size` most frequent within-word n-grams (2 <= n <= max_n), most frequent first."""
    if max_n < 2 or size < 0:
        raise ValueError(f"max_n must be >= 2 and size >= 0, got {max_n}, {size}")
    return [g for g, _ in sorted(gram_counts(texts, max_n).items(),
                                 key=lambda kv: (-kv[1], kv[0]))[:size]]


def refine_grams(grams: list[str], emitted: Counter[str], min_count: int = 1) -> list[str]:
    """Keep the grams a model emitted at least `min_count` times while decoding."""
    return [g for g in grams if emitted[g] >= min_count]


def gram_tokenizer(grams: Iterable[str]) -> CharTokenizer:
    """Blank, the characters, then the n-grams: ids of characters are those of the char model."""
    extra = [g for g in grams if g not in DEFAULT_SYMBOLS]
    for g in extra:
        if len(g) < 2 or " " in g or any(c not in DEFAULT_SYMBOLS for c in g):
            raise ValueError(f"gram {g!r} must be 2+ characters of the alphabet, no space")
    return CharTokenizer((*DEFAULT_SYMBOLS, *extra))


def emitted_grams(bundle: object, manifest: str, limit: int | None = None) -> Counter[str]:
    """How often a Gram-CTC bundle's greedy decoding emits each multi-character gram."""
    from models.decoding.ctc_greedy import CtcGreedyDecoder
    from training.eval.run import forward_all, load_manifest

    utts = load_manifest(manifest, limit)
    outs, _ = forward_all(bundle, utts, progress=False)
    tok = bundle.tokenizer  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    for lp in outs:
        dec = CtcGreedyDecoder(tok, frame_seconds=bundle.frame_seconds)  # type: ignore[attr-defined]
        dec.update(lp)
        counts.update(tok.symbols[k] for k, _, _ in dec.tokens if len(tok.symbols[k]) > 1)
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m training.grams refine --bundle B --manifest DEV [--min-count N]`: the gram set
    the bundle actually uses, as JSON for `head.grams=` of the next run."""
    import argparse
    import json

    from models.bundle import load

    p = argparse.ArgumentParser(prog="python -m training.grams")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refine", help="keep the grams a trained Gram-CTC bundle emits")
    r.add_argument("--bundle", required=True)
    r.add_argument("--manifest", required=True)
    r.add_argument("--min-count", type=int, default=2)
    r.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)
    bundle = load(args.bundle)
    grams = [s for s in bundle.tokenizer.symbols if len(s) > 1 and not s.startswith("<")]
    if not grams:
        raise SystemExit(f"{args.bundle}: not a Gram-CTC bundle (no multi-character tokens)")
    counts = emitted_grams(bundle, args.manifest, args.limit)
    kept = refine_grams(grams, counts, args.min_count)
    print(f"kept {len(kept)} of {len(grams)} grams (emitted >= {args.min_count} times)",
          flush=True)
    print(json.dumps(kept))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
