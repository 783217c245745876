"""Pruned RNN-T loss (Kuang et al. 2022, "Pruned RNN-T for fast, memory-efficient ASR
training"), in pure PyTorch on the lattice recursion of `training.losses.rnnt`.

The full transducer loss joins every (frame, label position) pair: a (B, T, U+1, V) joiner
output whose tanh hidden layer is (B, T, U+1, J), which makes an RNN-T step cost about 4x a CTC
step on this machine (docs/RESULTS.md). Pruning keeps, for every frame, only a band of
`s_range` consecutive label positions where the alignment actually lives:

1. A "simple" joiner that is linear in its inputs, am[t] + lm[u] (two projections to the
   vocabulary), has a lattice whose normaliser is one matmul: logsumexp_v(am[t, v] + lm[u, v])
   = log(exp(am) @ exp(lm)^T) (shifted by the maxima). Its RNN-T loss trains those projections
   and its cell occupancies (the gradient of the loss with respect to each cell's transition
   scores) say which label positions each frame visits.
2. For each frame, the band start maximises the occupancy inside the band, then is made a
   valid corridor: it starts at 0, never decreases, moves by at most s_range - 1 per frame (so
   consecutive bands overlap and a path can cross), and the last frame's band holds U.
3. The real (non-linear) joiner runs only on those (B, T, s_range) cells; the lattice
   recursion runs on them with every other cell's transitions disallowed.

Training minimises simple_scale * simple + pruned. The pruned loss is exact when the band
covers all U + 1 positions (tested), and never below the full loss otherwise (fewer paths).
Hand-written because k2 (which has it) is a C++/CUDA build and this repository's losses are
plain PyTorch; the corridor rules here are derived from the lattice, not taken from k2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from training.losses.rnnt import NEG, lattice_nll

Joiner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (enc, pred) -> log-probs


def simple_terms(am: torch.Tensor, lm: torch.Tensor, targets: torch.Tensor,
                 blank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """am (B, T, V), lm (B, U+1, V) unnormalised scores; targets (B, U). Returns the blank and
    label log-probs (B, T, U+1) of the joiner log_softmax(am[t] + lm[u]) without building the
    (B, T, U+1, V) tensor; labels at u = U are NEG (no next label)."""
    b, t, _ = am.shape
    u1 = lm.shape[1]
    am_max = am.max(dim=-1, keepdim=True).values.detach()  # (B, T, 1)
    lm_max = lm.max(dim=-1, keepdim=True).values.detach()  # (B, U+1, 1)
    prod = torch.exp(am - am_max) @ torch.exp(lm - lm_max).transpose(1, 2)  # (B, T, U+1)
    norm = prod.clamp(min=1e-30).log() + am_max + lm_max.transpose(1, 2)  # (B, T, U+1)
    blank_lp = am[:, :, blank : blank + 1] + lm[:, :, blank].unsqueeze(1) - norm
    label_lp = blank_lp.new_full((b, t, u1), NEG)
    if u1 > 1:
        y = targets.long()  # (B, U)
        am_y = am.gather(2, y.unsqueeze(1).expand(b, t, u1 - 1))  # (B, T, U)
        lm_y = lm[:, :-1].gather(2, y.unsqueeze(-1)).squeeze(-1)  # (B, U)
        label_lp = torch.cat([am_y + lm_y.unsqueeze(1) - norm[:, :, :-1],
                              label_lp[:, :, -1:]], dim=2)
    return blank_lp, label_lp


def occupancy(blank_lp: torch.Tensor, label_lp: torch.Tensor, frames: torch.Tensor,
              target_lengths: torch.Tensor, nll: torch.Tensor | None = None) -> torch.Tensor:
    """Posterior probability that the alignment passes through each cell (B, T, U+1): every
    visited cell is left by exactly one transition, and the gradient of the log likelihood
    with respect to a transition's score is the posterior of taking it. `nll` (this lattice's
    loss, still in the autograd graph) saves recomputing the recursion."""
    if nll is None or not nll.requires_grad:
        with torch.enable_grad():
            blank_lp = blank_lp.detach().requires_grad_()
            label_lp = label_lp.detach().requires_grad_()
            nll = lattice_nll(blank_lp, label_lp, frames, target_lengths)
    g_blank, g_label = torch.autograd.grad(nll.sum(), [blank_lp, label_lp], retain_graph=True)
    return -(g_blank + g_label).detach()


def prune_ranges(occ: torch.Tensor, frames: torch.Tensor, target_lengths: torch.Tensor,
                 s_range: int) -> torch.Tensor:
    """occ (B, T, U+1) cell occupancies -> band starts (B, T) int64: frame t keeps label
    positions s[t] .. s[t] + s_range - 1. Rules: s[0] = 0; s[t] <= s[t+1] <= s[t] + s_range - 1;
    the band of the last valid frame holds U; s[t] <= max(U + 1 - s_range, 0). When U is too
    long for the frames (U > (T - 1)(s_range - 1) + s_range - 1) no corridor exists and the
    utterance's pruned loss is infinite (the caller drops it, like CTC's zero_infinity)."""
    if s_range < 2:
        raise ValueError(f"s_range must be >= 2 (a label moves to the next position within a "
                         f"frame's band), got {s_range}")
    b, t, u1 = occ.shape
    hi = (target_lengths.long() + 1 - s_range).clamp(min=0)  # (B,) highest start
    if u1 > s_range:
        c = torch.nn.functional.pad(occ.cumsum(dim=2), (1, 0))  # (B, T, U+2)
        mass = c[:, :, s_range:] - c[:, :, : u1 + 1 - s_range]  # (B, T, U+2-S): band at s
        start = mass.argmax(dim=2)
    else:
        start = torch.zeros(b, t, dtype=torch.long, device=occ.device)
    start = torch.minimum(start, hi.unsqueeze(1))
    cols = list(start.unbind(1))  # T x (B,)
    cols[0] = torch.zeros_like(cols[0])
    for i in range(1, t):  # forward: monotone, bounded steps
        cols[i] = torch.minimum(torch.maximum(cols[i], cols[i - 1]), cols[i - 1] + s_range - 1)
    last = frames.long() - 1
    for i in range(t - 1, 0, -1):  # backward: reach U in the last frame
        nxt = cols[i + 1] - (s_range - 1) if i + 1 < t else torch.zeros_like(hi)
        need = torch.where(last == i, hi, torch.where(last > i, nxt, torch.zeros_like(hi)))
        cols[i] = torch.maximum(cols[i], need)
    return torch.stack(cols, dim=1)


def pruned_terms(join: Joiner, enc: torch.Tensor, pred: torch.Tensor, targets: torch.Tensor,
                 starts: torch.Tensor, s_range: int,
                 blank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the joiner on the band cells only: enc (B, T, J), pred (B, U+1, J), starts (B, T).
    Returns blank and label log-probs (B, T, U+1) with NEG outside the bands."""
    b, t, j = enc.shape
    u1 = pred.shape[1]
    pos = starts.unsqueeze(-1) + torch.arange(s_range, device=enc.device)  # (B, T, S)
    clamped = pos.clamp(max=u1 - 1)  # out-of-range positions are computed, then dropped
    pred_band = pred.unsqueeze(1).expand(b, t, u1, j).gather(
        2, clamped.unsqueeze(-1).expand(b, t, s_range, j))  # (B, T, S, J)
    lp = join(enc.unsqueeze(2), pred_band)  # (B, T, S, V)
    padded = torch.cat([targets.long(), targets.new_zeros((b, 1 + s_range)).long()], dim=1)
    y = padded.gather(1, clamped.reshape(b, -1)).reshape(b, t, s_range)  # label u + 1 at u
    band_blank = lp[..., blank]  # (B, T, S)
    band_label = lp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T, S)
    width = u1 + s_range  # scatter into a wider lattice so positions past U stay distinct
    full_blank = band_blank.new_full((b, t, width), NEG).scatter(2, pos, band_blank)
    full_label = band_label.new_full((b, t, width), NEG).scatter(2, pos, band_label)
    full_label[:, :, u1 - 1 :] = NEG  # no label after the last position
    return full_blank[:, :, :u1], full_label[:, :, :u1]


def pruned_rnnt_loss(join: Joiner, enc: torch.Tensor, pred: torch.Tensor, am: torch.Tensor,
                     lm: torch.Tensor, targets: torch.Tensor, frames: torch.Tensor,
                     target_lengths: torch.Tensor, s_range: int = 5,
                     blank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance (simple, pruned) negative log likelihoods, each (B,).

    enc (B, T, J) and pred (B, U+1, J) feed `join` (-> log-probs over V); am (B, T, V) and
    lm (B, U+1, V) are the simple joiner's projections of the same encoder/predictor outputs."""
    s_blank, s_label = simple_terms(am, lm, targets, blank)
    simple = lattice_nll(s_blank, s_label, frames, target_lengths)
    occ = occupancy(s_blank, s_label, frames, target_lengths, simple)
    starts = prune_ranges(occ, frames, target_lengths, s_range)
    p_blank, p_label = pruned_terms(join, enc, pred, targets, starts, s_range, blank)
    return simple, lattice_nll(p_blank, p_label, frames, target_lengths)
