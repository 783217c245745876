"""The RNN-T (transducer) loss in pure PyTorch: log-space forward over anti-diagonals.

Hand-written because torchaudio's `rnnt_loss` is native code that needs the CUDA build of
torch (unusable with the CPU wheel here) and k2/warp-transducer are C++/CUDA builds.

Graves (2012): with log_probs[b, t, u, :] the joiner's output for frame t after u labels,
  alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u],  alpha[t, u-1] + label[t, u-1])
  loss = -(alpha[T-1, U] + blank[T-1, U])
where label[t, u] = log_probs[t, u, y[u]]. Cells on one anti-diagonal d = t + u depend only on
diagonal d - 1, so each of the T + U steps is one vectorised op over the batch and the diagonal
(a Python loop over T + U, not over T x U). Autograd provides the gradient (tested by gradcheck).
Invalid cells hold a large finite negative instead of -inf so logaddexp never makes NaN grads.
"""

from __future__ import annotations

import torch

from training.losses import reduce

NEG = -1e30


def _skew(x: torch.Tensor, diagonals: int) -> torch.Tensor:
    """x (B, T, U1) -> (B, D, U1) with out[b, d, u] = x[b, d - u, u] (NEG where d - u is not
    a frame)."""
    b, t, u1 = x.shape
    d = torch.arange(diagonals, device=x.device).unsqueeze(1)  # (D, 1)
    u = torch.arange(u1, device=x.device).unsqueeze(0)  # (1, U1)
    frame = d - u  # (D, U1)
    valid = (frame >= 0) & (frame < t)
    gathered = x[:, frame.clamp(0, t - 1), u.expand_as(frame)]  # (B, D, U1)
    return gathered.masked_fill(~valid, NEG)


def rnnt_loss(log_probs: torch.Tensor, targets: torch.Tensor, frames: torch.Tensor,
              target_lengths: torch.Tensor, blank: int = 0,
              reduction: str = "mean") -> torch.Tensor:
    """log_probs (B, T, U+1, V) log-softmaxed joiner outputs; targets (B, U) int64 (padded);
    frames (B,) valid T per utterance; target_lengths (B,) valid U. Returns the negative log
    likelihood: per utterance (reduction="none"), summed ("sum") or averaged ("mean")."""
    if log_probs.dim() != 4:
        raise ValueError(f"log_probs must be (B, T, U+1, V), got shape {tuple(log_probs.shape)}")
    b, t, u1, _ = log_probs.shape
    if targets.shape[1] + 1 != u1 and not (targets.shape[1] == 0 and u1 == 1):
        raise ValueError(f"targets (B, U) needs U + 1 = {u1}, got U = {targets.shape[1]}")
    if bool((frames < 1).any()) or bool((frames > t).any()) or bool((target_lengths > u1 - 1).any()):
        raise ValueError("frames must be in [1, T] and target_lengths in [0, U]")
    blank_lp = log_probs[..., blank]  # (B, T, U+1)
    if u1 > 1:
        idx = targets.long().clamp(min=0).unsqueeze(1).expand(b, t, u1 - 1).unsqueeze(-1)
        label_lp = log_probs[:, :, :-1, :].gather(-1, idx).squeeze(-1)  # (B, T, U)
        label_lp = torch.cat([label_lp, label_lp.new_full((b, t, 1), NEG)], dim=2)  # (B, T, U+1)
    else:
        label_lp = blank_lp.new_full((b, t, 1), NEG)
    return reduce(lattice_nll(blank_lp, label_lp, frames, target_lengths), reduction)


def lattice_nll(blank_lp: torch.Tensor, label_lp: torch.Tensor, frames: torch.Tensor,
                target_lengths: torch.Tensor) -> torch.Tensor:
    """The forward recursion on per-cell transition scores: blank_lp[b, t, u] (leave frame t
    after u labels) and label_lp[b, t, u] (emit label u + 1 in frame t), both (B, T, U+1), NEG
    where a transition is not allowed (the last column's labels; cells a pruned loss left out).
    Returns the per-utterance negative log likelihood (B,)."""
    b, t, u1 = blank_lp.shape
    diagonals = t + u1 - 1
    blank_d = _skew(blank_lp, diagonals)  # blank_d[:, d, u] = blank[d - u, u]
    label_d = _skew(label_lp, diagonals)
    neg_col = blank_lp.new_full((b, 1), NEG)
    alpha = torch.cat([blank_lp.new_zeros((b, 1)), blank_lp.new_full((b, u1 - 1), NEG)], dim=1)
    alphas = [alpha]  # alphas[d][:, u] = alpha[d - u, u]
    for d in range(1, diagonals):
        from_above = alpha + blank_d[:, d - 1]  # (t-1, u) -> (t, u) by a blank
        from_left = torch.cat([neg_col, alpha[:, :-1] + label_d[:, d - 1, :-1]], dim=1)  # (t, u-1)
        alpha = torch.logaddexp(from_above, from_left)
        # cells whose frame d - u is beyond T are not alignments: keep them out
        u = torch.arange(u1, device=alpha.device)
        alpha = alpha.masked_fill((d - u >= t).unsqueeze(0), NEG)
        alphas.append(alpha)
    stacked = torch.stack(alphas, dim=1)  # (B, D, U+1)
    rows = torch.arange(b, device=blank_lp.device)
    last_d = frames.long() - 1 + target_lengths.long()
    ll = stacked[rows, last_d, target_lengths.long()] + \
        blank_lp[rows, frames.long() - 1, target_lengths.long()]
    return -ll
