"""Weight averaging: the mean of several checkpoints' weights as one model.

What WeNet's `average_model.py` and icefall's `--avg N` do: the last N checkpoints of a run
(or the endpoints of runs continued from one another, a "model soup") lie in one basin, and
their mean usually decodes better than any one of them at no decoding cost. Weights other than
equal interpolate in weight space (WiSE-FT, Wortsman et al. 2022: 0.7 of a clean model with 0.3
of its noise-trained continuation picks a point between the two on the clean / noisy trade-off).
Floating-point tensors are averaged in float64 and cast back; integer buffers (counters) must
agree and are kept. Hand-written: a dozen lines over safetensors / torch state dicts, no library needed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def _mixing_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Equal weights by default; given ones must be n non-negative numbers summing to 1."""
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n or min(w) < 0 or abs(sum(w) - 1.0) > 1e-6:
        raise ValueError(f"average: weights must be {n} non-negative numbers summing to 1 (one "
                         f"per checkpoint), got {list(weights)}")
    return w


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]],
                        names: Sequence[str] = (),
                        weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes, weighted by
    `weights` (default equal). `names` label the members in errors (default: positions)."""
    if not states:
        raise ValueError("average: no checkpoints given")
    mix = _mixing_weights(weights, len(states))
    labels = list(names) or [f"#{i}" for i in range(len(states))]
    first = states[0]
    out: dict[str, torch.Tensor] = {}
    for label, sd in zip(labels[1:], states[1:], strict=True):
        if set(sd) != set(first):
            diff = sorted(set(sd) ^ set(first))[:5]
            raise ValueError(f"average: {label} has other tensors than {labels[0]}: {diff}")
    for key, ref in first.items():
        for label, sd in zip(labels[1:], states[1:], strict=True):
            if sd[key].shape != ref.shape or sd[key].dtype != ref.dtype:
                raise ValueError(f"average: {label} tensor {key} is {tuple(sd[key].shape)} "
                                 f"{sd[key].dtype}, {labels[0]} has {tuple(ref.shape)} {ref.dtype}")
        if ref.is_floating_point():
            total = torch.zeros(ref.shape, dtype=torch.float64)
            for w, sd in zip(mix, states, strict=True):
                total += w * sd[key].detach().cpu().double()
            out[key] = total.to(ref.dtype)
        else:
            for label, sd in zip(labels[1:], states[1:], strict=True):
                if not torch.equal(sd[key].cpu(), ref.cpu()):
                    raise ValueError(f"average: integer tensor {key} differs between "
                                     f"{labels[0]} and {label}")
            out[key] = ref.detach().cpu().clone()
    return out


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A Lightning checkpoint's state dict (weights only; never unpickles code)."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def copy_bundle_except_weights(src: Path, dest: Path) -> None:
    """Copy a bundle's files into `dest` (made) but its weights, training extras and any
    exported ONNX / TensorRT files (they would hold other weights): the decoding side (LM,
    rescorer, tokens) and bundle.json, for a bundle of new weights of the same tokens and
    features."""
    from models.bundle import WEIGHTS
    from training.extras import EXTRAS

    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in (WEIGHTS, EXTRAS) or item.suffix in (".onnx", ".plan", ".engine"):
            continue
        target = dest / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def _inference_config(cfg: Any, lookahead: int | None = None) -> Any:
    """The model config without what only training reads (encoder dropout), at `lookahead`
    (default: its own): bundles that differ only there compute the same function at inference
    once their row convolutions are grown to one lookahead (new taps zero), and may be
    averaged."""
    tau = cfg.encoder.lookahead if lookahead is None else lookahead
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, dropout=0.0,
                                                                lookahead=tau))


def average_bundles(bundles: Sequence[str | Path], out: str | Path,
                    weights: Sequence[float] | None = None) -> Path:
    """Write a bundle at `out` whose weights are the mean of `bundles`' (same model, features
    and tokens), weighted by `weights` (default equal, else one per bundle summing to 1);
    everything else (decoding defaults, LM, rescorer) is the first bundle's.
    Bundles may differ in dropout and lookahead: every row convolution is grown to the longest
    lookahead first (`grow_lookahead`: zero taps, the same function), and the soup has it.
    Any exported ONNX / TensorRT files are not copied: they would hold other weights. Training
    extras (training.extras) are averaged when every bundle has them, else left out."""
    from safetensors.torch import load_file, save_file

    from models.bundle import BUNDLE_JSON, TOKENS, WEIGHTS, load
    from training.extras import EXTRAS
    from training.train import grow_lookahead

    if len(bundles) < 2:
        raise ValueError(f"average: give at least two bundles, got {len(bundles)}")
    mix = _mixing_weights(weights, len(bundles))
    loaded = [load(b) for b in bundles]  # validates each bundle
    first = loaded[0]
    tau = max(b.model.cfg.encoder.lookahead for b in loaded)
    for b in loaded[1:]:
        if _inference_config(b.model.cfg, tau) != _inference_config(first.model.cfg, tau):
            raise ValueError(f"average: {b.path} model {b.model.cfg} differs from "
                             f"{first.path}'s {first.model.cfg}")
        if b.features != first.features:
            raise ValueError(f"average: {b.path} features differ from {first.path}'s")
        if (b.path / TOKENS).read_text() != (first.path / TOKENS).read_text():
            raise ValueError(f"average: {b.path}/{TOKENS} differs from {first.path}'s")
    states = [grow_lookahead(load_file(str(b.path / WEIGHTS)), tau) for b in loaded]
    mean = average_state_dicts(states, [str(b.path) for b in loaded], mix)
    dest = Path(out)
    if dest.resolve() in {b.path.resolve() for b in loaded}:
        raise ValueError(f"average: --out {dest} is one of the inputs")
    copy_bundle_except_weights(first.path, dest)  # decoding side: LM, rescorer, tokens
    save_file(mean, str(dest / WEIGHTS))
    extras = [b.path / EXTRAS for b in loaded]
    if all(p.is_file() for p in extras):  # training-only weights, averaged the same way
        save_file(average_state_dicts([load_file(str(p)) for p in extras],
                                      [str(p) for p in extras], mix), str(dest / EXTRAS))
    meta: dict[str, Any] = json.loads((first.path / BUNDLE_JSON).read_text())
    meta["model"]["encoder"]["lookahead"] = tau
    prov = dict(meta.get("provenance", {}))
    prov["averaged_from"] = [{"bundle": str(b.path), "recipe": b.provenance.get("recipe"),
                              "steps": b.provenance.get("steps"), "weight": w}
                             for b, w in zip(loaded, mix, strict=True)]
    meta["provenance"] = prov
    (dest / BUNDLE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    load(dest)  # the result must load like any bundle
    return dest
