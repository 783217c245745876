"""Weight averaging (training.average, `chorus average`): the mean is element-wise, integer
buffers must agree, and bundles of another model, features or tokens are refused by name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.acoustic import AcousticModel, ModelConfig
from models.bundle import load, save
from models.features import FbankConfig
from models.nn.encoder import EncoderConfig
from models.tokenizer import CharTokenizer
from training.average import average_bundles, average_state_dicts


def test_mean_of_state_dicts_is_elementwise_and_keeps_integer_buffers() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(3)}
    c = {"w": torch.tensor([2.0, 1.0]), "n": torch.tensor(3)}
    mean = average_state_dicts([a, b, c])
    assert torch.allclose(mean["w"], torch.tensor([2.0, 3.0]))
    assert mean["n"].item() == 3 and mean["n"].dtype == a["n"].dtype


def test_mismatched_state_dicts_are_refused_naming_the_tensor() -> None:
    a = {"w": torch.zeros(2), "n": torch.tensor(1)}
    with pytest.raises(ValueError, match=r"run2 tensor w is \(3,\)"):
        average_state_dicts([a, {"w": torch.zeros(3), "n": torch.tensor(1)}], ["run1", "run2"])
    with pytest.raises(ValueError, match="integer tensor n differs"):
        average_state_dicts([a, {"w": torch.zeros(2), "n": torch.tensor(2)}])
    with pytest.raises(ValueError, match="other tensors"):
        average_state_dicts([a, {"w": torch.zeros(2)}])
    with pytest.raises(ValueError, match="no checkpoints"):
        average_state_dicts([])


def _bundle(path: Path, seed: int, d_model: int = 32) -> Path:
    torch.manual_seed(seed)
    enc = EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=d_model, num_layers=1)
    tok = CharTokenizer()
    model = AcousticModel(ModelConfig(enc, tok.vocab_size))
    return save(path, model, features=FbankConfig(num_mel_bins=16), tokenizer=tok,
                provenance={"recipe": f"seed{seed}", "steps": seed})


def test_a_soup_averages_training_extras_only_when_every_member_has_them(tmp_path) -> None:
    """training_extras.safetensors (the pruned RNN-T loss's simple joiner) is averaged like
    the weights when every member has it; when one lacks it, the soup has none (the first
    member's copy would pair its joiner with other weights)."""
    from safetensors.torch import save_file

    from training.extras import EXTRAS

    a, b, c = (_bundle(tmp_path / n, s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    ea = {"simple_am.weight": torch.randn(3, 4), "simple_lm.bias": torch.randn(3)}
    eb = {k: torch.randn_like(v) for k, v in ea.items()}
    save_file(ea, str(a / EXTRAS))
    save_file(eb, str(b / EXTRAS))
    both = load_file(str(average_bundles([a, b], tmp_path / "ab") / EXTRAS))
    for k, v in both.items():
        assert torch.allclose(v, (ea[k] + eb[k]) / 2, atol=1e-7), k
    assert set(both) == set(ea)
    assert not (average_bundles([a, c], tmp_path / "ac") / EXTRAS).exists()


def test_averaged_bundle_holds_the_mean_weights_and_loads(tmp_path) -> None:
    a, b = _bundle(tmp_path / "a", 1), _bundle(tmp_path / "b", 2)
    (a / "encoder.onnx").write_bytes(b"stale export of a's weights")
    out = average_bundles([a, b], tmp_path / "avg")
    wa, wb, wo = (load_file(str(p / "model.safetensors")) for p in (a, b, out))
    assert set(wo) == set(wa)
    for k, v in wo.items():
        if v.is_floating_point():
            assert torch.allclose(v, (wa[k] + wb[k]) / 2, atol=1e-7), k
    assert not (out / "encoder.onnx").exists()  # an export of other weights is not carried
    prov = load(out).provenance
    assert [m["recipe"] for m in prov["averaged_from"]] == ["seed1", "seed2"]


def test_cli_refuses_bundles_of_another_model_naming_it(tmp_path) -> None:
    a, b = _bundle(tmp_path / "a", 1), _bundle(tmp_path / "wide", 2, d_model=48)
    run = subprocess.run([sys.executable, "-m", "clients.cli", "average", str(a), str(b),
                          "--out", str(tmp_path / "avg")], capture_output=True, text=True)
    assert run.returncode != 0
    assert "chorus average:" in run.stderr and "wide" in run.stderr and "differs" in run.stderr
    ok = subprocess.run([sys.executable, "-m", "clients.cli", "average", str(a), str(a),
                         "--out", str(tmp_path / "same")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["bundle"] == str(tmp_path / "same")


def test_bundles_that_differ_only_in_dropout_average_and_keep_the_first_config(tmp_path) -> None:
    """Dropout is training-only (the same function at inference), so a run continued without
    dropout soups with its start; the soup records the first bundle's encoder config."""
    a = _bundle(tmp_path / "a", 1)
    torch.manual_seed(2)
    enc = EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=32, num_layers=1, dropout=0.0)
    tok = CharTokenizer()
    b = save(tmp_path / "b", AcousticModel(ModelConfig(enc, tok.vocab_size)),
             features=FbankConfig(num_mel_bins=16), tokenizer=tok, provenance={"recipe": "nodrop"})
    out = average_bundles([a, b], tmp_path / "avg")
    assert load(out).model.cfg == load(a).model.cfg


def test_a_longer_lookahead_soups_with_its_start_grown_to_it(tmp_path) -> None:
    """A run continued with a longer lookahead (training grows the row convolution with zero
    future taps) averages with its start: the start is grown the same way first, the soup has
    the longer lookahead, and its row convolution is the mean of the grown weights (the start's
    new taps counted as zero). Averaging a bundle with itself grown computes its own outputs."""
    from training.train import grow_lookahead

    tok = CharTokenizer()
    torch.manual_seed(1)
    start = AcousticModel(ModelConfig(EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=32,
                                                    num_layers=1), tok.vocab_size))  # lookahead 2
    with torch.no_grad():  # trained-looking: every row convolution tap nonzero
        for prm in start.parameters():
            prm.add_(0.2 * torch.randn_like(prm))
    a = save(tmp_path / "a", start, features=FbankConfig(num_mel_bins=16), tokenizer=tok,
             provenance={"recipe": "la2"})
    torch.manual_seed(3)
    long = EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=32, num_layers=1, lookahead=5)
    c = save(tmp_path / "c", AcousticModel(ModelConfig(long, tok.vocab_size)),
             features=FbankConfig(num_mel_bins=16), tokenizer=tok, provenance={"recipe": "la5"})
    out = average_bundles([a, c], tmp_path / "avg")
    assert load(out).model.cfg.encoder.lookahead == 5
    wa, wc, wo = (load_file(str(p / "model.safetensors")) for p in (a, c, out))
    key = "encoder.rowconv.conv.weight"
    assert wo[key].shape == (32, 1, 6)
    assert torch.allclose(wo[key], (grow_lookahead(wa, 5)[key] + wc[key]) / 2, atol=1e-7)
    assert torch.count_nonzero(grow_lookahead(wa, 5)[key][..., 3:]) == 0

    grown = load(a).model
    grown_cfg = ModelConfig(EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=32,
                                          num_layers=1, lookahead=5), tok.vocab_size)
    g = AcousticModel(grown_cfg)
    g.load_state_dict(grow_lookahead(grown.state_dict(), 5))
    gpath = save(tmp_path / "g", g, features=FbankConfig(num_mel_bins=16), tokenizer=tok,
                 provenance={"recipe": "grown"})
    same = load(average_bundles([a, gpath], tmp_path / "same")).model.eval()
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        assert torch.allclose(same(x)[0], load(a).model.eval()(x)[0], atol=1e-5)
    wide = EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=48, num_layers=1, lookahead=5)
    d = save(tmp_path / "d", AcousticModel(ModelConfig(wide, tok.vocab_size)),
             features=FbankConfig(num_mel_bins=16), tokenizer=tok, provenance={"recipe": "w"})
    with pytest.raises(ValueError, match="differs"):  # another function: still refused
        average_bundles([a, d], tmp_path / "avg2")


def test_weighted_soup_interpolates_and_records_its_weights(tmp_path) -> None:
    """`chorus average --weights 0.25,0.75 A B`: every float tensor is 0.25 A + 0.75 B (weight
    space interpolation, WiSE-FT), the provenance records each member's weight, and weights
    that are not one non-negative number per bundle summing to 1 are refused by name. The
    weights are one comma-separated value, so bundles may follow them on the command line."""
    a, b = _bundle(tmp_path / "a", 1), _bundle(tmp_path / "b", 2)
    run = subprocess.run([sys.executable, "-m", "clients.cli", "average", "--weights",
                          "0.25,0.75", "--out", str(tmp_path / "mix"), str(a), str(b)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["weights"] == [0.25, 0.75]
    wa, wb, wo = (load_file(str(p / "model.safetensors")) for p in (a, b, tmp_path / "mix"))
    for k, v in wo.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.25 * wa[k] + 0.75 * wb[k], atol=1e-7), k
            assert not torch.allclose(v, (wa[k] + wb[k]) / 2, atol=1e-7) or torch.equal(wa[k], wb[k])
    assert [m["weight"] for m in load(tmp_path / "mix").provenance["averaged_from"]] == [0.25, 0.75]
    for bad, says in (("0.5", "weights must be 2 non-negative numbers"),
                      ("0.6,0.6", "weights must be 2 non-negative numbers"),
                      ("-0.5,1.5", "weights must be 2 non-negative numbers"),
                      ("0.5,half", "--weights: expected comma-separated numbers")):
        run = subprocess.run([sys.executable, "-m", "clients.cli", "average", str(a), str(b),
                              f"--weights={bad}", "--out", str(tmp_path / "bad")],
                             capture_output=True, text=True)
        assert run.returncode != 0 and says in run.stderr, run.stderr
    assert not (tmp_path / "bad").exists()
