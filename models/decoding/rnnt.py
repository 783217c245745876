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

import torch

from models.decoding.hotwords import Context, Hotwords
from models.decoding.hypothesis import Emission, Hypothesis, Words, hypothesis
from models.decoding.lm_fusion import LmFusion, LmState
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

    @torch.no_grad()
    def update(self, enc: torch.Tensor) -> None:
        blank = self.tok.blank_id
        batched = self.lm is not None and self.lm.lm.batched
        enders = self.scoring.word_enders
        for t in range(enc.shape[0]):
            preds = torch.cat([h.pred for h in self.hyps])  # (H, J)
            lp = self.head.join(enc[t : t + 1], preds)  # (H, V)
            merged: dict[tuple[int, ...], _Hyp] = {}
            grow: list[tuple[_Hyp, int, float, float]] = []  # (parent, token, logp, prob)
            for i, h in enumerate(self.hyps):
                stay = h.logp + float(lp[i, blank])
                old = merged.get(h.tokens)
                if old is None:
                    merged[h.tokens] = _Hyp(h.tokens, stay, h.emissions, h.pred, h.state,
                                            h.ctx, h.lm)
                else:
                    old.logp = logadd(old.logp, stay)
                top_lp, top_id = lp[i].topk(min(self.beam_size + 1, lp.shape[1]))
                for v, k in zip(top_lp.tolist(), top_id.tolist(), strict=True):
                    if k != blank:
                        grow.append((h, k, h.logp + v, math.exp(v)))
            grow.sort(key=lambda g: g[2] + PrefixBias.bias(g[0].ctx, g[0].lm), reverse=True)
            grow = grow[: self.beam_size]
            if batched and self.lm is not None:  # the words these tokens end: one batched call
                self.lm.prefetch([h.lm for h, k, _, _ in grow if k in enders])
            frame = self.frames + t
            new: list[_Hyp] = []
            if grow:
                tokens = torch.tensor([k for _, k, _, _ in grow])
                state = _cat([h.state for h, _, _, _ in grow])
                preds_new, state_new = self.head.predict(tokens, state)
                for j, (h, k, logp, prob) in enumerate(grow):
                    key = (*h.tokens, k)
                    if key in merged:  # reached by staying on an equal sequence: log-add
                        m = merged[key]
                        m.logp = logadd(m.logp, logp)
                        continue
                    ctx, lm_state = self.scoring.extend(h.ctx, h.lm, k)
                    new.append(_Hyp(key, logp, [*h.emissions, (k, frame, prob)],
                                    preds_new[j : j + 1], _slice(state_new, j), ctx, lm_state))
            # hypotheses the LM's lexicon rules out (rank -inf, lexicon=True) leave the beam
            pool = [h for h in (*merged.values(), *new) if self._rank(h) != NEG_INF]
            pool.sort(key=self._rank, reverse=True)
            self.hyps = pool[: self.beam_size]
        self.frames += int(enc.shape[0])
        if batched and self.lm is not None and enc.shape[0]:  # the </s> partials score
            self.lm.prefetch([h.lm for h in self.hyps], final=True)

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
