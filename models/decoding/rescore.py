"""N-best rescoring of finals with a neural LM (the cheaper alternative to shallow fusion).

The beam decoder (CTC prefix beam or RNN-T beam, with or without the n-gram fused) ends with
its N surviving hypotheses and their scores; the neural LM scores all N sentences in one batched
call, and the final is the hypothesis maximising score + weight x ln p_LM(words + </s>). The LM
runs once per final, not once per frame and hypothesis, so its cost is bounded by the finals'
rate. With a TCNLM the preceding finals of the stream can be its topic context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.decoding.hypothesis import Hypothesis


@dataclass(frozen=True)
class Rescorer:
    lm: Any  # models.lm.neural.NeuralLm
    weight: float = 0.3
    nbest: int = 8

    def best_index(self, hyps: list[tuple[str, float]], context: list[str] | None = None) -> int:
        """Index of the best of `hyps` ((text, decoder log score), best first) after adding
        weight x ln p_LM; only the first `nbest` compete; -1 when there are none."""
        hyps = hyps[: self.nbest]
        if not hyps:
            return -1
        words = [text.split() for text, _ in hyps]
        lps = self.lm.sentence_logprobs(words, [list(context or [])] * len(words))
        scores = [s + self.weight * lp for (_, s), lp in zip(hyps, lps, strict=True)]
        return max(range(len(hyps)), key=scores.__getitem__)

    def choose(self, decoder: Any, context: list[str] | None = None) -> Hypothesis:
        """The final of `decoder` after rescoring its n-best: the server's sessions, the
        offline transcriber and evaluation all decide through this. A decoder without an
        n-best (greedy) keeps its own final."""
        if not hasattr(decoder, "nbest_hypotheses"):
            return decoder.finalize()
        ranked = decoder.nbest_hypotheses()
        i = self.best_index([(h.text, s) for h, s in ranked], context)
        return ranked[i][0] if i >= 0 else decoder.finalize()
