"""Growing a trained bundle without changing what it computes: widening a recurrent CTC bundle
(training.widen, `chorus widen`: the k-times-wider model gives the same outputs, offline and step
by step; training separates the copies; what it cannot widen exactly is refused by name), a
recipe taking a widened bundle's architecture, and a longer lookahead by warm start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.acoustic import AcousticModel, ModelConfig
from models.bundle import load, save
from models.features import FbankConfig
from models.nn.encoder import EncoderConfig
from models.tokenizer import CharTokenizer
from training.widen import widen_bundle


def _bundle(path: Path, rnn: str = "gru", arch: str = "rnn", head: str = "ctc",
            lookahead: int = 2) -> Path:
    torch.manual_seed(0)
    enc = EncoderConfig(num_mel_bins=16, conv_channels=4, d_model=24, num_layers=2, rnn=rnn,
                        arch=arch, heads=2, ff_mult=2, conv_kernel=3, left_context=8,
                        lookahead=lookahead)
    tok = CharTokenizer()
    model = AcousticModel(ModelConfig(enc, tok.vocab_size, head=head))
    with torch.no_grad():  # trained-looking weights: row convolution and norm off identity
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return save(path, model, features=FbankConfig(num_mel_bins=16), tokenizer=tok,
                provenance={"recipe": "tiny", "steps": 1})


@pytest.mark.parametrize(("rnn", "k"), [("gru", 2), ("lstm", 3)])
def test_widened_model_gives_the_same_outputs_offline_and_streaming(tmp_path, rnn, k) -> None:
    src = _bundle(tmp_path / "src", rnn)
    (src / "encoder.onnx").write_bytes(b"an export of the narrow weights")
    out = widen_bundle(src, tmp_path / "wide", k)
    a, b = load(src).model.eval(), load(out).model.eval()
    assert b.cfg.encoder.d_model == 24 * k and b.num_parameters() > 2 * a.num_parameters()
    assert not (out / "encoder.onnx").exists()  # an export of the old shapes is not carried
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["provenance"]["widened_from"]["factor"] == k
    x = 2 * torch.randn(2, 64, 16)
    with torch.no_grad():
        ya, la = a(x)
        yb, lb = b(x)
        assert torch.equal(la, lb)
        assert torch.allclose(ya, yb, atol=1e-5), (ya - yb).abs().max()
        # step by step: 16 frames a chunk (+ lookahead), states carried
        la_frames = a.lookahead_frames
        xs = torch.cat([x, a.encoder.pad_frame.expand(2, la_frames, -1)], dim=1)
        sa, sb, outs_a, outs_b = a.init_state(2), b.init_state(2), [], []
        for t in range(0, 64, 16):
            oa, sa = a.step(xs[:, t:t + 16 + la_frames], sa)
            ob, sb = b.step(xs[:, t:t + 16 + la_frames], sb)
            outs_a.append(oa)
            outs_b.append(ob)
        assert torch.allclose(torch.cat(outs_a, 1), torch.cat(outs_b, 1), atol=1e-5)


def test_training_separates_the_copies_and_noise_perturbs_them(tmp_path) -> None:
    src = _bundle(tmp_path / "src")
    wide = load(widen_bundle(src, tmp_path / "wide", 2)).model.train()  # dropout 0.1 on
    w = wide.encoder.rnn.weight_hh_l1
    assert torch.equal(w[:24], w[24:48])  # r gate: unit i and its copy i + 24, same row
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    for _ in range(3):
        y, _ = wide(torch.randn(2, 32, 16))
        y.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert not torch.allclose(w[:24], w[24:48])  # dropout masks differ per copy
    noisy = load(widen_bundle(src, tmp_path / "noisy", 2, noise=0.01, seed=1)).model
    nw = noisy.encoder.rnn.weight_ih_l0
    assert not torch.equal(nw[:24], nw[24:48])


def test_what_cannot_be_widened_exactly_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(ValueError, match="only recurrent encoders.*conformer"):
        widen_bundle(_bundle(tmp_path / "conf", arch="conformer"), tmp_path / "o1")
    with pytest.raises(ValueError, match="CTC heads only.*rnnt"):
        widen_bundle(_bundle(tmp_path / "rnnt", head="rnnt"), tmp_path / "o2")
    src = _bundle(tmp_path / "src")
    with pytest.raises(ValueError, match="factor must be an integer >= 2, got 1"):
        widen_bundle(src, tmp_path / "o3", 1)
    cmd = [sys.executable, "-m", "clients.cli", "widen", "--bundle", str(src), "--out", str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "chorus widen: --out" in r.stderr and "is the input" in r.stderr


def test_a_recipe_warm_started_from_a_widened_bundle_takes_its_architecture(tmp_path) -> None:
    """Experiments that continue a bundle (`init_from`) with a recipe pass the bundle's encoder
    architecture as overrides: the recipe's 256-wide model would not load a widened bundle's weights
    (refused by name), with the overrides it builds and loads it; a later override still wins."""
    from training.config import load_config
    from training.experiments import encoder_overrides
    from training.train import make_module, warm_start

    wide = widen_bundle(_bundle(tmp_path / "src"), tmp_path / "wide", 2)
    recipe = "training/recipes/small.yaml"
    tok = CharTokenizer()
    plain = load_config(recipe, [f"init_from={wide}"])
    with pytest.raises(ValueError, match="differs from the config"):
        warm_start(make_module(plain, tok), str(wide))
    later = load_config(recipe, [*encoder_overrides(wide), "model.dropout=0.2"])
    assert (later.model.d_model, later.model.num_mel_bins, later.model.dropout) == (48, 16, 0.2)
    module = make_module(load_config(recipe, [f"init_from={wide}", *encoder_overrides(wide)]),
                         tok)
    warm_start(module, str(wide))
    assert torch.equal(module.model.encoder.rnn.weight_hh_l0,
                       load(wide).model.encoder.rnn.weight_hh_l0)


@pytest.mark.parametrize("scope", ["all", "encoder"])
@pytest.mark.parametrize("start", [2, 0])
def test_warm_start_grows_the_lookahead_with_zero_taps_and_the_same_outputs(tmp_path, scope,
                                                                            start) -> None:
    """`init_from` a bundle with a longer `model.lookahead` (and another dropout): the row
    convolution's new future taps start at zero (from lookahead 0, whose stored weight the model
    never used, the identity), so the encoder's outputs are unchanged (the whole model's with
    scope "all"), and step by step with the longer lookahead equals offline; a shorter lookahead
    is refused by name."""
    from training.config import load_config
    from training.experiments import encoder_overrides
    from training.train import make_module, warm_start

    src = _bundle(tmp_path / "src", lookahead=start)  # every weight perturbed, rowconv's too
    over = [*encoder_overrides(src), f"init_from={src}", f"init_scope={scope}"]
    module = make_module(load_config("training/recipes/small.yaml",
                                     [*over, "model.lookahead=5", "model.dropout=0.3"]),
                         CharTokenizer())
    warm_start(module, str(src), scope)
    a, b = load(src).model.eval(), module.model.eval()
    taps = b.encoder.rowconv.conv.weight
    assert taps.shape[-1] == 6 and not taps[..., 3:].any()
    x = 2 * torch.randn(2, 64, 16)
    with torch.no_grad():
        assert torch.allclose(a.encoder(x)[0], b.encoder(x)[0], atol=1e-6)
        yb, _ = b(x)
        if scope == "all":  # the head came too
            assert torch.allclose(a(x)[0], yb, atol=1e-6)
        la = b.lookahead_frames  # 5 frames of 4 input frames each
        xs = torch.cat([x, b.encoder.pad_frame.expand(2, la, -1)], dim=1)
        state, outs = b.init_state(2), []
        for t in range(0, 64, 16):
            o, state = b.step(xs[:, t:t + 16 + la], state)
            outs.append(o)
        assert torch.allclose(torch.cat(outs, 1), yb, atol=1e-5)
    if start:
        short = make_module(load_config("training/recipes/small.yaml",
                                        [*over, f"model.lookahead={start - 1}"]), CharTokenizer())
        with pytest.raises(ValueError, match=f"lookahead {start - 1} is shorter than the "
                                             f"bundle's {start}"):
            warm_start(short, str(src), scope)


@pytest.mark.parametrize("scope", ["all", "encoder"])
def test_warm_start_from_x4_to_x2_keeps_every_weight_and_spreads_the_lookahead_taps(
        tmp_path, scope) -> None:
    """`init_from` an x4 bundle with `model.subsampling=2`: every weight but the row
    convolution's is the bundle's (the convolutions keep their kernels, only a stride changes),
    its taps move from frame t + j to t + 2j (zero between: the lookahead keeps its time, 2
    frames of 40 ms = 4 of 20 ms), and the x2 model steps chunk by chunk as it runs offline; a
    lookahead shorter than the bundle's in time, and x2 -> x4, are refused by name."""
    from training.config import load_config
    from training.experiments import encoder_overrides
    from training.train import make_module, warm_start

    src = _bundle(tmp_path / "src", lookahead=2)
    over = [*encoder_overrides(src), f"init_from={src}", f"init_scope={scope}",
            "model.subsampling=2"]
    module = make_module(load_config("training/recipes/small.yaml", [*over, "model.lookahead=4"]),
                         CharTokenizer())
    warm_start(module, str(src), scope)
    a, b = load(src).model.eval(), module.model.eval()
    theirs, mine = a.state_dict(), b.state_dict()
    tap = "encoder.rowconv.conv.weight"
    assert mine[tap].shape[-1] == 5 and torch.equal(mine[tap][..., ::2], theirs[tap])
    assert not mine[tap][..., 1::2].any()
    for k, v in theirs.items():
        if k != tap and (scope == "all" or k.startswith("encoder.")):
            assert torch.equal(mine[k], v), k
    assert b.subsampling == 2 and b.lookahead_frames == 8
    x = 2 * torch.randn(2, 64, 16)
    with torch.no_grad():
        yb, lengths = b(x)
        assert yb.shape[1] == 32 and lengths.tolist() == [32, 32]
        xs = torch.cat([x, b.encoder.pad_frame.expand(2, 8, -1)], dim=1)
        state, outs = b.init_state(2), []
        for t in range(0, 64, 16):
            o, state = b.step(xs[:, t:t + 16 + 8], state)
            outs.append(o)
        assert torch.allclose(torch.cat(outs, 1), yb, atol=1e-5)
    short = make_module(load_config("training/recipes/small.yaml", [*over, "model.lookahead=3"]),
                        CharTokenizer())
    with pytest.raises(ValueError, match="lookahead 3 is shorter than the bundle's 2 x 2 frames"):
        warm_start(short, str(src), scope)
    x2 = save(tmp_path / "x2", b, features=FbankConfig(num_mel_bins=16), tokenizer=CharTokenizer())
    back = make_module(load_config("training/recipes/small.yaml",
                                   [*encoder_overrides(x2), f"init_from={x2}"]), CharTokenizer())
    back_cfg = load_config("training/recipes/small.yaml",
                           [*encoder_overrides(x2), "model.subsampling=4", "model.lookahead=4"])
    with pytest.raises(ValueError, match="model.subsampling 4 from the bundle's 2: only the same"):
        warm_start(make_module(back_cfg, CharTokenizer()), str(x2), scope)
    assert back.model.cfg.encoder.lookahead == 4  # encoder_overrides carries the lookahead
    warm_start(back, str(x2), scope)  # x2 -> x2 loads as it is
