"""Widen a trained recurrent CTC model k times, computing the same function (Net2WiderNet).

The shipped model underfits: the 3 x 256 GRU transcribes its own (clean, unaugmented) training
utterances at 39.8 % greedy WER against 43.6 % on dev (session 16), so more capacity should
buy accuracy; but a wider model trained from scratch spends hours just reaching where the
shipped one already is. Net2Net (Chen, Goodfellow and Shlens, 2016) starts the wider model
where the narrow one stands: every unit of width D becomes k copies, so the new model's output
equals the old one's, and training moves on from there (dropout masks differ per copy, which
breaks the symmetry; `noise` adds a little more).

Exact for an integer factor k, unit i copied to i, i + D, ..., i + (k - 1) D:
- a layer's output rows (and biases) are tiled k times: each copy computes the same value;
- a layer's input columns that read a widened vector are tiled and divided by k: the sum over
  k equal copies is the old sum;
- GRU / LSTM gates are blocks of D rows (r, z, n / i, f, g, o): each block is tiled alone; the
  recurrent weights read the widened hidden state (columns / k); zero initial states stay equal
  across copies, so copies stay equal through time;
- the row convolution is depthwise (per unit): tiled;
- LayerNorm over k equal copies has the old mean and variance: its gain and bias are tiled.
Conformer bodies and transducer heads are refused (their attention heads and joiners would
need their own rules). Hand-written: a few tensor copies over a state dict; no library does
this for our layer layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

GATES = {"gru": 3, "lstm": 4}


def _tile_rows(w: torch.Tensor, k: int, blocks: int = 1) -> torch.Tensor:
    """(blocks * D, ...) -> (blocks * k D, ...): each block of D rows repeated k times."""
    parts = w.chunk(blocks, dim=0)
    return torch.cat([p.repeat(k, *([1] * (w.dim() - 1))) for p in parts], dim=0)


def _tile_cols(w: torch.Tensor, k: int) -> torch.Tensor:
    """(..., D) -> (..., k D) / k: reads k equal copies of its input, same sum."""
    return w.repeat(*([1] * (w.dim() - 1)), k) / k


def widen_state_dict(state: dict[str, torch.Tensor], enc: dict[str, Any], k: int,
                     noise: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of the model whose encoder `enc` (EncoderConfig fields) is k times as
    wide (d_model * k). `noise`: Gaussian noise added to every widened weight, relative to
    its tensor's standard deviation (0: the exact same function)."""
    if k < 2:
        raise ValueError(f"widen: factor must be an integer >= 2, got {k}")
    if enc.get("arch", "rnn") != "rnn":
        raise ValueError(f"widen: only recurrent encoders (arch rnn), not {enc.get('arch')!r}")
    gates = GATES[enc.get("rnn", "gru")]
    out: dict[str, torch.Tensor] = {}
    for name, w in state.items():
        if name.startswith(("encoder.rnn.weight_ih", "encoder.rnn.weight_hh")):
            new = _tile_cols(_tile_rows(w, k, gates), k)
        elif name.startswith("encoder.rnn.bias"):
            new = _tile_rows(w, k, gates)
        elif name in ("encoder.subsampling.proj.weight", "encoder.subsampling.proj.bias",
                      "encoder.rowconv.conv.weight", "encoder.norm.weight", "encoder.norm.bias"):
            new = _tile_rows(w, k)
        elif name == "head.proj.weight":
            new = _tile_cols(w, k)
        elif name.startswith(("head.predictor", "head.joiner")):
            raise ValueError("widen: transducer heads are not supported (CTC heads only)")
        else:  # feature normaliser, conv front end, head bias: unchanged
            new = w.clone()
        if noise > 0 and new.shape != w.shape and new.is_floating_point():
            gen = torch.Generator().manual_seed(seed + len(out))
            new = new + noise * float(w.std()) * torch.randn(new.shape, generator=gen)
        out[name] = new.contiguous()
    return out


def widen_bundle(bundle: str | Path, out: str | Path, k: int = 2, noise: float = 0.0,
                 seed: int = 0) -> Path:
    """Write at `out` the bundle whose encoder is k times as wide as `bundle`'s; tokens,
    features, LM and decoding defaults copied (exports are not: they hold the old shapes)."""
    from safetensors.torch import load_file, save_file

    from models.bundle import BUNDLE_JSON, WEIGHTS, load
    from training.average import copy_bundle_except_weights

    src = load(bundle)  # validates the bundle
    if src.model.cfg.head != "ctc":
        raise ValueError(f"widen: CTC heads only, {src.path} has {src.model.cfg.head!r}")
    dest = Path(out)
    if dest.resolve() == src.path.resolve():
        raise ValueError(f"widen: --out {dest} is the input bundle")
    meta: dict[str, Any] = json.loads((src.path / BUNDLE_JSON).read_text())
    enc = meta["model"]["encoder"]
    wide = widen_state_dict(load_file(str(src.path / WEIGHTS)), enc, k, noise, seed)
    copy_bundle_except_weights(src.path, dest)
    save_file(wide, str(dest / WEIGHTS))
    meta["model"]["encoder"] = {**enc, "d_model": enc["d_model"] * k}
    meta["provenance"] = {**meta.get("provenance", {}),
                          "widened_from": {"bundle": str(src.path), "factor": k,
                                           "noise": noise, "seed": seed}}
    (dest / BUNDLE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    load(dest)  # the result must load like any bundle
    return dest
