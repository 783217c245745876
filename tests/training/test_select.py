"""`chorus select` and the EGL score (training/select.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.models.test_cli import tiny_bundle
from tests.training.test_train import tiny_corpus  # noqa: F401 (fixture)
from training import select
from training.select import Scores, choose, expected_grad_norm, expected_grad_norm_rnnt, spearman


def test_egl_equals_the_gradient_norms_autograd_gives_one_hypothesis_at_a_time() -> None:
    """The one-pass per-hypothesis gradients through the loss equal, for each hypothesis, the
    squared norm of the output layer's parameter gradient from its own backward pass."""
    torch.manual_seed(0)
    proj = torch.nn.Linear(12, 7)
    enc = torch.randn(20, 12)
    hyps = [([1, 2, 3], -2.0), ([1, 2], -2.5), ([4, 4, 5, 6], -4.0), ([], -9.0)]
    egl, post, sq = expected_grad_norm(proj, enc, hyps, blank=0)
    want = []
    for ids, _ in hyps:
        proj.zero_grad()
        lp = torch.log_softmax(proj(enc), dim=-1)[:, None]  # (T, 1, V)
        loss = torch.nn.functional.ctc_loss(lp, torch.tensor(ids, dtype=torch.long),
                                            torch.tensor([20]), torch.tensor([len(ids)]),
                                            blank=0, reduction="sum", zero_infinity=True)
        loss.backward()
        want.append(float(proj.weight.grad.pow(2).sum() + proj.bias.grad.pow(2).sum()))
    assert sq.tolist() == pytest.approx(want, rel=1e-4)
    p = torch.softmax(torch.tensor([-2.0, -2.5, -4.0, -9.0], dtype=torch.float64), 0)
    assert post.tolist() == pytest.approx(p.tolist())
    assert egl == pytest.approx(float((p * torch.tensor(want, dtype=torch.float64)).sum()),
                                rel=1e-4)


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
def test_rnnt_egl_equals_the_joiner_output_gradients_autograd_gives_one_hypothesis_at_a_time(
        predictor, monkeypatch) -> None:
    """For a transducer head, the one-pass per-hypothesis gradients (padded to the longest
    hypothesis) equal the squared norm of the joiner output layer's gradient from each
    hypothesis's own transducer loss and backward pass; the empty hypothesis included; cut
    into batches of one (the memory cap), the norms are the same."""
    from models.nn.transducer import TransducerConfig, TransducerHead
    from training.losses.rnnt import rnnt_loss

    torch.manual_seed(0)
    head = TransducerHead(16, 7, TransducerConfig(predictor=predictor, pred_dim=10,
                                                  joiner_dim=12, context=3)).eval()
    enc = torch.randn(9, 12)  # (T, J): the encoder in the joiner space
    hyps = [([1, 2, 3], -1.0), ([1, 2], -1.5), ([4, 4, 5, 6, 2], -3.0), ([], -6.0)]
    egl, post, sq = expected_grad_norm_rnnt(head, enc, hyps, blank=0)
    monkeypatch.setattr(select, "LATTICE_FLOATS", 1)  # one hypothesis per batch: the same
    assert expected_grad_norm_rnnt(head, enc, hyps, blank=0)[2].tolist() == pytest.approx(
        sq.tolist(), rel=1e-6)
    want = []
    for ids, _ in hyps:
        head.zero_grad()
        y = torch.tensor([ids], dtype=torch.long).reshape(1, len(ids))
        lp = head.join(enc[None, :, None, :], head.predict_sequence(y)[:, None])  # (1, T, U+1, V)
        rnnt_loss(lp, y, torch.tensor([9]), torch.tensor([len(ids)]), blank=0,
                  reduction="sum").backward()
        want.append(float(head.out.weight.grad.pow(2).sum() + head.out.bias.grad.pow(2).sum()))
    assert sq.tolist() == pytest.approx(want, rel=1e-4)
    assert len(set(round(w, 6) for w in want)) == 4  # four different hypotheses, four norms
    p = torch.softmax(torch.tensor([-1.0, -1.5, -3.0, -6.0], dtype=torch.float64), 0)
    assert post.tolist() == pytest.approx(p.tolist())
    assert egl == pytest.approx(float((p * torch.tensor(want, dtype=torch.float64)).sum()),
                                rel=1e-4)


def test_each_method_orders_the_pool_as_documented() -> None:
    ids = ["a", "b", "c", "d"]
    sc = [Scores(1.0, 0.9, 10, 8), Scores(5.0, 0.2, 10, 8), Scores(3.0, 0.5, 10, 8),
          Scores(0.5, 0.1, 10, 8)]
    dur = [1.0, 2.0, 4.0, 3.0]
    assert choose("egl", ids, sc, dur, 2) == ["b", "c"]
    assert choose("confidence", ids, sc, dur, 2) == ["d", "b"]
    assert choose("length", ids, sc, dur, 3) == ["c", "d", "b"]
    r = choose("random", ids, sc, dur, 4, seed=1)
    assert sorted(r) == ids and r == choose("random", ids, sc, dur, 4, seed=1)
    with pytest.raises(ValueError, match="budget must be >= 1"):
        choose("egl", ids, sc, dur, 0)
    with pytest.raises(ValueError, match="method must be one of"):
        choose("entropy", ids, sc, dur, 1)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_select_cli_writes_the_budget_and_a_report(tiny_corpus, tmp_path) -> None:  # noqa: F811
    """EGL with a (random-weight) CTC bundle on a real tiny pool: exactly the budget, the
    highest-EGL utterances, and every utterance's scores; an RNN-T bundle selects likewise (its
    joiner's output layer); a Gram-CTC bundle is refused by name."""
    from lhotse import CutSet

    pool = tiny_corpus / "cuts_train.jsonl.gz"
    out = tmp_path / "sel.jsonl.gz"

    def select(head: str) -> subprocess.CompletedProcess:
        bundle = tiny_bundle(tmp_path / head, head=head)
        return subprocess.run([sys.executable, "-m", "clients.cli", "select", "--pool", str(pool),
                               "--budget", "3", "--method", "egl", "--bundle", str(bundle),
                               "--out", str(out), "--no-progress"],
                              capture_output=True, text=True, timeout=300)

    for head in ("ctc", "rnnt"):
        proc = select(head)
        assert proc.returncode == 0, proc.stderr
        picked = [c.id for c in CutSet.from_file(out)]
        report = json.loads((tmp_path / "sel.report.json").read_text())
        assert len(picked) == 3 and set(picked) == set(report["selected"])
        egl = {k: v["egl"] for k, v in report["scores"].items()}
        assert len(egl) == report["pool_utterances"] == len(CutSet.from_file(pool))
        assert min(egl[i] for i in picked) >= max(v for k, v in egl.items() if k not in picked)
        assert all(v > 0 for v in egl.values())
    proc = select("gram_ctc")
    assert proc.returncode != 0 and "EGL needs a CTC or RNN-T bundle" in proc.stderr
    assert "Traceback" not in proc.stderr
