"""Pruned RNN-T: the simple lattice equals the full loss of an additive joiner; occupancies
are posteriors; band starts form a valid corridor; a band covering every label position gives
exactly the full loss, a narrower one never less; gradients check."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.losses.pruned_rnnt import occupancy, prune_ranges, pruned_rnnt_loss, simple_terms
from training.losses.rnnt import lattice_nll, rnnt_loss


def case(B: int, T: int, U: int, V: int, J: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, J, generator=g, dtype=dtype)
    pred = torch.randn(B, U + 1, J, generator=g, dtype=dtype)
    w = torch.randn(J, V, generator=g, dtype=dtype)
    am = torch.randn(B, T, V, generator=g, dtype=dtype)
    lm = torch.randn(B, U + 1, V, generator=g, dtype=dtype)
    targets = torch.randint(1, V, (B, U), generator=g)
    return enc, pred, w, am, lm, targets


def joiner(w: torch.Tensor):
    return lambda e, p: torch.log_softmax(torch.tanh(e + p) @ w, dim=-1)


FRAMES, LENGTHS = torch.tensor([9, 6, 3]), torch.tensor([5, 2, 0])


def test_simple_lattice_equals_full_loss_of_the_additive_joiner() -> None:
    _, _, _, am, lm, targets = case(3, 9, 5, 7, 4, seed=0)
    full = rnnt_loss((am.unsqueeze(2) + lm.unsqueeze(1)).log_softmax(-1), targets, FRAMES,
                     LENGTHS, reduction="none")
    simple = lattice_nll(*simple_terms(am, lm, targets), FRAMES, LENGTHS)
    torch.testing.assert_close(simple, full, rtol=0, atol=1e-9)


def test_occupancy_is_a_posterior_over_the_lattice() -> None:
    _, _, _, am, lm, targets = case(3, 9, 5, 7, 4, seed=1)
    blank_lp, label_lp = simple_terms(am.requires_grad_(), lm, targets)
    nll = lattice_nll(blank_lp, label_lp, FRAMES, LENGTHS)
    occ = occupancy(blank_lp, label_lp, FRAMES, LENGTHS, nll)  # from the training graph
    recomputed = occupancy(blank_lp.detach(), label_lp.detach(), FRAMES, LENGTHS)
    torch.testing.assert_close(occ, recomputed, rtol=0, atol=1e-12)
    assert float(occ.min()) >= -1e-12 and float(occ.max()) <= 1 + 1e-9
    for b in range(3):
        t, u = int(FRAMES[b]), int(LENGTHS[b])
        # every path leaves T + U cells (one transition each, the final blank included)
        assert float(occ[b].sum()) == pytest.approx(t + u, abs=1e-9)
        assert float(occ[b, 0, 0]) == pytest.approx(1.0) and float(occ[b, t - 1, u]) == \
            pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 12), U=st.integers(0, 14), S=st.integers(2, 6), seed=st.integers(0, 99))
def test_band_starts_form_a_valid_corridor(T: int, U: int, S: int, seed: int) -> None:
    if U > (T - 1) * (S - 1) + S - 1:  # too many labels for these frames: no corridor
        return
    occ = torch.rand(1, T, U + 1, generator=torch.Generator().manual_seed(seed))
    s = prune_ranges(occ, torch.tensor([T]), torch.tensor([U]), S)[0].tolist()
    assert s[0] == 0
    assert all(0 <= a <= max(U + 1 - S, 0) for a in s)
    assert all(a <= b <= a + S - 1 for a, b in zip(s, s[1:], strict=False))
    assert s[-1] <= U <= s[-1] + S - 1


def test_a_band_covering_every_position_is_the_full_loss() -> None:
    enc, pred, w, am, lm, targets = case(3, 9, 5, 7, 4, seed=2)
    join = joiner(w)
    full = rnnt_loss(join(enc.unsqueeze(2), pred.unsqueeze(1)), targets, FRAMES, LENGTHS,
                     reduction="none")
    _, pruned = pruned_rnnt_loss(join, enc, pred, am, lm, targets, FRAMES, LENGTHS, s_range=6)
    torch.testing.assert_close(pruned, full, rtol=0, atol=1e-9)


@pytest.mark.parametrize("s_range", [2, 3, 4])
def test_a_narrow_band_never_scores_above_the_full_lattice(s_range: int) -> None:
    enc, pred, w, am, lm, targets = case(3, 9, 5, 7, 4, seed=3)
    join = joiner(w)
    full = rnnt_loss(join(enc.unsqueeze(2), pred.unsqueeze(1)), targets, FRAMES, LENGTHS,
                     reduction="none")
    _, pruned = pruned_rnnt_loss(join, enc, pred, am, lm, targets, FRAMES, LENGTHS, s_range)
    assert bool((pruned >= full - 1e-9).all())
    assert bool(torch.isfinite(pruned).all()) and float(pruned.max()) < 1e3
    if s_range == 4:  # wide enough to hold most of the mass, so close to the full loss
        assert float((pruned - full).max()) < 2.0


def test_gradcheck() -> None:
    enc, pred, w, am, lm, targets = case(2, 5, 3, 5, 3, seed=4)
    frames, lengths = torch.tensor([5, 4]), torch.tensor([3, 2])
    join = joiner(w)

    def total(e: torch.Tensor, p: torch.Tensor, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        simple, pruned = pruned_rnnt_loss(join, e, p, a, m, targets, frames, lengths, s_range=2)
        return 0.5 * simple.sum() + pruned.sum()

    inputs = tuple(x.clone().requires_grad_() for x in (enc, pred, am, lm))
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-5)


def test_float32_training_lowers_both_losses() -> None:
    enc, pred, w, am, lm, targets = case(2, 14, 6, 8, 6, seed=5, dtype=torch.float32)
    params = [x.requires_grad_() for x in (enc, pred, w, am, lm)]
    frames, lengths = torch.tensor([14, 10]), torch.tensor([6, 4])
    opt = torch.optim.Adam(params, lr=0.05)
    first = None
    for _ in range(40):
        simple, pruned = pruned_rnnt_loss(joiner(w), enc, pred, am, lm, targets, frames,
                                          lengths, s_range=3)
        loss = 0.5 * simple.sum() + pruned.sum()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params)
        if first is None:
            first = (float(simple.sum().detach()), float(pruned.sum().detach()))
        opt.step()
    assert float(simple.sum()) < 0.5 * first[0] and float(pruned.sum()) < 0.5 * first[1]


def test_a_band_of_one_position_is_refused() -> None:
    with pytest.raises(ValueError, match="s_range must be >= 2"):
        prune_ranges(torch.zeros(1, 3, 2), torch.tensor([3]), torch.tensor([1]), 1)
