"""Gram-CTC loss (Liu et al. 2017) in PyTorch: CTC over every decomposition of the target into
grams (characters plus selected n-grams, n <= 3), summed in log space.

Hand-written: no library implements it. The lattice has, per target position i (characters
consumed, 0..L), one blank state "blank after i" and one gram state per gram length k whose
gram y[i-k:i] is in the gram set. Per frame t:
  blank[i]   <- blank[i], any gram ending at i                           (+ log p_t(blank))
  gram[i, k] <- gram[i, k] (a repeat), blank[i-k], gram[i-k, k'] for any k' whose gram is not
               the same token (two equal tokens in a row need a blank between, as in CTC)
                                                                          (+ log p_t(gram))
Start: blank[0] or any gram starting at 0; end: blank[L] or any gram ending at L.
With the unigram gram set this is exactly CTC (tested against torch's ctc_loss). The loop is
over frames; each step is vectorised over the batch, positions and gram lengths.
"""

from __future__ import annotations

import torch

from training.losses import reduce

NEG = -1e30


def gram_lattice(targets: list[str], gram_ids: dict[str, int], max_n: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, L+1, N): token of gram y[i-k:i] ending at i with length k = n + 1 (-1: none);
    same (B, L+1, N, N): same[b, i, k, k'] = gram (i, k) equals the gram ending at i-k of length
    k' (a direct transition would merge them)."""
    b = len(targets)
    lmax = max((len(t) for t in targets), default=0)
    ids = torch.full((b, lmax + 1, max_n), -1, dtype=torch.long)
    for row, text in enumerate(targets):
        for i in range(1, len(text) + 1):
            for n in range(min(max_n, i)):
                tok = gram_ids.get(text[i - n - 1 : i])
                if tok is not None:
                    ids[row, i, n] = tok
    same = torch.zeros(b, lmax + 1, max_n, max_n, dtype=torch.bool)
    for n in range(max_n):
        k = n + 1
        prev = torch.full_like(ids, -1)
        prev[:, k:] = ids[:, : lmax + 1 - k]  # grams ending where gram (i, k) starts
        same[:, :, n, :] = (prev == ids[:, :, n : n + 1]) & (prev >= 0)
    return ids, same


def gram_ctc_loss(log_probs: torch.Tensor, ids: torch.Tensor, same: torch.Tensor,
                  frames: torch.Tensor, target_lengths: torch.Tensor, blank: int = 0,
                  reduction: str = "mean") -> torch.Tensor:
    """log_probs (B, T, V) over blank + grams; ids, same from `gram_lattice`; frames (B,);
    target_lengths (B,) in characters. Returns the negative log likelihood."""
    bsz, t_max, _ = log_probs.shape
    _, l1, n_max = ids.shape
    if bool((frames < 1).any()) or bool((frames > t_max).any()):
        raise ValueError("frames must be in [1, T]")
    if bool((target_lengths > l1 - 1).any()):
        raise ValueError("target_lengths exceed the lattice built from the targets")
    valid = ids >= 0  # (B, L+1, N)
    gather_ids = ids.clamp(min=0).view(bsz, 1, -1).expand(bsz, t_max, -1)
    emit = log_probs.gather(2, gather_ids).view(bsz, t_max, l1, n_max)  # (B, T, L+1, N)
    emit = emit.masked_fill(~valid.unsqueeze(1), NEG)
    blank_lp = log_probs[..., blank]  # (B, T)
    pos = torch.arange(l1, device=log_probs.device)
    # t = 0: blank before anything, or a gram that starts at position 0 (ends at i = k)
    blank_s = torch.full((bsz, l1), NEG, dtype=log_probs.dtype, device=log_probs.device)
    blank_s[:, 0] = blank_lp[:, 0]
    starts = torch.stack([pos == n + 1 for n in range(n_max)], dim=-1)  # (L+1, N)
    gram_s = emit[:, 0].masked_fill(~starts.unsqueeze(0), NEG)
    finals = []
    rows = torch.arange(bsz, device=log_probs.device)
    last = frames.long() - 1
    lengths = target_lengths.long()
    for t in range(t_max):
        if t > 0:
            new_blank = torch.logsumexp(torch.cat([blank_s.unsqueeze(-1), gram_s], -1), -1)
            new_blank = new_blank + blank_lp[:, t : t + 1]
            new_gram = []
            for n in range(n_max):
                k = n + 1
                from_blank = torch.full_like(blank_s, NEG)
                from_blank[:, k:] = blank_s[:, :-k]
                from_gram = torch.full_like(gram_s, NEG)
                from_gram[:, k:] = gram_s[:, :-k]
                from_gram = from_gram.masked_fill(same[:, :, n, :], NEG)  # (B, L+1, N)
                terms = torch.cat([gram_s[:, :, n : n + 1], from_blank.unsqueeze(-1), from_gram], -1)
                new_gram.append(torch.logsumexp(terms, -1) + emit[:, t, :, n])
            blank_s, gram_s = new_blank, torch.stack(new_gram, dim=-1)
        finals.append(torch.logsumexp(torch.cat([blank_s[rows, lengths].unsqueeze(-1),
                                                 gram_s[rows, lengths]], -1), -1))
    ll = torch.stack(finals, dim=1)[rows, last]  # (B,)
    return reduce(-ll, reduction)
