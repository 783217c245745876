"""Linear interpolation of word n-gram LMs (SRILM's `-mix-lm` at query time):
p(w | h) = sum_i lambda_i p_i(w | h), the weights summing to one.

The corpus LM knows the domains' phrasing, a general-English LM (e.g. published bigram counts)
knows far more word pairs; mixed, each covers the other's gaps (perplexity and WER in
docs/RESULTS.md). Mixed at query time rather than merged into one ARPA file, because a static
merge of backoff models is an approximation and this is exact; it costs one lookup per
component, cached. Same interface as ArpaLM, so LmFusion takes either; a component may also be a neural LM
(models.lm.neural.NeuralWordLM), which `load_lms` makes of a neural LM directory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from models.lm.arpa import ArpaError, ArpaLM, WordLM


class MixtureLM(WordLM):
    def __init__(self, components: Sequence[ArpaLM], weights: Sequence[float]):
        if len(components) < 2 or len(components) != len(weights):
            raise ArpaError(f"a mixture needs >= 2 LMs and one weight each, got "
                            f"{len(components)} LMs and {len(weights)} weights")
        if any(w <= 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
            raise ArpaError(f"mixture weights must be positive and sum to 1, got {list(weights)}")
        self.components = list(components)
        self.log_weights = [math.log(w) for w in weights]
        self.weights = list(weights)
        self.order = max(c.order for c in components)
        self.vocab = frozenset().union(*(c.vocab for c in components))
        self.unk_logprob = self._mix(c.unk_logprob for c in components)
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}
        self.batched = any(c.batched for c in components)  # a neural component batches

    def prefetch(self, contexts: Iterable[tuple[str, ...]]) -> None:
        """Each batching component's work ahead, on the contexts as `logprob` passes them."""
        trimmed = {self._window(c) for c in contexts}
        for component in self.components:
            if component.batched:
                component.prefetch(trimmed)

    def clear_cache(self) -> None:
        self._cache.clear()
        for component in self.components:
            component.clear_cache()

    def _mix(self, logprobs: Iterable[float]) -> float:
        terms = [lw + lp for lw, lp in zip(self.log_weights, logprobs, strict=True)]
        hi = max(terms)
        return hi + math.log(sum(math.exp(t - hi) for t in terms))

    def _window(self, context: tuple[str, ...]) -> tuple[str, ...]:
        """The last order - 1 words: what the components are asked with."""
        return context[len(context) - (self.order - 1):] if self.order > 1 else ()

    def logprob(self, context: tuple[str, ...], word: str) -> float:
        context = self._window(context)
        key = (context, word)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 1_000_000:
                self._cache.clear()
            # a word one component lacks is <unk> there: it gets that component's <unk> share
            hit = self._cache[key] = self._mix(c.logprob(context, word) for c in self.components)
        return hit


def load_one(path: str | Path) -> Any:
    """An ARPA file, or a neural LM directory (chorus lm train) seen as a word LM
    (models.lm.neural.NeuralWordLM); a bad neural LM raises ArpaError naming its file."""
    if Path(path).is_dir():
        from models.lm.neural import NeuralLmError, NeuralWordLM, load

        try:
            return NeuralWordLM(load(path))
        except NeuralLmError as exc:
            raise ArpaError(str(exc)) from None
    return ArpaLM.load(path)


def load_lms(paths: Sequence[str | Path], weights: Sequence[float] | None = None) -> Any:
    """One LM (ARPA file or neural LM directory), or several mixed with `weights` (one per
    LM, summing to 1)."""
    if not paths:
        raise ArpaError("no language model given")
    lms = [load_one(p) for p in paths]
    if len(lms) == 1:
        if weights and list(weights) != [1.0]:
            raise ArpaError(f"one LM takes no mixture weights, got {list(weights)}")
        return lms[0]
    if not weights:
        raise ArpaError(f"{len(lms)} LMs need mixture weights (one each, summing to 1)")
    return MixtureLM(lms, weights)
