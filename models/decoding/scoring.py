"""What both beam decoders (CTC prefix beam, RNN-T beam) add to acoustic scores:
hotword bonuses and word-LM fusion, advanced one character at a time (a Gram-CTC gram or a subword
unit spells several), plus the log-add they merge paths with."""

from __future__ import annotations

import math

from models.decoding.hotwords import Context, Hotwords
from models.decoding.lm_fusion import LmFusion, LmState
from models.tokenizer import CharTokenizer, char_ids

NEG_INF = float("-inf")


def logadd(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


class PrefixBias:
    """Hotwords and/or an LM over a hypothesis's characters; states are immutable pairs."""

    def __init__(self, tokenizer: CharTokenizer, hotwords: Hotwords | None,
                 lm: LmFusion | None):
        self.hotwords = hotwords
        self.lm = lm
        # token -> its characters as (char id, char): grams (Gram-CTC) spell several
        self._spell = [list(zip(char_ids(tokenizer.spell(i)), tokenizer.spell(i), strict=True))
                       for i in range(tokenizer.vocab_size)]
        # tokens that end a word (spell a space): where a neural LM's work can be batched
        self.word_enders = frozenset(i for i in range(tokenizer.vocab_size)
                                     if " " in tokenizer.spell(i))

    def start(self) -> tuple[Context, LmState | None]:
        return Context(), self.lm.start if self.lm is not None else None

    def extend(self, ctx: Context, lm: LmState | None,
               token: int) -> tuple[Context, LmState | None]:
        for ch_id, ch in self._spell[token]:
            if self.hotwords:
                ctx = self.hotwords.advance(ctx, ch_id)
            if self.lm is not None and lm is not None:
                lm = self.lm.extend(lm, ch)
        return ctx, lm

    @staticmethod
    def bias(ctx: Context, lm: LmState | None) -> float:
        """Added to a live hypothesis's acoustic score for ranking."""
        return ctx.score + (lm.rank if lm is not None else 0.0)

    def final(self, ctx: Context, lm: LmState | None) -> float:
        """Added when the hypothesis is taken as finished: completed hotwords, LM with </s>."""
        bonus = self.hotwords.final_score(ctx) if self.hotwords else 0.0
        if self.lm is not None and lm is not None:
            bonus += self.lm.final(lm)
        return bonus
