"""Interpolated modified Kneser-Ney n-gram estimation (Chen & Goodman 1998), written as ARPA.

Hand-written rather than KenLM's `lmplz`: lmplz is a C++ build (boost, cmake) that no pip
package ships, and the corpora here (a few hundred thousand words) are estimated in seconds in
Python. The estimate follows lmplz's choices, so its files and ours read the same way:
- adjusted counts: raw counts for the highest order and for n-grams that start with <s>,
  continuation counts N1+(. w) for the lower orders;
- three discounts per order, D1, D2, D3+, from the count-of-counts;
- interpolation down to a uniform distribution over the vocabulary (including <unk>);
- the interpolated probabilities are what the ARPA file lists, and each context's backoff is
  its interpolation weight gamma(h), so ARPA backoff scoring reproduces the interpolated model.
No pruning: every seen n-gram is kept, so each context's distribution sums to one (tested).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from models.lm.arpa import BOS, EOS, UNK

NGrams = list[dict[tuple[str, ...], tuple[float, float]]]


def _discounts(counts: Counter[tuple[str, ...]]) -> tuple[float, float, float]:
    t = Counter(min(c, 4) for c in counts.values())
    t1, t2, t3, t4 = t[1], t[2], t[3], t[4]
    if not (t1 and t2 and t3 and t4):  # too little data for count-of-counts: a fixed discount
        return 0.5, 1.0, 1.5
    y = t1 / (t1 + 2 * t2)
    d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    return tuple(min(max(x, 0.05), k + 1 - 0.05) for k, x in enumerate(d))  # type: ignore[return-value]


def estimate(sentences: Iterable[list[str]], order: int = 3,
             vocabulary: Iterable[str] = ()) -> NGrams:
    """Sentences of words (no <s>/</s>) -> ngrams[n-1]: words -> (ln prob, ln backoff).

    `vocabulary`: extra words (a word list) that get one more unigram count each, so the lexicon
    knows them even when no sentence used them.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    raw: Counter[tuple[str, ...]] = Counter()  # highest-order counts
    for words in sentences:
        toks = [BOS, *words, EOS]
        for i in range(1, len(toks)):
            raw[tuple(toks[max(0, i - order + 1): i + 1])] += 1
    if not raw:
        raise ValueError("no sentences to estimate a language model from")
    return estimate_counts(raw, order, vocabulary)


def estimate_counts(raw: Counter[tuple[str, ...]], order: int,
                    vocabulary: Iterable[str] = ()) -> NGrams:
    """The same estimate from n-gram counts: `raw` holds each order-n gram's count and, for
    shorter grams, counts of grams that start with <s> (a sentence start) or that a source
    lists without their left context (e.g. a published bigram table, with order 2)."""
    if not raw:
        raise ValueError("no n-gram counts to estimate a language model from")
    if any(len(g) > order for g in raw):
        raise ValueError(f"counts of grams longer than order {order}")
    vocab: set[str] = {w for g in raw for w in g if w not in (BOS, EOS)}
    # adjusted counts per order, top order first
    adjusted: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    for gram, c in raw.items():
        adjusted[len(gram) - 1][gram] += c  # short grams at the start are <s>-anchored: raw
    for n in range(order, 1, -1):
        for gram in adjusted[n - 1]:
            suffix = gram[1:]
            if suffix[0] == BOS:
                continue
            adjusted[n - 2][suffix] += 1  # one more distinct left extension
    for w in set(vocabulary):
        adjusted[0][(w,)] += 1
        vocab.add(w)
    vocab_size = len(vocab) + 2  # + </s> + <unk>; <s> is never predicted
    probs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    gammas: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    for n in range(1, order + 1):
        counts = adjusted[n - 1]
        d = _discounts(counts)
        totals: dict[tuple[str, ...], float] = defaultdict(float)
        kinds: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
        for gram, c in counts.items():
            totals[gram[:-1]] += c
            kinds[gram[:-1]][min(c, 3) - 1] += 1
        for hist, total in totals.items():
            k = kinds[hist]
            gammas[n - 1][hist] = (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / total
        for gram, c in counts.items():
            hist = gram[:-1]
            lower = _lower(probs, gram[1:], gammas, vocab_size)
            probs[n - 1][gram] = (c - d[min(c, 3) - 1]) / totals[hist] + gammas[n - 1][hist] * lower
        if n == 1:  # seen unigrams already hold their uniform share; <unk> gets only that
            probs[0][(UNK,)] = probs[0].get((UNK,), 0.0) + gammas[0][()] / vocab_size
            for w in vocab:  # a word never seen after another (first words of a count
                probs[0].setdefault((w,), gammas[0][()] / vocab_size)  # table): uniform share
    out: NGrams = [{} for _ in range(order)]
    for n in range(order):
        for gram, p in probs[n].items():
            bo = gammas[n + 1].get(gram, 1.0) if n + 1 < order else 1.0
            out[n][gram] = (math.log(p), math.log(bo))
    bos_bo = gammas[1].get((BOS,), 1.0) if order > 1 else 1.0
    out[0][(BOS,)] = (-99.0 * math.log(10), math.log(bos_bo))  # never predicted (ARPA custom)
    return out


def _lower(probs: list[dict[tuple[str, ...], float]], gram: tuple[str, ...],
           gammas: list[dict[tuple[str, ...], float]], vocab_size: int) -> float:
    """Interpolated p(gram[-1] | gram[:-1]) for a gram not listed at its own order."""
    if not gram:
        return 1.0 / vocab_size
    n = len(gram)
    if gram in probs[n - 1]:
        return probs[n - 1][gram]
    gamma = gammas[n - 1].get(gram[:-1], 1.0)
    return gamma * _lower(probs, gram[1:], gammas, vocab_size)
