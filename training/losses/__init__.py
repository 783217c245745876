"""Training losses written in PyTorch: RNN-T (transducer) and Gram-CTC."""

from __future__ import annotations

import torch


def reduce(nll: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-utterance negative log likelihoods (B,) -> "none" | "sum" | "mean"."""
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.mean()
    raise ValueError(f"reduction must be none, sum or mean, got {reduction!r}")
