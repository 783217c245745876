"""Streaming RNN-T decoding: greedy and beam search, each up to `max_symbols` tokens per frame.

Hand-written: the decoders must run chunk by chunk with the predictor state carried across
chunks and partial results in between, over our own predictor/joiner modules (k2 and
torchaudio ship theirs in native code tied to their own model classes).

Both take the encoder's joiner-space frames (T', J) per `update` and keep per-stream predictor
state. The beam search is time-synchronous (as Saon et al. 2020's, with greedy's symbol rule):
within a frame a hypothesis emits up to `max_symbols` tokens in rounds and leaves the frame
with a blank, or right after its last allowed token; equal token sequences merge (log-add,
keeping the more probable alignment's word times);
the `beam_size` best past the frame survive; each round's predictor outputs are computed in
one batch. With max_symbols=1 it is the modified beam search of k2 / icefall (a token or a
blank per frame), which loses words a character model emits two or three to a frame (the
fine-tuned template models of the cold-fusion study: 18.6 % WER against greedy's 14.7; with
4 symbols, 11.8). Like the CTC beam, it can fuse a word LM and bias hotwords (both per
character of a token); they change the ranking, not the hypotheses' acoustic scores.
With an LM whose `ilm_weight` is above 0, each emitted token's internal-LM log probability
(the joiner on a zero encoder output, renormalised over the non-blank tokens: Meng et al. 2021's
ILM estimation) is subtracted at that weight, so the external LM does not fight the predictor's
own prior; the beam keeps it per hypothesis beside the acoustic score.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import torch

from models.decoding.hotwords import Context, Hotwords
from models.decoding.hypothesis import Emission, Hypothesis, Words, hypothesis
from models.decoding.lm_fusion import LmFusion, LmState
from models.decoding.lm_fusion import prefetch_shared as _prefetch
from models.decoding.scoring import NEG_INF, PrefixBias, logadd
from models.nn.transducer import PredState, TransducerHead, batch_dim
from models.tokenizer import CharTokenizer


def _rows(state: PredState) -> list[PredState]:
    """A batch's state as one state per row (views, each with its batch axis of 1)."""
    keys = list(state)
    parts = [state[k].split(1, dim=batch_dim(k)) for k in keys]
    return [dict(zip(keys, row, strict=True)) for row in zip(*parts, strict=True)]


def _cat(states: list[PredState]) -> PredState:
    return {k: torch.cat([s[k] for s in states], dim=batch_dim(k)) for k in states[0]}


class RnntGreedyDecoder:
    def __init__(self, head: TransducerHead, tokenizer: CharTokenizer, *, frame_seconds: float,
                 max_symbols: int = 4):
        self.head = head
        self.tok = tokenizer
        self.frame_seconds = frame_seconds
        self.max_symbols = max_symbols
        self.words = Words(tokenizer, frame_seconds)  # the result, built as symbols come
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        self.words.reset()
        self.frames = 0
        self.emissions: list[Emission] = []
        self.state = self.head.init_pred_state(1)
        start = torch.full((1,), self.tok.blank_id, dtype=torch.long)
        self.pred, self.state = self.head.predict(start, self.state)  # (1, J)

    def update(self, enc: torch.Tensor) -> None:
        """enc (T', J): the next frames of this stream."""
        greedy_batch([self], [enc])

    def result(self) -> Hypothesis:
        return self.words(self.emissions)

    def finalize(self) -> Hypothesis:
        return self.result()


@torch.no_grad()
def greedy_batch(decoders: list[RnntGreedyDecoder], encs: list[torch.Tensor]) -> None:
    """Advance several streams' greedy decoders over their frames at once: one joiner call per
    (frame, symbol) for all streams still active, one predictor call for those that emitted.
    Same result as `decoders[i].update(encs[i])` each (test); all decoders share one head."""
    if not decoders:
        return
    head = decoders[0].head
    blank = decoders[0].tok.blank_id
    lengths = [int(e.shape[0]) for e in encs]
    for t in range(max(lengths)):
        active = [i for i, n in enumerate(lengths) if t < n]
        for _ in range(decoders[0].max_symbols):
            if not active:
                break
            enc_t = torch.stack([encs[i][t] for i in active])  # (A, J)
            pred = torch.cat([decoders[i].pred for i in active])  # (A, J)
            lp = head.join(enc_t, pred)  # (A, V)
            best = lp.argmax(-1).tolist()
            emit = [(j, i, k) for j, (i, k) in enumerate(zip(active, best, strict=True))
                    if k != blank]
            if not emit:
                break
            tokens = torch.tensor([k for _, _, k in emit])
            state = _cat([decoders[i].state for _, i, _ in emit])
            new_pred, new_state = head.predict(tokens, state)
            for (j, i, k), pred, row in zip(emit, new_pred.split(1), _rows(new_state),
                                            strict=True):
                d = decoders[i]
                d.emissions.append((k, d.frames + t, math.exp(float(lp[j, k]))))
                d.pred, d.state = pred, row
            active = [i for _, i, _ in emit]
    for d, n in zip(decoders, lengths, strict=True):
        d.frames += n


class _Hyp:
    __slots__ = ("tokens", "logp", "emissions", "pred", "state", "ctx", "lm", "ilm", "prior")

    def __init__(self, tokens: tuple[int, ...], logp: float, emissions: list[Emission],
                 pred: torch.Tensor, state: PredState, ctx: Context, lm: LmState | None,
                 ilm: float, prior: float):
        self.tokens = tokens
        self.logp = logp  # acoustic (RNN-T) log probability, all merged alignments
        self.ilm = ilm  # internal-LM log probability of `tokens` (0 without ILM subtraction)
        self.prior = prior  # what the ranking adds to logp: hotword + LM bias - w x ilm
        self.emissions = emissions
        self.pred = pred  # (1, J) predictor output after `tokens`
        self.state = state
        self.ctx = ctx  # hotword matching state
        self.lm = lm  # LM state (None without an LM)


# an extension: (parent, token, acoustic log p, emission prob, internal-LM log p of the tokens)
Grow = tuple[_Hyp, int, float, float, float]
# what a token sequence's hypothesis carries: predictor output (1, J) and state, hotword and
# LM states, and their bias (PrefixBias.bias)
_Entry = tuple[torch.Tensor, PredState, Context, LmState | None, float]


def _internal_lm(head: TransducerHead, preds: torch.Tensor, blank: int) -> torch.Tensor:
    """preds (H, J) -> the internal LM's log-probs (H, V): the joiner on a zero encoder output
    (the encoder projection's bias), renormalised over the non-blank tokens (blank: -inf)."""
    lp = head.join(head.enc_proj.bias.expand_as(preds), preds).clone()  # (H, V)
    lp[:, blank] = float("-inf")
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True)


def _merge(into: dict[tuple[int, ...], _Hyp], h: _Hyp) -> None:
    """Add `h` to hypotheses keyed by token sequence; an equal sequence log-adds its score and
    keeps the more probable alignment's emissions (word times)."""
    old = into.get(h.tokens)
    if old is None:
        into[h.tokens] = h
    else:
        _absorb(old, h.logp, h.emissions)


def _absorb(into: _Hyp, logp: float, emissions: list[Emission]) -> None:
    """Log-add another alignment of `into`'s tokens; its emissions win if it is more probable
    (a beam keeps unlikely paths that emitted a letter early, in silence: their times must
    not reach the result)."""
    if logp > into.logp:
        into.emissions = emissions
    into.logp = logadd(into.logp, logp)


class RnntBeamDecoder:
    def __init__(self, head: TransducerHead, tokenizer: CharTokenizer, *, frame_seconds: float,
                 beam_size: int = 4, hotwords: Hotwords | None = None, lm: LmFusion | None = None,
                 max_symbols: int = 4):
        if beam_size < 1 or max_symbols < 1:
            raise ValueError(f"beam_size and max_symbols must be >= 1, got {beam_size}, "
                             f"{max_symbols}")
        self.max_symbols = max_symbols  # tokens a hypothesis may emit per frame, as greedy's
        self.hotwords = hotwords
        self.lm = lm
        self.ilm_weight = lm.cfg.ilm_weight if lm is not None else 0.0
        self.scoring = PrefixBias(tokenizer, hotwords, lm)
        self.head = head
        self.tok = tokenizer
        self.frame_seconds = frame_seconds
        self.beam_size = beam_size
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        self.frames = 0
        state = self.head.init_pred_state(1)
        pred, state = self.head.predict(torch.full((1,), self.tok.blank_id, dtype=torch.long),
                                        state)
        ctx, lm = self.scoring.start()
        self.hyps = [_Hyp((), 0.0, [], pred, state, ctx, lm, 0.0, PrefixBias.bias(ctx, lm))]
        # what a token sequence's hypothesis carries besides its scores (the predictor after
        # it, its hotword and LM states and their bias), this frame's and the last frame's: a
        # hypothesis that left a frame by its blank proposes the same extensions again, and the
        # predictor (an LSTM) is most of a beam's cost. Two frames' worth: memory stays small.
        self._preds: dict[tuple[int, ...], _Entry] = {}
        self._preds_before: dict[tuple[int, ...], _Entry] = {}

    def _next_frame(self) -> None:
        self._preds_before, self._preds = self._preds, {}

    def _cached(self, tokens: tuple[int, ...]) -> _Entry | None:
        hit = self._preds.get(tokens)
        if hit is None:
            hit = self._preds_before.get(tokens)
            if hit is not None:
                self._preds[tokens] = hit
        return hit

    @staticmethod
    def _rank(h: _Hyp) -> float:
        return h.logp + h.prior

    def _final(self, h: _Hyp) -> float:
        return h.logp + self.scoring.final(h.ctx, h.lm) - self.ilm_weight * h.ilm

    def update(self, enc: torch.Tensor) -> None:
        """enc (T', J): the next frames of this stream."""
        beam_batch([self], [enc])

    def _round(self, active: list[_Hyp], lp: torch.Tensor, stay: dict[tuple[int, ...], _Hyp],
               last: bool, ilm: torch.Tensor | None = None) -> list[Grow]:
        """One emission round of a frame. `lp` (H, V): the joiner's log-probs for the `active`
        hypotheses (`ilm` (H, V): their internal-LM log-probs, with ILM subtraction). Each
        one's blank moves it past the frame, into `stay` (merged by token sequence); the best
        `beam_size` one-token extensions (parent, token, log p, prob, internal-LM log p) are
        returned. Unless this is the `last` round, an extension must still end the frame with
        a blank (or more tokens), so those already ranked below the beam_size-th hypothesis
        past the frame are dropped: they can only lose probability."""
        blank = self.tok.blank_id
        w = self.ilm_weight
        assert ilm is not None or not w  # beam_batch computes it whenever a weight asks
        for h, b in zip(active, lp[:, blank].tolist(), strict=True):
            old = stay.get(h.tokens)  # _merge, without building a hypothesis to merge
            if old is None:
                stay[h.tokens] = _Hyp(h.tokens, h.logp + b, h.emissions, h.pred, h.state,
                                      h.ctx, h.lm, h.ilm, h.prior)
            else:
                _absorb(old, h.logp + b, h.emissions)
        # every one-token extension's rank, (H, V), in float64 as the scores are kept: the
        # parent's rank (`_rank`) plus the token's log p (less w x its internal-LM log p);
        # the best beam_size of all at once
        parent = torch.tensor([self._rank(h) for h in active], dtype=torch.float64)
        ranks = lp.double() + parent[:, None]
        if ilm is not None and w:
            ranks -= w * ilm.double()
        ranks[:, blank] = NEG_INF
        top, flat = ranks.flatten().topk(min(self.beam_size, ranks.numel()))
        if not last and len(stay) >= self.beam_size:
            floor = heapq.nlargest(self.beam_size, map(self._rank, stay.values()))[-1]
            keep = int((top > floor).sum())
            top, flat = top[:keep], flat[:keep]
        n_tokens = lp.shape[1]
        values = lp.flatten()[flat].tolist()  # the chosen tokens' log p, one gather
        ilms = ilm.flatten()[flat].tolist() if ilm is not None and w else [0.0] * len(values)
        grow: list[Grow] = []
        for r, f, v, u in zip(top.tolist(), flat.tolist(), values, ilms, strict=True):
            if r == NEG_INF:
                break
            h = active[f // n_tokens]
            grow.append((h, f % n_tokens, h.logp + v, math.exp(v), h.ilm + u))
        return grow

    def _word_endings(self, grow: list[Grow]) -> list[LmState | None]:
        """LM states whose partial words the extensions end (tokens spelling a space)."""
        enders = self.scoring.word_enders
        return [g[0].lm for g in grow if g[1] in enders]

    def _entry(self, h: _Hyp, k: int, pred: torch.Tensor, state: PredState) -> _Entry:
        """What `h` extended by token `k` carries, given the predictor's output and state."""
        ctx, lm_state = self.scoring.extend(h.ctx, h.lm, k)
        return pred, state, ctx, lm_state, PrefixBias.bias(ctx, lm_state)

    def _extended(self, frame: int, grow: list[Grow],
                  keys: list[tuple[int, ...]]) -> list[_Hyp]:
        """The extensions (token sequences `keys`) as hypotheses, from this frame's cache
        (filled by `beam_batch` for this round's extensions)."""
        out = []
        w = self.ilm_weight
        for (h, k, logp, prob, ilm), tokens in zip(grow, keys, strict=True):
            pred, state, ctx, lm_state, bias = self._preds[tokens]
            out.append(_Hyp(tokens, logp, [*h.emissions, (k, frame, prob)], pred, state, ctx,
                            lm_state, ilm, bias - w * ilm))
        return out

    def _select(self, stay: dict[tuple[int, ...], _Hyp]) -> None:
        """The beam after a frame: the best `beam_size` past it (those the LM's lexicon rules
        out, rank -inf with lexicon=True, leave)."""
        pool = [h for h in stay.values() if self._rank(h) != NEG_INF]
        pool.sort(key=self._rank, reverse=True)
        self.hyps = pool[: self.beam_size]

    def _ranked(self) -> list[tuple[_Hyp, float]]:
        """Surviving hypotheses with their final scores (incl. LM and hotwords), best first."""
        return sorted(((h, self._final(h)) for h in self.hyps), key=lambda x: x[1], reverse=True)

    def nbest_ids(self) -> list[tuple[list[int], float]]:
        """Surviving hypotheses as (token ids, score incl. LM and hotwords), best first."""
        return [(list(h.tokens), s) for h, s in self._ranked()]

    def nbest(self) -> list[tuple[str, float]]:
        """Surviving hypotheses as (text, score incl. LM and hotwords), best first."""
        return [(self.tok.decode(ids), s) for ids, s in self.nbest_ids()]

    def nbest_hypotheses(self) -> list[tuple[Hypothesis, float]]:
        """Surviving hypotheses, timed, with their scores, best first (n-best rescoring)."""
        return [(hypothesis(h.emissions, self.tok, self.frame_seconds), s)
                for h, s in self._ranked()]

    def result(self) -> Hypothesis:
        best = max(self.hyps, key=self._final)
        return hypothesis(best.emissions, self.tok, self.frame_seconds)

    def finalize(self) -> Hypothesis:
        return self.result()


@torch.no_grad()
def beam_batch(decoders: Sequence[RnntBeamDecoder], encs: Sequence[torch.Tensor]) -> None:
    """Advance several streams' RNN-T beams over their frames ((T'_i, J) each), frame by frame
    together. Within a frame a hypothesis emits up to `max_symbols` tokens (as greedy does): it
    leaves the frame with a blank, or right after its last allowed token (with max_symbols=1
    this is the modified beam search of k2 / icefall). Each emission round is one joiner call
    for every stream's hypotheses, one predictor call for all their chosen extensions and one
    neural-LM call for the words those end; after the chunk, one for the </s> the partial
    results score. Each decoder ends where its own `update` would (up to float rounding of
    the batched matmuls); all share one head."""
    if not decoders:
        return
    head = decoders[0].head
    lengths = [int(e.shape[0]) for e in encs]
    batched = [d.lm is not None and d.lm.lm.batched for d in decoders]
    for t in range(max(lengths)):
        live = [i for i, n in enumerate(lengths) if t < n]
        for i in live:
            decoders[i]._next_frame()
        stay: dict[int, dict[tuple[int, ...], _Hyp]] = {i: {} for i in live}
        active = {i: decoders[i].hyps for i in live}
        for r in range(max(decoders[i].max_symbols for i in live)):
            rows = [i for i in live if active[i] and r < decoders[i].max_symbols]
            if not rows:
                break
            sizes = [len(active[i]) for i in rows]
            preds = torch.cat([h.pred for i in rows for h in active[i]])  # (sum H, J)
            frames = torch.cat([encs[i][t : t + 1].expand(n, -1)
                                for i, n in zip(rows, sizes, strict=True)])  # (sum H, J)
            lps = head.join(frames, preds).split(sizes)  # (H_i, V) each
            ilms: Sequence[torch.Tensor | None] = [None] * len(rows)
            if any(decoders[i].ilm_weight for i in rows):
                ilms = _internal_lm(head, preds, decoders[0].tok.blank_id).split(sizes)
            grows = {i: decoders[i]._round(active[i], lp, stay[i],
                                           last=r == decoders[i].max_symbols - 1, ilm=ilm)
                     for i, lp, ilm in zip(rows, lps, ilms, strict=True)}
            _prefetch([(decoders[i].lm, decoders[i]._word_endings(grows[i]))
                       for i in rows if batched[i]])
            # one predictor call for every extension whose token sequence is not cached
            keys = {i: [(*g[0].tokens, g[1]) for g in grows[i]] for i in rows}
            todo: dict[tuple[int, tuple[int, ...]], Grow] = {}
            for i in rows:
                for g, key in zip(grows[i], keys[i], strict=True):
                    if decoders[i]._cached(key) is None:  # a hit is now in this frame's cache
                        todo[(i, key)] = g
            if todo:
                tokens = torch.tensor([g[1] for g in todo.values()])
                new_preds, new_state = head.predict(tokens,
                                                    _cat([g[0].state for g in todo.values()]))
                for ((i, key), g), pred, state in zip(todo.items(), new_preds.split(1),
                                                       _rows(new_state), strict=True):
                    decoders[i]._preds[key] = decoders[i]._entry(g[0], g[1], pred, state)
            for i in live:
                new = decoders[i]._extended(decoders[i].frames + t, grows.get(i, []),
                                            keys.get(i, []))
                if r == decoders[i].max_symbols - 1:  # the last token allowed leaves the frame
                    for h in new:
                        _merge(stay[i], h)
                    active[i] = []
                else:
                    active[i] = new
        for i in live:
            decoders[i]._select(stay[i])
    for d, n in zip(decoders, lengths, strict=True):
        d.frames += n
    _prefetch([(d.lm, [h.lm for h in d.hyps])
               for d, b, n in zip(decoders, batched, lengths, strict=True) if b and n], final=True)
