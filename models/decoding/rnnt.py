"""Streaming RNN-T decoding: greedy (up to `max_symbols` per frame) and modified beam search.

Hand-written: the decoders must run chunk by chunk with the predictor state carried across
chunks and partial results in between, over our own predictor/joiner modules (k2 and
torchaudio ship theirs in native code tied to their own model classes).

Both take the encoder's joiner-space frames (T', J) per `update` and keep per-stream predictor
state. Modified beam search (Kang et al. 2022, as in k2/icefall): per frame every hypothesis
either takes blank (stays) or emits one token; equal token sequences merge (log-add); the
`beam_size` best survive; new predictor outputs are computed in one batch per frame. Like
the CTC beam, it can fuse a word n-gram LM and bias hotwords (both per character of a token);
they change the ranking, not the hypotheses' acoustic scores.
"""

from __future__ import annotations

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


def _slice(state: PredState, i: int) -> PredState:
    return {k: v.narrow(batch_dim(k), i, 1) for k, v in state.items()}


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
            for n, (j, i, k) in enumerate(emit):
                d = decoders[i]
                d.emissions.append((k, d.frames + t, math.exp(float(lp[j, k]))))
                d.pred, d.state = new_pred[n : n + 1], _slice(new_state, n)
            active = [i for _, i, _ in emit]
    for d, n in zip(decoders, lengths, strict=True):
        d.frames += n


class _Hyp:
    __slots__ = ("tokens", "logp", "emissions", "pred", "state", "ctx", "lm")

    def __init__(self, tokens: tuple[int, ...], logp: float, emissions: list[Emission],
                 pred: torch.Tensor, state: PredState, ctx: Context, lm: LmState | None):
        self.tokens = tokens
        self.logp = logp  # acoustic (RNN-T) log probability, all merged alignments
        self.emissions = emissions
        self.pred = pred  # (1, J) predictor output after `tokens`
        self.state = state
        self.ctx = ctx  # hotword matching state
        self.lm = lm  # LM state (None without an LM)


class RnntBeamDecoder:
    def __init__(self, head: TransducerHead, tokenizer: CharTokenizer, *, frame_seconds: float,
                 beam_size: int = 4, hotwords: Hotwords | None = None, lm: LmFusion | None = None):
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.hotwords = hotwords
        self.lm = lm
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
        self.hyps = [_Hyp((), 0.0, [], pred, state, *self.scoring.start())]

    @staticmethod
    def _rank(h: _Hyp) -> float:
        return h.logp + PrefixBias.bias(h.ctx, h.lm)

    def _final(self, h: _Hyp) -> float:
        return h.logp + self.scoring.final(h.ctx, h.lm)

    def update(self, enc: torch.Tensor) -> None:
        """enc (T', J): the next frames of this stream."""
        beam_batch([self], [enc])

    def _expand(self, lp: torch.Tensor) -> tuple[dict[tuple[int, ...], _Hyp],
                                                 list[tuple[_Hyp, int, float, float]]]:
        """One frame's joiner log-probs (H, V) for the hypotheses -> those that stay (blank,
        merged by token sequence) and the best `beam_size` one-token extensions (parent,
        token, log p, its prob)."""
        blank = self.tok.blank_id
        merged: dict[tuple[int, ...], _Hyp] = {}
        grow: list[tuple[_Hyp, int, float, float]] = []
        for i, h in enumerate(self.hyps):
            stay = h.logp + float(lp[i, blank])
            old = merged.get(h.tokens)
            if old is None:
                merged[h.tokens] = _Hyp(h.tokens, stay, h.emissions, h.pred, h.state, h.ctx, h.lm)
            else:
                old.logp = logadd(old.logp, stay)
            top_lp, top_id = lp[i].topk(min(self.beam_size + 1, lp.shape[1]))
            for v, k in zip(top_lp.tolist(), top_id.tolist(), strict=True):
                if k != blank:
                    grow.append((h, k, h.logp + v, math.exp(v)))
        grow.sort(key=lambda g: g[2] + PrefixBias.bias(g[0].ctx, g[0].lm), reverse=True)
        return merged, grow[: self.beam_size]

    def _word_endings(self, grow: list[tuple[_Hyp, int, float, float]]) -> list[LmState | None]:
        """LM states whose partial words the extensions end (tokens spelling a space)."""
        enders = self.scoring.word_enders
        return [h.lm for h, k, _, _ in grow if k in enders]

    def _advance(self, frame: int, merged: dict[tuple[int, ...], _Hyp],
                 grow: list[tuple[_Hyp, int, float, float]], preds: torch.Tensor,
                 state: PredState | None) -> None:
        """Finish a frame: `preds` (G, J) / `state` are the predictor after each extension."""
        new: list[_Hyp] = []
        for j, (h, k, logp, prob) in enumerate(grow):
            key = (*h.tokens, k)
            if key in merged:  # reached by staying on an equal sequence: log-add
                m = merged[key]
                m.logp = logadd(m.logp, logp)
                continue
            assert state is not None
            ctx, lm_state = self.scoring.extend(h.ctx, h.lm, k)
            new.append(_Hyp(key, logp, [*h.emissions, (k, frame, prob)], preds[j : j + 1],
                            _slice(state, j), ctx, lm_state))
        # hypotheses the LM's lexicon rules out (rank -inf, lexicon=True) leave the beam
        pool = [h for h in (*merged.values(), *new) if self._rank(h) != NEG_INF]
        pool.sort(key=self._rank, reverse=True)
        self.hyps = pool[: self.beam_size]

    def _ranked(self) -> list[tuple[_Hyp, float]]:
        """Surviving hypotheses with their final scores (incl. LM and hotwords), best first."""
        return sorted(((h, self._final(h)) for h in self.hyps), key=lambda x: x[1], reverse=True)

    def nbest(self) -> list[tuple[str, float]]:
        """Surviving hypotheses as (text, score incl. LM and hotwords), best first."""
        return [(self.tok.decode(list(h.tokens)), s) for h, s in self._ranked()]

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
    together: one joiner call for every stream's hypotheses, one predictor call for all their
    chosen extensions, one neural-LM call for all the words those end, and one after the
    chunk for the </s> the partial results score. Each decoder ends where its own `update`
    would (up to float rounding of the batched matmuls); all share one head."""
    if not decoders:
        return
    head = decoders[0].head
    lengths = [int(e.shape[0]) for e in encs]
    batched = [d.lm is not None and d.lm.lm.batched for d in decoders]
    for t in range(max(lengths)):
        live = [i for i, n in enumerate(lengths) if t < n]
        sizes = [len(decoders[i].hyps) for i in live]
        preds = torch.cat([h.pred for i in live for h in decoders[i].hyps])  # (sum H, J)
        frames = torch.cat([encs[i][t : t + 1].expand(n, -1)
                            for i, n in zip(live, sizes, strict=True)])  # (sum H, J)
        lps = head.join(frames, preds).split(sizes)  # (H_i, V) each
        plans = [(i, *decoders[i]._expand(lp)) for i, lp in zip(live, lps, strict=True)]
        _prefetch([(decoders[i].lm, decoders[i]._word_endings(grow))
                   for i, _, grow in plans if batched[i]])
        grows = [g for _, _, grow in plans for g in grow]
        new_preds, new_state = None, None
        if grows:
            tokens = torch.tensor([k for _, k, _, _ in grows])
            new_preds, new_state = head.predict(tokens, _cat([h.state for h, _, _, _ in grows]))
        at = 0
        for i, merged, grow in plans:
            n = len(grow)
            part = (None if new_state is None or not n else
                    {k: v.narrow(batch_dim(k), at, n) for k, v in new_state.items()})
            rows = new_preds[at : at + n] if new_preds is not None else torch.empty(0)
            decoders[i]._advance(decoders[i].frames + t, merged, grow, rows, part)
            at += n
    for d, n in zip(decoders, lengths, strict=True):
        d.frames += n
    _prefetch([(d.lm, [h.lm for h in d.hyps])
               for d, b, n in zip(decoders, batched, lengths, strict=True) if b and n], final=True)
