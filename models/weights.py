"""Loading a safetensors file into a module, checked against the config that built it.

Bundles and neural LMs are directories of JSON (the config) and safetensors (weights only), so
loading runs no code; this is the one place that reads the weights, and a file that does not
fit the module its config builds is refused naming the file, the tensors and the shapes.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn


def load_weights(module: nn.Module, path: Path, config: str,
                 error: type[ValueError] = ValueError) -> None:
    """Load `path` into `module`; `config` names the file the module was built from (in
    messages); any problem raises `error`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise error(f"{path} cannot be read: {exc}") from None
    expected = module.state_dict()
    missing, extra = set(expected) - set(state), set(state) - set(expected)
    if missing or extra:
        raise error(f"{path} does not match {config}: missing tensors {sorted(missing)[:5]}, "
                    f"unexpected {sorted(extra)[:5]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise error(f"{path}: tensor {k} has shape {tuple(v.shape)}, {config} implies "
                        f"{tuple(expected[k].shape)}")
    module.load_state_dict(state)
