"""Decode a batch of streams' model outputs at once: what the server's dispatcher runs in its
worker thread after each batched model step (Batch Dispatch's decoding half).

Each decoder kind goes the way that batches it: CTC greedy with one argmax for all, RNN-T
greedy with one joiner / predictor call per frame for all, CTC prefix beams and RNN-T beams
frame by frame together (RNN-T: one joiner call for every stream's hypotheses, one predictor
call for their extensions; both: a shared neural LM makes one call per frame for every
stream's word endings). Every decoder ends where its own `update` would; other kinds (a
subclass, say) go one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from models.decoding.ctc_beam import CtcPrefixBeamDecoder, advance_beams
from models.decoding.ctc_greedy import CtcGreedyDecoder
from models.decoding.ctc_greedy import advance_batch as ctc_greedy_batch
from models.decoding.rnnt import RnntBeamDecoder, RnntGreedyDecoder, beam_batch, greedy_batch

# the kinds advanced together, each by its batched function over (decoders, (T', X) tensors)
BATCHED: dict[type, Callable[[list[Any], list[torch.Tensor]], None]] = {
    RnntGreedyDecoder: greedy_batch, CtcPrefixBeamDecoder: advance_beams,
    RnntBeamDecoder: beam_batch}


def advance_all(decoders: Sequence[Any], outputs: np.ndarray | Sequence[np.ndarray]) -> None:
    """decoders[b] takes outputs[b] (T', X): its stream's next model outputs (CTC log-probs or
    RNN-T encoder frames)."""
    kinds: dict[type, list[int]] = {}
    for i, d in enumerate(decoders):
        kinds.setdefault(type(d), []).append(i)
    for kind, rows in kinds.items():
        group = [decoders[i] for i in rows]
        if kind is CtcGreedyDecoder:  # one argmax over the stacked (B, T', V)
            ctc_greedy_batch(group, np.stack([np.asarray(outputs[i]) for i in rows]))
            continue
        tensors = [torch.from_numpy(np.asarray(outputs[i])) for i in rows]
        if kind in BATCHED:
            BATCHED[kind](group, tensors)
        else:
            for d, x in zip(group, tensors, strict=True):
                d.update(x)
