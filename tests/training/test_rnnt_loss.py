"""RNN-T loss: equals a naive double loop and brute-force path enumeration; gradcheck."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from training.losses.rnnt import rnnt_loss


def naive(lp: torch.Tensor, y: list[int], blank: int = 0) -> float:
    """The textbook recursion over the (T, U+1) lattice, one cell at a time."""
    T, U1, _ = lp.shape
    a = [[-math.inf] * U1 for _ in range(T)]
    a[0][0] = 0.0
    for t in range(T):
        for u in range(U1):
            if t == 0 and u == 0:
                continue
            terms = []
            if t > 0:
                terms.append(a[t - 1][u] + float(lp[t - 1, u, blank]))
            if u > 0:
                terms.append(a[t][u - 1] + float(lp[t, u - 1, y[u - 1]]))
            a[t][u] = max(terms) + math.log(sum(math.exp(x - max(terms)) for x in terms))
    return -(a[T - 1][U1 - 1] + float(lp[T - 1, U1 - 1, blank]))


def brute_force(lp: torch.Tensor, y: list[int], blank: int = 0) -> float:
    """Sum over every alignment: T blanks and U labels interleaved, the last symbol a blank."""
    T, U1, _ = lp.shape
    U = U1 - 1
    total = 0.0
    for label_slots in itertools.combinations(range(T + U - 1), U):
        t = u = 0
        logp = 0.0
        for step in range(T + U - 1):
            if step in label_slots:
                logp += float(lp[t, u, y[u]])
                u += 1
            else:
                logp += float(lp[t, u, blank])
                t += 1
        total += math.exp(logp + float(lp[T - 1, U, blank]))
    return -math.log(total)


def random_case(B: int, T: int, U: int, V: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=dtype)
    targets = torch.randint(1, V, (B, U), generator=g)
    return logits, targets


@pytest.mark.parametrize("T, U", [(1, 0), (1, 2), (3, 2), (4, 3), (2, 4)])
def test_matches_naive_recursion_and_enumeration(T: int, U: int) -> None:
    logits, targets = random_case(1, T, U, 5, seed=T * 10 + U)
    lp = logits.log_softmax(-1)
    ours = rnnt_loss(lp, targets, torch.tensor([T]), torch.tensor([U]), reduction="none")
    y = targets[0].tolist()
    assert float(ours[0]) == pytest.approx(naive(lp[0], y), abs=1e-9)
    assert float(ours[0]) == pytest.approx(brute_force(lp[0], y), abs=1e-9)


def test_padded_batch_equals_each_utterance_alone() -> None:
    logits, targets = random_case(3, 7, 4, 6, seed=1)
    lp = logits.log_softmax(-1)
    frames, lengths = torch.tensor([7, 5, 2]), torch.tensor([4, 2, 0])
    batch = rnnt_loss(lp, targets, frames, lengths, reduction="none")
    for b in range(3):
        t, u = int(frames[b]), int(lengths[b])
        alone = naive(lp[b, :t, : u + 1], targets[b, :u].tolist())
        assert float(batch[b]) == pytest.approx(alone, abs=1e-9)


def test_gradcheck() -> None:
    logits, targets = random_case(2, 4, 3, 5, seed=2)
    logits.requires_grad_(True)
    frames, lengths = torch.tensor([4, 3]), torch.tensor([3, 1])
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x.log_softmax(-1), targets, frames, lengths, reduction="sum"),
        (logits,), eps=1e-6, atol=1e-6)


def test_float32_gradients_are_finite_and_training_lowers_the_loss() -> None:
    logits, targets = random_case(2, 12, 5, 8, seed=3, dtype=torch.float32)
    logits.requires_grad_(True)
    frames, lengths = torch.tensor([12, 9]), torch.tensor([5, 3])
    opt = torch.optim.SGD([logits], lr=0.5)
    first = None
    for _ in range(20):
        loss = rnnt_loss(logits.log_softmax(-1), targets, frames, lengths)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        first = first if first is not None else float(loss.detach())
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_bad_shapes_are_named() -> None:
    lp = torch.zeros(1, 3, 3, 4)
    with pytest.raises(ValueError, match="U \\+ 1 = 3"):
        rnnt_loss(lp, torch.ones(1, 3, dtype=torch.long), torch.tensor([3]), torch.tensor([2]))
    with pytest.raises(ValueError, match="frames must be"):
        rnnt_loss(lp, torch.ones(1, 2, dtype=torch.long), torch.tensor([4]), torch.tensor([2]))
