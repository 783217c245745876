"""Gram-CTC loss: exactly CTC with unigrams; brute force over all paths with n-grams."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from training.losses.gram_ctc import gram_ctc_loss, gram_lattice

CHARS = ["a", "b", "c"]


def lattice(texts: list[str], grams: list[str], max_n: int = 3):
    ids = {g: i + 1 for i, g in enumerate(grams)}  # 0 is the blank
    return gram_lattice(texts, ids, max_n)


def random_lp(B: int, T: int, V: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g, dtype=torch.float64).log_softmax(-1)


def test_unigrams_equal_torch_ctc_loss() -> None:
    texts = ["abca", "bb", "c", "aabbc"]
    lp = random_lp(4, 9, 4, seed=0)
    frames = torch.tensor([9, 6, 3, 9])
    lengths = torch.tensor([len(t) for t in texts])
    ids, same = lattice(texts, CHARS, max_n=1)
    ours = gram_ctc_loss(lp, ids, same, frames, lengths, reduction="none")
    targets = torch.tensor([[CHARS.index(c) + 1 for c in t.ljust(5, "a")] for t in texts])
    ref = torch.nn.functional.ctc_loss(lp.transpose(0, 1), targets, frames, lengths,
                                       reduction="none")
    assert torch.allclose(ours, ref, atol=1e-9), (ours, ref)
    ids3, same3 = lattice(texts, CHARS, max_n=3)  # unigrams only, but a 3-wide lattice
    assert torch.allclose(gram_ctc_loss(lp, ids3, same3, frames, lengths, reduction="none"), ref,
                          atol=1e-9)


def brute_force(lp: torch.Tensor, text: str, grams: list[str]) -> float:
    """Every path over blank + grams whose collapse (merge repeats, drop blanks) spells text."""
    T, V = lp.shape
    total = 0.0
    for path in itertools.product(range(V), repeat=T):
        toks = [k for k, _ in itertools.groupby(path) if k != 0]
        if "".join(grams[k - 1] for k in toks) == text:
            total += math.exp(sum(float(lp[t, k]) for t, k in enumerate(path)))
    return -math.log(total)


@pytest.mark.parametrize("text, T", [("ab", 3), ("aab", 4), ("abab", 4), ("aaa", 5), ("ba", 2)])
def test_ngrams_equal_brute_force(text: str, T: int) -> None:
    grams = ["a", "b", "ab", "aa", "aab"]
    lp = random_lp(1, T, len(grams) + 1, seed=len(text) * 7 + T)
    ids, same = lattice([text], grams)
    ours = gram_ctc_loss(lp, ids, same, torch.tensor([T]), torch.tensor([len(text)]),
                         reduction="none")
    assert float(ours[0]) == pytest.approx(brute_force(lp[0], text, grams), abs=1e-9)


def test_padded_batch_and_gradcheck() -> None:
    grams = ["a", "b", "c", "ab", "bc", "abc"]
    texts = ["abcab", "cb", "abc"]
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 7, len(grams) + 1, generator=g, dtype=torch.float64,
                         requires_grad=True)
    frames, lengths = torch.tensor([7, 4, 5]), torch.tensor([5, 2, 3])
    ids, same = lattice(texts, grams)
    batch = gram_ctc_loss(logits.log_softmax(-1), ids, same, frames, lengths, reduction="none")
    for b, text in enumerate(texts):
        i1, s1 = lattice([text], grams)
        alone = gram_ctc_loss(logits[b : b + 1, : int(frames[b])].log_softmax(-1), i1, s1,
                              frames[b : b + 1], lengths[b : b + 1], reduction="none")
        assert float(batch[b].detach()) == pytest.approx(float(alone[0].detach()), abs=1e-9)
    assert torch.autograd.gradcheck(
        lambda x: gram_ctc_loss(x.log_softmax(-1), ids, same, frames, lengths, reduction="sum"),
        (logits,), eps=1e-6, atol=1e-6)
