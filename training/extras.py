"""Training-only weights kept beside a bundle, so that a continuation starts where the run
ended. A module names them in `bundle_extras` (prefixes of its own state-dict keys outside
`model.`): the pruned RNN-T loss's simple joiner (`simple_am`, `simple_lm`), which decoding
never uses. Without them a continuation from a bundle started that joiner from random, and the
pruning bands of its first hundreds of steps came from an untrained joiner (session 24: the
train loss jumped from 0.7 to 14 and 500 steps did not win back the restart).

They go in their own safetensors file, not in model.safetensors: the bundle's model stays
what serving loads, and a bundle without the file (older ones) still loads and warm-starts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

EXTRAS = "training_extras.safetensors"

log = logging.getLogger(__name__)


def _own(module: Any) -> dict[str, Any]:
    """The module's state entries under its `bundle_extras` prefixes."""
    prefixes = tuple(getattr(module, "bundle_extras", ()))
    if not prefixes:
        return {}
    return {k: v for k, v in module.state_dict().items() if k.startswith(prefixes)}


def save_extras(bundle_dir: str | Path, module: Any) -> Path | None:
    """Write the module's training-only weights into the bundle; None if it has none."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in _own(module).items()}
    if not state:
        return None
    path = Path(bundle_dir) / EXTRAS
    save_file(state, str(path))
    return path


def load_extras(bundle_dir: str | Path, module: Any) -> list[str]:
    """Load the bundle's training-only weights that the module has; return the names loaded.
    Missing ones (a bundle from before this file, or from another head) keep their fresh
    initialisation, with a warning that says so. A shape that differs is refused by name."""
    from safetensors.torch import load_file

    mine = _own(module)
    if not mine:
        return []
    path = Path(bundle_dir) / EXTRAS
    theirs = load_file(str(path)) if path.is_file() else {}
    found = {k: v for k, v in theirs.items() if k in mine}
    for k, v in found.items():
        if v.shape != mine[k].shape:
            raise ValueError(f"init_from {bundle_dir}: {EXTRAS} {k} has shape "
                             f"{tuple(v.shape)}, the module's is {tuple(mine[k].shape)}")
    missing = sorted(set(mine) - set(found))
    if missing:
        log.warning("init_from %s: no %s for %s: they start from their initialisation",
                    bundle_dir, EXTRAS, ", ".join(missing))
    module.load_state_dict(found, strict=False)
    return sorted(found)
