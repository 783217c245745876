"""Model bundles (DESIGN 3.1): a directory with bundle.json, model.safetensors, tokens.txt.

`load(path)` validates everything and fails with a message naming the file and field; weights
are safetensors (loading a bundle never executes code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.acoustic import AcousticModel, ModelConfig
from models.decoding.lm_fusion import LmConfig, LmFusion
from models.decoding.rescore import Rescorer
from models.features import FbankConfig
from models.lm.arpa import ArpaError
from models.lm.mixture import load_lms
from models.tokenizer import CharTokenizer
from models.weights import load_weights

FORMAT_VERSION = 1
BUNDLE_JSON = "bundle.json"
WEIGHTS = "model.safetensors"
TOKENS = "tokens.txt"
DEFAULT_BUNDLE = Path(__file__).parent / "pretrained" / "default"
# the CTC model shipped as the default until session 26: CTC-only tools and experiments use it
CTC_BUNDLE = Path(__file__).parent / "pretrained" / "ctc"


class BundleError(ValueError):
    pass


@dataclass(frozen=True)
class DecodingDefaults:
    chunk_frames: int = 32  # 10 ms feature frames per step (multiple of the subsampling)
    decoder: str = "greedy"  # or "beam" (CTC prefix beam search)
    beam_size: int = 8
    lm: str | None = None  # word n-gram LM (ARPA, may be .gz), relative to the bundle; beam only
    lm_mix: tuple[str, ...] = ()  # more ARPA LMs interpolated with `lm` (models.lm.mixture)
    lm_mix_weights: tuple[float, ...] = ()  # interpolation weights of (lm, *lm_mix), sum 1
    lm_weight: float = 0.5  # alpha of shallow fusion
    word_bonus: float = 1.0  # beta, per word
    oov_penalty: float = 10.0  # per word outside the LM vocabulary
    lexicon: bool = False  # beam + LM: only words of the LM's vocabulary (hard constraint)
    lm_lookahead: bool = False  # beam + n-gram: partial words pay their unigram mass (LmConfig)
    ilm_weight: float = 0.0  # RNN-T beam + LM: internal-LM subtraction weight (LmConfig)
    # beam only: a neural LM directory (models/lm/neural.py) inside the bundle that rescores
    # each final's n-best (models/decoding/rescore.py); None: no rescoring
    rescore_lm: str | None = None
    rescore_weight: float = 0.3
    rescore_nbest: int = 8


@dataclass
class Bundle:
    path: Path
    model: AcousticModel
    features: FbankConfig
    tokenizer: CharTokenizer
    decoding: DecodingDefaults
    provenance: dict[str, Any] = field(default_factory=dict)
    lm: LmFusion | None = None  # what the beam decoder fuses (None: no LM in the bundle)
    rescorer: Rescorer | None = None  # rescores the beam's finals (None: none in the bundle)

    @property
    def frame_seconds(self) -> float:
        """Seconds per model output frame."""
        return self.features.hop_ms / 1000.0 * self.model.subsampling


def save(path: str | Path, model: AcousticModel, *, features: FbankConfig,
         tokenizer: CharTokenizer, decoding: DecodingDefaults | None = None,
         provenance: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.cfg.to_dict(),
        "features": features.to_dict(),
        "decoding": (decoding or DecodingDefaults()).__dict__,
        "tokens": TOKENS,
        "provenance": provenance or {},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    tokenizer.save(out / TOKENS)
    (out / BUNDLE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load(path: str | Path | None = None, *, device: str = "cpu") -> Bundle:

    root = Path(path) if path is not None else DEFAULT_BUNDLE
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {root}")
    for name in (BUNDLE_JSON, WEIGHTS, TOKENS):
        if not (root / name).is_file():
            raise BundleError(f"bundle {root} is missing {name}")
    try:
        meta = json.loads((root / BUNDLE_JSON).read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{root / BUNDLE_JSON} is not valid JSON: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{root / BUNDLE_JSON}: format_version must be {FORMAT_VERSION}, "
                          f"got {meta.get('format_version')!r}")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        feats = FbankConfig.from_dict(meta["features"])
        dec = dict(meta.get("decoding", {}))
        for key in ("lm_mix", "lm_mix_weights"):  # JSON lists -> the dataclass's tuples
            if key in dec:
                dec[key] = tuple(dec[key])
        decoding = DecodingDefaults(**dec)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / BUNDLE_JSON}: invalid field: {exc}") from exc
    tokenizer = CharTokenizer.load(root / TOKENS)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise BundleError(f"{root / TOKENS} has {tokenizer.vocab_size} tokens but "
                          f"bundle.json model.vocab_size is {cfg.vocab_size}")
    if feats.num_mel_bins != cfg.encoder.num_mel_bins:
        raise BundleError(f"bundle.json: features.num_mel_bins {feats.num_mel_bins} != "
                          f"model.encoder.num_mel_bins {cfg.encoder.num_mel_bins}")
    if decoding.decoder not in ("greedy", "beam") or decoding.beam_size < 1:
        raise BundleError(f"bundle.json: decoding.decoder must be 'greedy' or 'beam' and "
                          f"beam_size >= 1, got {decoding.decoder!r}, {decoding.beam_size}")
    if decoding.chunk_frames <= 0 or decoding.chunk_frames % cfg.encoder.subsampling:
        raise BundleError(f"bundle.json: decoding.chunk_frames must be a positive multiple of "
                          f"{cfg.encoder.subsampling}, got {decoding.chunk_frames}")
    model = AcousticModel(cfg)
    load_weights(model, root / WEIGHTS, BUNDLE_JSON, BundleError)
    model.to(device).eval()
    return Bundle(root, model, feats, tokenizer, decoding, meta.get("provenance", {}),
                  load_lm(root, decoding), load_rescorer(root, decoding))


def load_rescorer(root: Path, decoding: DecodingDefaults) -> Rescorer | None:
    if not decoding.rescore_lm:
        return None
    from models.lm.neural import NeuralLmError
    from models.lm.neural import load as load_neural

    path = root / decoding.rescore_lm
    if not path.resolve().is_relative_to(root.resolve()):
        raise BundleError(f"bundle.json: decoding.rescore_lm must be inside the bundle, got "
                          f"{decoding.rescore_lm!r}")
    if decoding.rescore_nbest < 1:
        raise BundleError(f"bundle.json: decoding.rescore_nbest must be >= 1, got "
                          f"{decoding.rescore_nbest}")
    try:
        lm = load_neural(path)
    except NeuralLmError as exc:
        raise BundleError(f"bundle.json: decoding.rescore_lm {decoding.rescore_lm!r}: {exc}") from exc
    return Rescorer(lm, decoding.rescore_weight, decoding.rescore_nbest)


def load_lm(root: Path, decoding: DecodingDefaults) -> LmFusion | None:
    if not decoding.lm:
        return None
    names = [decoding.lm, *decoding.lm_mix]
    for name in names:
        if not (root / name).resolve().is_relative_to(root.resolve()):
            raise BundleError(f"bundle.json: decoding.lm must be inside the bundle, got {name!r}")
    try:
        lm = load_lms([root / n for n in names], decoding.lm_mix_weights or None)
    except (ArpaError, OSError, UnicodeDecodeError) as exc:
        which = repr(names[0]) if len(names) == 1 else f"{names!r} (mixed)"
        raise BundleError(f"bundle.json: decoding.lm {which}: {exc}") from exc
    try:
        cfg = LmConfig(decoding.lm_weight, decoding.word_bonus, decoding.oov_penalty,
                       decoding.lexicon, decoding.lm_lookahead, decoding.ilm_weight)
        return LmFusion(lm, cfg)
    except ValueError as exc:
        raise BundleError(f"bundle.json: decoding (lm_weight, oov_penalty, ilm_weight, "
                          f"lm_lookahead): {exc}") from exc
