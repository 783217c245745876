"""GAN-robust training pieces: the WGAN-GP gradient penalty on a case with a known value, the
L1 term over valid frames only, the critic's and the encoder's updates kept apart, corrupted
training views (kinds, SNR, determinism, babble from other utterances), paired batches frame
for frame, and a tiny paired run whose bundle holds no critic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.training.test_corrupt import snr, speechlike
from tests.training.test_train import tiny_corpus  # noqa: F401  (the fixture)
from training.config import RobustConfig
from training.data.views import CorruptionDraw
from training.robust import Critic, RobustObjective, critic_loss, gradient_penalty, valid_frames


class Linear(torch.nn.Module):
    """D(x) = w . x: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_gradient_penalty_of_a_linear_critic_is_known() -> None:
    real, fake = torch.randn(7, 2), torch.randn(7, 2)
    eps = torch.rand(7, 1)
    assert float(gradient_penalty(Linear([3.0, 4.0]), real, fake, eps).detach()) == pytest.approx(16.0)
    penalty = gradient_penalty(Linear([0.6, 0.8]), real, fake, eps).detach()
    assert float(penalty) == pytest.approx(0.0, abs=1e-10)
    # the penalty is differentiable in the critic's parameters: d/dw (||w|| - 1)^2 = 2 (5 - 1) w / 5
    critic = Linear([3.0, 4.0])
    gradient_penalty(critic, real, fake, eps).backward()
    assert torch.allclose(critic.w.grad, torch.tensor([4.8, 6.4]))


def test_critic_loss_is_the_negated_wasserstein_estimate_plus_penalty() -> None:
    critic = Linear([0.6, 0.8])  # unit gradient norm: no penalty
    clean = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    noisy = torch.zeros(2, 2)
    loss, w = critic_loss(critic, clean, noisy, 10.0, torch.rand(2, 1))
    assert float(w) == pytest.approx((1.4 + 1.2) / 2)
    assert float(loss) == pytest.approx(-float(w))


def test_l1_counts_valid_frames_only() -> None:
    noisy = torch.zeros(2, 4, 3, requires_grad=True)
    clean = torch.ones(2, 4, 3)
    with torch.no_grad():
        clean[0, 2:] = 1000.0  # padding of utterance 0 (length 2): must not count
    lengths = torch.tensor([2, 4])
    obj = RobustObjective(RobustConfig(corrupt=True, l1_weight=2.0), d_model=3)
    total, logs = obj(noisy, clean, lengths)
    assert logs["robust_l1"] == pytest.approx(1.0)
    assert float(total) == pytest.approx(2.0)
    assert valid_frames(lengths, 4).tolist() == [[True, True, False, False], [True] * 4]


def test_critic_learns_while_the_encoder_term_leaves_it_alone() -> None:
    """Each call updates the critic on detached embeddings; the encoder's term sends gradient
    to the corrupted embeddings only, never to the critic."""
    torch.manual_seed(0)
    obj = RobustObjective(RobustConfig(corrupt=True, gan_weight=1.0, critic_steps=3,
                                       critic_lr=1e-2, critic_frames=64), d_model=4)
    assert isinstance(obj.critic, Critic)
    clean = torch.randn(2, 30, 4) + 2.0  # two clearly separate distributions
    noisy = torch.randn(2, 30, 4, requires_grad=True)
    lengths = torch.tensor([30, 20])
    ws = []
    for _ in range(15):
        before = [p.detach().clone() for p in obj.critic.parameters()]
        total, logs = obj(noisy, clean, lengths)
        ws.append(logs["critic_w"])
        after = list(obj.critic.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
        for p in obj.critic.parameters():
            p.grad = None
        noisy.grad = None
        total.backward()
        assert all(p.grad is None for p in obj.critic.parameters())
        assert noisy.grad is not None and noisy.grad[1, 20:].abs().sum() == 0  # padding
        assert noisy.grad[0].abs().sum() > 0
    assert ws[-1] > ws[0] and ws[-1] > 0.5, ws  # the critic tells the two apart


def only(kind: str) -> RobustConfig:
    probs = {f"{k}_prob": float(k == kind) for k in ("clean", "noise", "babble", "farfield",
                                                   "telephone")}
    return RobustConfig(corrupt=True, rir_bank=3, **probs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["clean", "noise", "farfield", "telephone"])
def test_views_keep_length_and_are_seeded(kind: str) -> None:
    x = speechlike(1)
    views = [CorruptionDraw(only(kind), seed=3)(x, np.random.default_rng(9)) for _ in range(2)]
    (y1, k1), (y2, k2) = views
    assert k1 == k2 == kind and y1.shape == x.shape and y1.dtype == np.float32
    assert np.array_equal(y1, y2)
    assert np.array_equal(y1, x) == (kind == "clean")


def test_noise_views_reach_an_snr_in_the_range_asked() -> None:
    cfg = only("noise")
    draw = CorruptionDraw(RobustConfig(**{**cfg.__dict__, "snr_db": (5.0, 10.0)}))
    rng = np.random.default_rng(0)
    for i in range(6):
        x = speechlike(i)
        y, kind = draw(x, rng)
        assert kind == "noise" and 5.0 - 0.01 <= snr(x, y) <= 10.0 + 0.01


def test_babble_mixes_earlier_utterances_and_not_the_first() -> None:
    draw = CorruptionDraw(only("babble"))
    rng = np.random.default_rng(0)
    _, first = draw(speechlike(0), rng)
    assert first == "noise"  # nothing else loaded yet: no other voices to mix
    x = speechlike(1)
    y, kind = draw(x, rng)
    assert kind == "babble" and 5.0 - 0.01 <= snr(x, y) <= 20.0 + 0.01


def test_bad_robust_config_is_specific() -> None:
    with pytest.raises(ValueError, match="robust.corrupt=true"):
        RobustConfig(l1_weight=1.0).validate()
    with pytest.raises(ValueError, match="probabilities"):
        RobustConfig(corrupt=True, clean_prob=-1.0).validate()


def test_paired_batches_align_frame_for_frame() -> None:
    """Uncorrupted views without SpecAugment: the corrupted features equal the clean ones; with
    noise they differ but keep every utterance's frame count."""
    from models.features import FbankConfig
    from models.tokenizer import CharTokenizer
    from training.config import AugmentConfig
    from training.data.dataset import AsrDataset

    class Cut:
        def __init__(self, i: int):
            self.id, self.audio = f"u{i}", speechlike(i, 0.5 + 0.3 * i)
            self.supervisions = [type("S", (), {"text": "a b"})()]

        def load_audio(self) -> np.ndarray:
            return self.audio[None]

    aug = AugmentConfig(speed=(1.0,), spec_time_masks=0, spec_freq_masks=0)
    for kind, same in (("clean", True), ("noise", False)):
        cfg = RobustConfig(**{**only(kind).__dict__, "l1_weight": 1.0})
        ds = AsrDataset(tokenizer=CharTokenizer(), features=FbankConfig(), augment=aug,
                        feat_mean=torch.zeros(80), robust=cfg)
        batch = ds[[Cut(0), Cut(1), Cut(2)]]
        assert batch["clean_features"].shape == batch["features"].shape
        assert torch.equal(batch["clean_features"], batch["features"]) == same
    plain = AsrDataset(tokenizer=CharTokenizer(), features=FbankConfig(), augment=aug,
                       feat_mean=torch.zeros(80), robust=only("noise"))
    assert "clean_features" not in plain[[Cut(0)]]  # corrupted, not paired: no clean pass


@pytest.mark.parametrize("head", ["ctc", "rnnt"])
def test_paired_training_runs_and_the_bundle_holds_no_critic(tiny_corpus, tmp_path, head) -> None:  # noqa: F811
    from models.bundle import load
    from tests.training.test_train import assert_logged, overrides
    from training.config import load_config
    from training.train import train

    out = tmp_path / "run"
    extra = ["robust.corrupt=true", "robust.l1_weight=1.0", "robust.gan_weight=0.1",
             "robust.rir_bank=2", "robust.critic_steps=2", f"head.type={head}"]
    cfg = load_config(None, [*overrides(tiny_corpus, out, 10), *extra])  # logs every 10 steps
    bundle = load(train(cfg, progress=False))
    assert_logged(out, ("robust_l1", "critic_w", "robust_adv"))
    names = set(bundle.model.state_dict())
    assert not any("critic" in n for n in names)
    assert json.loads((out / "summary.json").read_text())["config"]["robust"]["gan_weight"] == 0.1


def test_embedding_distance_pairs_views_and_grows_with_noise(tmp_path) -> None:
    """The shipped model's encoder puts a 30 dB copy closer to the clean utterance than a 0 dB
    copy; every corrupted utterance is paired with its own clean original."""
    from training.data.corrupt import corrupt_manifest
    from training.data.synth.corpus import SynthConfig, synthesize_corpus
    from training.eval.embeddings import main, pair
    from training.eval.run import load_manifest

    corpus = tmp_path / "c"
    synthesize_corpus(SynthConfig(out=corpus, hours=0.003, seed=5, jobs=1, engines=("flite",),
                                  split_weights={"train": 0.0, "dev": 0.0, "test": 1.0}),
                      progress=False)
    src = str(corpus / "cuts_test.jsonl.gz")
    sets = [corrupt_manifest(src, str(tmp_path / "o"), "white", snr_db=snr_db,
                             progress=False)["manifest"] for snr_db in (30.0, 0.0)]
    clean = load_manifest(src)
    pairs = pair(clean, load_manifest(sets[0]))
    assert len(pairs) == len(clean) >= 2
    assert all(n.id == f"{c.id}-test-white30" and n.ref == c.ref for c, n in pairs)
    out = tmp_path / "d.json"
    assert main(["--clean", src, "--corrupted", *sets, "--out", str(out), "--no-progress"]) == 0
    got = json.loads(out.read_text())["sets"]
    near, far = got["cuts_test-white30.jsonl.gz"], got["cuts_test-white0.jsonl.gz"]
    assert 0 < near["relative_l2"] < far["relative_l2"] and 0 < near["l1"] < far["l1"]
    assert near["frames"] == far["frames"] > 0
