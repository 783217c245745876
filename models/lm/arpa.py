"""Word n-gram language model in the ARPA backoff format (what KenLM's `lmplz` and SRILM write).

Hand-written reader rather than the `kenlm` module: `kenlm` has no wheels (a C++ source build at
install time) and the models that fit a bundle here (a few hundred thousand n-grams) score fast
enough from Python dicts; a KenLM-built ARPA file loads unchanged, so users can bring their own.

Scores are natural logs. `logprob(context, word)` follows the ARPA backoff rule:
p(w | h) = p*(w | h) if (h, w) is listed, else backoff(h) * p(w | h minus its first word).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN10 = math.log(10.0)


class ArpaError(ValueError):
    pass


class WordLM:
    """What every word LM offers the decoders: `vocab`, `order`, `unk_logprob`, `logprob`;
    the lexicon prefixes and sentence scores follow from those."""

    vocab: frozenset[str]
    order: int  # words of context + 1
    unk_logprob: float  # ln P(<unk>): what an out-of-vocabulary word costs
    _prefixes: frozenset[str] | None = None
    batched = False  # True: `prefetch` batches work (a neural LM); decoders skip it otherwise

    def logprob(self, context: tuple[str, ...], word: str) -> float:
        raise NotImplementedError

    def prefetch(self, contexts: Iterable[tuple[str, ...]]) -> None:
        """Work ahead on the next-word distributions of `contexts` (a beam's, or many
        streams'), so the `logprob` calls that follow are lookups. An n-gram has nothing to
        do; a neural LM batches them into one network step."""

    def clear_cache(self) -> None:
        """Forget any computed distributions (benchmarks start cold); n-grams keep none."""

    @property
    def prefixes(self) -> frozenset[str]:
        """Every prefix of every vocabulary word (the lexicon check of partial words)."""
        if self._prefixes is None:
            self._prefixes = frozenset(w[:i] for w in self.vocab for i in range(1, len(w) + 1))
        return self._prefixes

    def sentence_logprob(self, words: Iterable[str]) -> float:
        ctx: tuple[str, ...] = (BOS,)
        total = 0.0
        for w in [*words, EOS]:
            total += self.logprob(ctx, w)
            ctx = (*ctx, w)
        return total


class ArpaLM(WordLM):
    """ngrams[n-1]: words tuple -> (ln prob, ln backoff)."""

    def __init__(self, ngrams: list[dict[tuple[str, ...], tuple[float, float]]]):
        if not ngrams or not ngrams[0]:
            raise ArpaError("an ARPA model needs at least one unigram")
        self.ngrams = ngrams
        self.order = len(ngrams)
        self.vocab = frozenset(w for (w,) in ngrams[0] if w not in (BOS, EOS, UNK))
        unk = ngrams[0].get((UNK,))
        # a model without <unk> gives unknown words a floor far below any listed word
        self.unk_logprob = unk[0] if unk else min(p for p, _ in ngrams[0].values()) - 5 * LN10
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}

    def logprob(self, context: tuple[str, ...], word: str) -> float:
        """ln p(word | context); context is the preceding words, oldest first (<s> allowed)."""
        context = context[len(context) - (self.order - 1):] if self.order > 1 else ()
        key = (context, word)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if word not in self.vocab and word != EOS:
            word = UNK
        backoff = 0.0
        for start in range(len(context) + 1):
            hist = context[start:]
            entry = self.ngrams[len(hist)].get((*hist, word))
            if entry is not None:
                score = backoff + entry[0]
                break
            ctx_entry = self.ngrams[len(hist) - 1].get(hist) if hist else None
            if ctx_entry is not None:
                backoff += ctx_entry[1]
        else:
            score = backoff + self.unk_logprob
        if len(self._cache) > 1_000_000:
            self._cache.clear()
        self._cache[key] = score
        return score

    @classmethod
    def load(cls, path: str | Path) -> ArpaLM:
        p = Path(path)
        if not p.is_file():
            raise ArpaError(f"language model not found: {p}")
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            return cls(_parse(f, str(p)))

    def save(self, path: str | Path) -> None:
        write_arpa(path, self.ngrams)


def _parse(lines: Iterable[str], name: str) -> list[dict[tuple[str, ...], tuple[float, float]]]:
    counts: dict[int, int] = {}
    ngrams: list[dict[tuple[str, ...], tuple[float, float]]] = []
    section = None  # None: before \data\, 0: in \data\, n: in \n-grams:
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = 0
        elif line == "\\end\\":
            break
        elif line.startswith("\\") and line.endswith("-grams:"):
            try:
                section = int(line[1:-7])
            except ValueError as exc:
                raise ArpaError(f"{name}:{lineno}: bad section header {line!r}") from exc
            if section != len(ngrams) + 1:
                raise ArpaError(f"{name}:{lineno}: expected \\{len(ngrams) + 1}-grams:")
            ngrams.append({})
        elif section == 0:
            if not line.startswith("ngram ") or "=" not in line:
                raise ArpaError(f"{name}:{lineno}: expected 'ngram N=COUNT' in \\data\\")
            order_text, count_text = line[6:].split("=", 1)
            try:
                counts[int(order_text)] = int(count_text)
            except ValueError as exc:
                raise ArpaError(f"{name}:{lineno}: bad count line {line!r}") from exc
        elif section:
            parts = line.split()
            if len(parts) not in (section + 1, section + 2):
                raise ArpaError(f"{name}:{lineno}: a {section}-gram line needs a log10 prob, "
                                f"{section} words and an optional backoff, got {line!r}")
            try:
                lp = float(parts[0]) * LN10
                bo = float(parts[section + 1]) * LN10 if len(parts) == section + 2 else 0.0
            except ValueError as exc:
                raise ArpaError(f"{name}:{lineno}: not a number in {line!r}") from exc
            ngrams[section - 1][tuple(parts[1: section + 1])] = (lp, bo)
        elif section is None:
            continue  # text before \data\ is allowed (comments)
    if not ngrams:
        raise ArpaError(f"{name}: no \\1-grams: section (is this an ARPA file?)")
    for n, c in counts.items():
        if n <= len(ngrams) and len(ngrams[n - 1]) != c:
            raise ArpaError(f"{name}: \\data\\ says ngram {n}={c}, found {len(ngrams[n - 1])}")
    return ngrams


def write_arpa(path: str | Path,
               ngrams: list[dict[tuple[str, ...], tuple[float, float]]]) -> None:
    """Write natural-log n-grams as an ARPA file (gzip when the name ends in .gz)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "wt", encoding="utf-8") as f:  # type: ignore[operator]
        f.write("\\data\\\n")
        for n, table in enumerate(ngrams, start=1):
            f.write(f"ngram {n}={len(table)}\n")
        for n, table in enumerate(ngrams, start=1):
            f.write(f"\n\\{n}-grams:\n")
            last = n == len(ngrams)
            for words in sorted(table):
                lp, bo = table[words]
                line = f"{lp / LN10:.6f}\t{' '.join(words)}"
                if not last:
                    line += f"\t{bo / LN10:.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
