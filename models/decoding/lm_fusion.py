"""Shallow fusion of a word n-gram LM into the CTC prefix beam search (Deep Speech 2, sec. 3.8).

A prefix is ranked by  ln p_ctc(prefix) + alpha * ln p_lm(words) + beta * |words|
  - oov_penalty * |words outside the vocabulary|
where a word is scored when its space arrives (or at the end of the utterance, with </s>).
Without the OOV penalty the beam learns to glue words into one unknown "word" (one <unk>
costs less than three real words), which dev decoding showed.
A partial word that is not the start of any vocabulary word already pays the <unk> price, so
misspelled prefixes fall out of the beam early instead of at their space (the lexicon check).
With `lookahead=True` a partial word that is the start of vocabulary words pays, until its
space, alpha * ln of the unigram probability mass of the words it starts (0 for no letter,
the word's unigram at its last): the LM's price arrives a letter at a time instead of in one
lump at the space, so a hypothesis in the middle of a word no longer outranks one that has
just paid for a whole word (the look-ahead of Hori et al. 2018's word-LM decoding, with a
unigram estimate; the lump made the RNN-T beam + LM delete words at small beams).
With `lexicon=True` the vocabulary is a hard constraint instead (words through the prefix set
of the LM's vocabulary, as a lexicon-constrained decoder like Kaldi's or flashlight's would):
a prefix that leaves it is impossible (rank -inf) and the beams drop it.

`LmState` is immutable and hangs off a beam node: extending a prefix by one character makes a
new state in O(1) (dict lookups), so fusion adds no per-frame cost beyond new prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.lm.arpa import BOS, EOS, WordLM

NEG_INF = float("-inf")


@dataclass(frozen=True)
class LmConfig:
    weight: float = 0.5  # alpha
    word_bonus: float = 1.0  # beta, per word
    oov_penalty: float = 10.0  # subtracted per word outside the LM's vocabulary (natural log)
    lexicon: bool = False  # only words of the LM's vocabulary (a hard constraint, not a penalty)
    lookahead: bool = False  # partial words pay alpha * ln(unigram mass of their completions)
    # RNN-T only: the weight its internal LM's log probability is subtracted at (models.decoding
    # .rnnt; a CTC model has no internal LM, and its beam ignores this)
    ilm_weight: float = 0.0

    def __post_init__(self) -> None:
        # a negative weight would reward unlikely words, a negative penalty unknown ones; the
        # beam's bound on a prefix's score (models.decoding.ctc_beam) also rests on both
        if not self.weight >= 0 or not self.oov_penalty >= 0 or not self.ilm_weight >= 0:
            raise ValueError(f"LM weight, oov_penalty and ilm_weight must be >= 0, got weight "
                             f"{self.weight}, oov_penalty {self.oov_penalty}, ilm_weight "
                             f"{self.ilm_weight}")


@dataclass(frozen=True)
class LmState:
    context: tuple[str, ...] = (BOS,)
    partial: str = ""
    score: float = 0.0  # alpha * ln p(completed words) + beta * their number
    partial_penalty: float = 0.0  # provisional <unk> price of an out-of-lexicon partial word

    @property
    def rank(self) -> float:
        return self.score + self.partial_penalty


class LmFusion:
    def __init__(self, lm: WordLM, config: LmConfig | None = None):
        self.lm = lm
        self.cfg = config or LmConfig()
        self.keep = max(lm.order - 1, 1)
        self.start = LmState()
        self.unk_price = (NEG_INF if self.cfg.lexicon else
                          self.cfg.weight * lm.unk_logprob - self.cfg.oov_penalty)
        self.look = _lookahead(lm, self.cfg.weight) if self.cfg.lookahead else {}

    def _word(self, state: LmState) -> tuple[tuple[str, ...], float]:
        word = state.partial
        lp = self.cfg.weight * self.lm.logprob(state.context, word)
        if word not in self.lm.vocab:
            lp = NEG_INF if self.cfg.lexicon else lp - self.cfg.oov_penalty
        ctx = (*state.context, word)[-self.keep:]
        return ctx, state.score + lp + self.cfg.word_bonus

    def extend(self, state: LmState, char: str) -> LmState:
        if char == " ":
            if not state.partial:
                return state  # repeated or leading spaces add no word
            ctx, score = self._word(state)
            return LmState(ctx, "", score, 0.0)
        partial = state.partial + char
        penalty = (self.look.get(partial, 0.0) if partial in self.lm.prefixes
                   else self.unk_price)
        return LmState(state.context, partial, state.score, penalty)

    def word_contexts(self, states: Iterable[LmState | None]) -> set[tuple[str, ...]]:
        """The contexts the partial words of `states` are scored in when a space comes."""
        return {s.context for s in states if s is not None and s.partial}

    def final_contexts(self, states: Iterable[LmState | None]) -> set[tuple[str, ...]]:
        """The contexts `final` scores in: the partial word's, then </s>'s after it."""
        live = [s for s in states if s is not None]
        return self.word_contexts(live) | {
            (*s.context, s.partial)[-self.keep:] if s.partial else s.context for s in live}

    def final(self, state: LmState) -> float:
        """Fusion score of the prefix as a finished utterance: last word and </s> scored."""
        ctx, score = (self._word(state) if state.partial else (state.context, state.score))
        return score + self.cfg.weight * self.lm.logprob(ctx, EOS)


def _lookahead(lm: WordLM, weight: float) -> dict[str, float]:
    """Every vocabulary prefix -> weight * ln(sum of the unigram probabilities of the words it
    starts) (<= 0). Unigrams need a context-free `logprob(())`: an n-gram's; a neural LM's
    next-word distribution depends on its context, so it is refused by name."""
    import math

    if lm.batched:
        raise ValueError("LM lookahead needs an n-gram LM (unigram probabilities); this LM is "
                         "neural: decode without lookahead")
    mass: dict[str, float] = {}
    for w in lm.vocab:
        p = math.exp(lm.logprob((), w))
        for i in range(1, len(w) + 1):
            mass[w[:i]] = mass.get(w[:i], 0.0) + p
    return {k: weight * min(math.log(v), 0.0) if v > 0 else NEG_INF for k, v in mass.items()}


def prefetch_shared(work: list[tuple[LmFusion | None, list[LmState | None]]],
                    final: bool = False) -> None:
    """Work ahead for a neural LM (an n-gram has none): one `prefetch` per batching word LM
    for all the (fusion, LM states) pairs that share it (a beam's hypotheses, many streams of
    one bundle): the contexts their partial words are scored in when a space comes, and with
    `final` also those </s> is scored in (a partial result). Scores are unchanged: a context
    missed here is computed when asked."""
    groups: dict[int, tuple[Any, set[tuple[str, ...]], set[tuple[str, ...]]]] = {}
    for fusion, states in work:
        if fusion is None or not states or not fusion.lm.batched:
            continue
        lm, words, ends = groups.setdefault(id(fusion.lm), (fusion.lm, set(), set()))
        words |= fusion.word_contexts(states)
        if final:
            ends |= fusion.final_contexts(states)
    for lm, words, ends in groups.values():
        lm.prefetch(words)
        if ends:
            lm.prefetch(ends)
