"""Voice-invariant training (training.adversary): the confusion loss is zero exactly at chance,
the classifier learns to tell voices apart from embeddings that carry them, the encoder's term
then removes that information from the embeddings (valid frames only), bad configs and labels
are refused by name, and a tiny real run logs the adversary while its bundle holds no
classifier."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.training.test_train import tiny_corpus  # noqa: F401  (the fixture)
from training.adversary import VoiceAdversary, confusion_loss, label_vocabulary
from training.config import AdversaryConfig


def test_confusion_loss_is_zero_at_chance_and_grows_with_confidence() -> None:
    assert float(confusion_loss(torch.zeros(5, 4))) == pytest.approx(0.0, abs=1e-7)
    sure = torch.tensor([[10.0, 0.0, 0.0, 0.0]])  # p = (e^10, 1, 1, 1) / (e^10 + 3)
    logp = torch.log_softmax(sure, -1)
    assert float(confusion_loss(sure)) == pytest.approx(float(-logp.mean()) - math.log(4), rel=1e-6)
    assert float(confusion_loss(sure)) > 5.0


def _voiced_embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(B=6, T'=20, D=8) embeddings whose dimension 0 says the voice (+2 for "a", -2 for "b"),
    with lengths 20, 14, 20, 9, 20, 17; the frames past each length are padding."""
    gen = torch.Generator().manual_seed(seed)
    names = ["a", "b", "a", "b", "a", "b"]
    e = torch.randn(6, 20, 8, generator=gen)
    e[:, :, 0] += torch.tensor([2.0 if n == "a" else -2.0 for n in names])[:, None]
    return e, torch.tensor([20, 14, 20, 9, 20, 17]), names


def _separation(e: torch.Tensor, lengths: torch.Tensor, names: list[str]) -> float:
    """|mean dimension-0 value of voice a's valid frames - voice b's|."""
    means = {}
    for voice in ("a", "b"):
        vals = [e[i, : lengths[i], 0] for i, n in enumerate(names) if n == voice]
        means[voice] = float(torch.cat(vals).mean())
    return abs(means["a"] - means["b"])


def test_the_classifier_learns_voices_and_the_encoder_term_removes_them() -> None:
    torch.manual_seed(0)
    e0, lengths, names = _voiced_embeddings()
    adv = VoiceAdversary(AdversaryConfig(target="voice", lr=1e-2, dim=32, frames=256), 8,
                         ["a", "b"], seed=0)
    for _ in range(60):  # the encoder frozen: only the classifier learns
        _, logs = adv(e0, lengths, names)
    assert logs["adv_acc"] > 0.95 and logs["adv_confusion"] > 0.3
    assert _separation(e0, lengths, names) > 3.5

    e = e0.clone().requires_grad_(True)  # now the "encoder" (the embeddings) plays against it
    opt = torch.optim.SGD([e], lr=0.5)
    for _ in range(300):
        confusion, logs = adv(e, lengths, names)
        opt.zero_grad()
        confusion.backward()
        # padding frames are never sampled, so they get no gradient
        for i, n in enumerate(lengths.tolist()):
            assert e.grad is not None and torch.count_nonzero(e.grad[i, n:]) == 0
        opt.step()
    assert _separation(e.detach(), lengths, names) < 1.0  # the voice is (mostly) gone
    assert logs["adv_acc"] < 0.8


def test_bad_adversary_config_and_labels_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="adversary.target must be one of"):
        AdversaryConfig(target="speaker").validate()
    with pytest.raises(ValueError, match="weight >= 0"):
        AdversaryConfig(target="voice", weight=-1.0).validate()
    with pytest.raises(ValueError, match="1 distinct label"):
        VoiceAdversary(AdversaryConfig(target="engine"), 8, ["flite"])
    adv = VoiceAdversary(AdversaryConfig(target="voice"), 8, ["a", "b"])
    e, lengths, _ = _voiced_embeddings()
    with pytest.raises(ValueError, match=r"labels \['zz'\] are not in"):
        adv(e, lengths, ["a", "b", "a", "zz", "a", "b"])


def test_tiny_voice_adversarial_run_logs_the_adversary_and_ships_no_classifier(
        tiny_corpus, tmp_path) -> None:  # noqa: F811
    from lhotse import CutSet

    from models.bundle import load
    from tests.training.test_train import assert_logged, overrides
    from training.config import load_config
    from training.train import train

    voices = label_vocabulary(CutSet.from_file(tiny_corpus / "cuts_train.jsonl.gz"), "voice")
    assert len(voices) >= 2 and all(v.startswith("flite:") for v in voices)
    out = tmp_path / "run"
    extra = ["adversary.target=voice", "adversary.weight=0.5", "adversary.frames=64"]
    cfg = load_config(None, [*overrides(tiny_corpus, out, 10), *extra])  # logs every 10 steps
    bundle = load(train(cfg, progress=False))
    assert_logged(out, ("adv_ce", "adv_acc", "adv_confusion"))
    assert not any("classifier" in n for n in bundle.model.state_dict())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["adversary"]["target"] == "voice"
    with pytest.raises(ValueError, match="1 distinct label"):  # one engine in this corpus
        train(load_config(None, [*overrides(tiny_corpus, tmp_path / "e", 2),
                                 "adversary.target=engine"]), progress=False)
