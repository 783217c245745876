"""Streaming CTC prefix beam search; its state (the beam) is carried across chunks.

Hand-written rather than taken from a library: the streaming contract needs `update()` per
chunk with partials in between and per-token frames for word timestamps, which the offline
decoders (e.g. torchaudio's, which also needs the native build we cannot use) do not expose.

The algorithm is the standard CTC prefix search (Graves 2012, Hannun et al. 2014): each prefix
keeps two log scores, paths ending in blank and paths ending in its last token; per frame only
tokens above `token_floor` (log prob) and in the frame's `top_k` are tried; the `beam_size`
best prefixes survive, and a new prefix is only built (LM and hotword states) while a bound
on its score can still enter the beam (exact: the same beam as building every one). A prefix
is a node pointing at its parent, so extending one is O(1) and pruned prefixes are freed
(memory stays bounded on hour-long streams). A token's frame is the frame where its emission
was most probable while its prefix was alive: the CTC spike.
An optional word n-gram LM is fused per prefix (models.decoding.lm_fusion).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.decoding.hotwords import Context, Hotwords
from models.decoding.hypothesis import Emission, Hypothesis, hypothesis
from models.decoding.lm_fusion import LmFusion, LmState
from models.decoding.lm_fusion import prefetch_shared as _prefetch
from models.decoding.scoring import NEG_INF, PrefixBias, logadd
from models.tokenizer import CharTokenizer


class _Node:
    """A prefix: its last token, parent prefix, and where that token spiked."""

    __slots__ = ("token", "parent", "frame", "peak", "ctx", "lm", "bias")

    def __init__(self, token: int, parent: _Node | None, ctx: Context, lm: LmState | None):
        self.token = token
        self.parent = parent
        self.frame = -1
        self.peak = NEG_INF  # best emission log prob seen for this token
        self.ctx = ctx  # hotword matching state of this prefix
        self.lm = lm  # language-model state of this prefix (None without an LM)
        self.bias = PrefixBias.bias(ctx, lm)  # added to its ranking

    def emissions(self) -> list[Emission]:
        out: list[Emission] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            out.append((node.token, node.frame, math.exp(node.peak)))
            node = node.parent
        return out[::-1]


@dataclass(frozen=True)
class BeamConfig:
    beam_size: int = 8
    top_k: int = 8  # tokens tried per frame
    # tokens below this log prob are not tried (1e-3: the same dev WER as 1e-4 with the shipped
    # model at beam 16 and 32, for ~20 % less decoding CPU; docs/RESULTS.md, session 17) ...
    token_floor: float = math.log(1e-3)
    # ... but a stream with hotwords tries tokens down to this one: a boost can only lift a
    # letter the beam tries (oracle hotwords on dev's rare words, boost 4: recall 87.9 % at
    # 1e-3, 89.8 at 1e-4, no gain below; training.experiments.hotword_recall)
    hotword_token_floor: float = math.log(1e-4)


class CtcPrefixBeamDecoder:
    def __init__(self, tokenizer: CharTokenizer, *, frame_seconds: float,
                 config: BeamConfig | None = None, hotwords: Hotwords | None = None,
                 lm: LmFusion | None = None):
        self.tok = tokenizer
        self.frame_seconds = frame_seconds
        self.cfg = config or BeamConfig()
        self.hotwords = hotwords
        self.lm = lm
        self.scoring = PrefixBias(tokenizer, hotwords, lm)
        self.floor = (min(self.cfg.token_floor, self.cfg.hotword_token_floor) if hotwords
                      else self.cfg.token_floor)
        # per token: the most a new prefix's bias can gain over its parent's open bias
        boost = hotwords.max_boost if hotwords else 0.0
        bonus = max(lm.cfg.word_bonus, 0.0) if lm is not None else 0.0
        self._gain = [len(sp) * boost + sp.count(" ") * bonus
                      for sp in (tokenizer.spell(i) for i in range(tokenizer.vocab_size))]
        if self.cfg.beam_size < 1 or self.cfg.top_k < 1:
            raise ValueError(f"beam_size and top_k must be >= 1, got {self.cfg}")
        self.reset()

    def reset(self) -> None:
        self.frames = 0
        self.root = _Node(self.tok.blank_id, None, *self.scoring.start())
        # prefix -> (log p ending in blank, log p ending in its last token)
        self.beam: dict[_Node, tuple[float, float]] = {self.root: (0.0, NEG_INF)}

    def update(self, log_probs: torch.Tensor) -> None:
        """log_probs (T', V) for the next T' frames of this stream."""
        advance_beams([self], [log_probs])

    def _frames(self, log_probs: torch.Tensor) -> list[tuple[float, list[tuple[int, float]]]]:
        """log_probs (T', V) -> per frame: (blank log prob, the tokens tried: (id, log prob))."""
        if log_probs.shape[0] == 0:
            return []
        k = min(self.cfg.top_k, log_probs.shape[-1])
        top_lp, top_id = log_probs.topk(k, dim=-1)
        blank = self.tok.blank_id
        return [(row, [(c, lp) for c, lp in zip(ids, lps, strict=True)
                       if c != blank and lp >= self.floor])
                for lps, ids, row in zip(top_lp.tolist(), top_id.tolist(),
                                         log_probs[:, blank].tolist(), strict=True)]

    def _word_endings(self, cands: list[tuple[int, float]]) -> list[LmState | None]:
        """LM states whose partial words this frame's candidates may end (none unless a
        candidate spells a space)."""
        enders = self.scoring.word_enders
        if not any(c in enders for c, _ in cands):
            return []
        return [n.lm for n in self.beam]

    def _step(self, frame: int, blank_lp: float, cands: list[tuple[int, float]]) -> None:
        # live prefixes: (acoustic log p ending in blank, ending in its last token, the order
        # it was first reached in: ties in score keep that order)
        nxt: dict[_Node, list[float]] = {}
        # prefixes one token longer than a live one and not live themselves, as (bound on the
        # ranking score, parent, token, acoustic log p, emission log p, order reached): one
        # path each this frame. Their nodes (and LM / hotword states, the costly part) are only made for those
        # that can still enter the beam: see _select.
        new: list[tuple[float, _Node, int, float, float, int]] = []
        gain = self._gain
        # live prefixes by (parent, token), so re-extending a parent finds its existing child
        index: dict[tuple[_Node | None, int], _Node] = {(n.parent, n.token): n for n in self.beam}

        def slot(node: _Node) -> list[float]:
            s = nxt.get(node)
            if s is None:
                s = nxt[node] = [NEG_INF, NEG_INF, len(nxt) + len(new)]
            return s

        for node, (pb, pnb) in self.beam.items():
            total = logadd(pb, pnb)
            open_bias = node.ctx.score + (node.lm.score if node.lm is not None else 0.0)
            s = slot(node)
            s[0] = logadd(s[0], total + blank_lp)  # stay, via blank
            for c, lp in cands:
                if c == node.token:
                    s[1] = logadd(s[1], pnb + lp)  # repeat collapses into the same prefix
                    via = pb + lp  # a new token only after a blank
                else:
                    via = total + lp
                if via == NEG_INF:
                    continue
                child = index.get((node, c))
                if child is None:
                    new.append((via + open_bias + gain[c], node, c, via, lp, len(nxt) + len(new)))
                    continue
                if lp > child.peak:
                    child.peak, child.frame = lp, frame
                cs = slot(child)
                cs[1] = logadd(cs[1], via)
        self._select(frame, nxt, new)

    def _select(self, frame: int, nxt: dict[_Node, list[float]],
                new: list[tuple[float, _Node, int, float, float, int]]) -> None:
        """Keep the `beam_size` best prefixes by acoustic score + bias.

        A new prefix's bias is at most its parent's without the provisional partial-word
        penalty (`open_bias`), plus for each character it spells the largest hotword boost and
        for each space the word bonus (`_gain`; it rests on LM weight and OOV penalty >= 0,
        which LmConfig enforces, and on a well-formed LM's log probs being <= 0). So candidates
        are made best bound first, and once a bound falls below the `beam_size`-th best exact
        score (less a rounding margin) the rest cannot enter: the same beam, in the same order
        (a tie goes to the prefix reached first), as making and scoring every extension, for a
        fraction of the work (the shipped model at beam 16 with its 3-gram proposes ~60
        extensions a frame and makes ~18; decoding ~1.7x faster)."""
        k = self.cfg.beam_size
        scored: list[tuple[float, int, _Node, float, float]] = [
            (logadd(s[0], s[1]) + n.bias, int(s[2]), n, s[0], s[1]) for n, s in nxt.items()
            if n.bias != NEG_INF]  # a prefix the lexicon rules out (bias -inf) leaves the beam
        floor = heapq.nlargest(k, (e[0] for e in scored))
        heapq.heapify(floor)  # the k best exact scores so far, smallest first
        new.sort(key=lambda e: e[0], reverse=True)
        for bound, parent, c, via, lp, order in new:
            if len(floor) >= k and bound < floor[0] - 1e-9:
                break
            child = _Node(c, parent, *self.scoring.extend(parent.ctx, parent.lm, c))
            child.peak, child.frame = lp, frame
            if child.bias == NEG_INF:
                continue
            score = via + child.bias
            scored.append((score, order, child, NEG_INF, via))
            if len(floor) < k:
                heapq.heappush(floor, score)
            elif score > floor[0]:
                heapq.heapreplace(floor, score)
        scored.sort(key=lambda e: (-e[0], e[1]))  # best first; a tie: the first reached
        self.beam = {n: (pb, pnb) for _, _, n, pb, pnb in scored[:k]}

    def _final(self, node: _Node, scores: tuple[float, float]) -> float:
        """Ranking score of a finished prefix: acoustic + completed hotwords + LM (with </s>)."""
        return logadd(*scores) + self.scoring.final(node.ctx, node.lm)

    def best(self) -> _Node:
        return max(self.beam.items(), key=lambda kv: self._final(*kv))[0]

    def _ranked(self) -> list[tuple[_Node, float]]:
        """The surviving prefixes with their final ranking scores, best first."""
        return sorted(((n, self._final(n, s)) for n, s in self.beam.items()),
                      key=lambda kv: kv[1], reverse=True)

    def nbest_ids(self) -> list[tuple[list[int], float]]:
        """All surviving prefixes as (token ids, log prob incl. hotword bonus), best first: the
        very tokens scored (a subword text re-encoded may split otherwise)."""
        return [([k for k, _, _ in n.emissions()], score) for n, score in self._ranked()]

    def nbest(self) -> list[tuple[str, float]]:
        """All surviving prefixes as (text, log prob incl. hotword bonus), best first."""
        return [(self.tok.decode(ids), score) for ids, score in self.nbest_ids()]

    def nbest_hypotheses(self) -> list[tuple[Hypothesis, float]]:
        """All surviving prefixes as timed hypotheses with their ranking scores, best first
        (what n-best rescoring of a final chooses from)."""
        return [(hypothesis(n.emissions(), self.tok, self.frame_seconds), score)
                for n, score in self._ranked()]

    def result(self) -> Hypothesis:
        return hypothesis(self.best().emissions(), self.tok, self.frame_seconds)

    def finalize(self) -> Hypothesis:
        return self.result()


def advance_beams(decoders: Sequence[CtcPrefixBeamDecoder],
                  log_probs: Sequence[torch.Tensor]) -> None:
    """Advance several streams' beams by their next frames ((T'_i, V) each), frame by frame
    together, so that a neural LM they share (a bundle's) makes one batched call per frame for
    the word endings of every stream's hypotheses, and one after the last frame for the </s>
    their partial results score. Each decoder ends exactly where its own `update` would: the
    LM work is only done ahead, never changed (an n-gram LM does none)."""
    plans = [d._frames(lp) for d, lp in zip(decoders, log_probs, strict=True)]
    batched = [d.lm is not None and d.lm.lm.batched for d in decoders]
    for t in range(max((len(p) for p in plans), default=0)):
        live = [(d, p[t], b) for d, p, b in zip(decoders, plans, batched, strict=True)
                if t < len(p)]
        _prefetch([(d.lm, d._word_endings(cands)) for d, (_, cands), b in live if b])
        for d, (blank_lp, cands), _ in live:
            d._step(d.frames + t, blank_lp, cands)
    for d, p in zip(decoders, plans, strict=True):
        d.frames += len(p)
    _prefetch([(d.lm, [n.lm for n in d.beam]) for d, b in zip(decoders, batched, strict=True)
               if b], final=True)
