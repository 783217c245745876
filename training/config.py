"""Training configuration: one typed dataclass tree, loaded from YAML, overridable from the CLI.

`chorus train --config training/recipes/NAME.yaml model.d_model=320 optim.max_steps=2000`
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.nn.encoder import EncoderConfig


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # Lhotse CutSet manifests
    dev: list[str] = field(default_factory=list)
    max_duration_s: float = 120.0  # audio seconds per batch (duration-bucketed)
    num_buckets: int = 10
    num_workers: int = 1
    dev_max_cuts: int = 200


@dataclass
class AugmentConfig:
    speed: tuple[float, ...] = (0.9, 1.0, 1.1)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    telephone_prob: float = 0.1  # 300-3400 Hz band-limit + 8 kHz mu-law round trip
    reverb_prob: float = 0.2
    spec_time_masks: int = 2
    spec_time_width: int = 20
    spec_freq_masks: int = 2
    spec_freq_width: int = 15
    # vocal-tract-length perturbation (Jaitly & Hinton 2013): per utterance a warp factor drawn
    # uniformly from this range (0.01 steps) warps the mel filterbank's frequency axis
    # (models.features.fbank.vtln_warp); (1.0, 1.0) = off. Formants move without the tempo
    # and pitch change of `speed`, a voice the corpus never had.
    vtlp: tuple[float, float] = (1.0, 1.0)

    def validate(self) -> None:
        lo, hi = self.vtlp
        if not 0.8 <= lo <= hi <= 1.25:
            raise ValueError(f"config augment.vtlp must be [low, high] with 0.8 <= low <= high "
                             f"<= 1.25 (warp factors; [1.0, 1.0] = off), got {list(self.vtlp)}")


@dataclass
class RobustConfig:
    """Corrupted training views and GAN-robust training (training.robust; issue 17).

    `corrupt`: each training utterance's waveform is corrupted by a draw from the corruption
    library (training.data.corrupt: pyroomacoustics rooms, exact-SNR noise, babble of other
    training voices, telephone) instead of augment's noise / reverb / telephone; the ASR loss
    sees the corrupted view. With `l1_weight` or `gan_weight` > 0 the clean view of the same
    utterance (same speed factor, no corruption, no SpecAugment) is encoded too, and the
    encoder is pulled toward mapping the corrupted view onto the clean view's embeddings: the
    L1 distance between paired frames and / or a WGAN-GP critic on frame embeddings.
    """

    corrupt: bool = False
    clean_prob: float = 0.2  # left uncorrupted (the ASR loss keeps seeing clean speech)
    noise_prob: float = 0.4  # white / pink / brown at snr_db
    babble_prob: float = 0.1  # 4 other training utterances at babble_snr_db
    farfield_prob: float = 0.2  # a simulated room, then pink noise at 20 dB
    telephone_prob: float = 0.1
    snr_db: tuple[float, float] = (0.0, 20.0)
    babble_snr_db: tuple[float, float] = (5.0, 20.0)
    rir_bank: int = 100  # room responses simulated once per worker, drawn per utterance
    l1_weight: float = 0.0  # mean |enc(corrupted) - enc(clean)| per frame and dimension
    gan_weight: float = 0.0  # the encoder's WGAN term: -critic(enc(corrupted))
    critic_steps: int = 1  # critic updates per encoder step
    critic_lr: float = 1e-4
    gp_weight: float = 10.0  # WGAN-GP gradient penalty (Gulrajani et al. 2017)
    critic_dim: int = 256
    critic_frames: int = 2048  # paired frames sampled per critic update

    @property
    def paired(self) -> bool:
        return self.l1_weight > 0 or self.gan_weight > 0

    def validate(self) -> None:
        probs = (self.clean_prob, self.noise_prob, self.babble_prob, self.farfield_prob,
                 self.telephone_prob)
        if min(probs) < 0 or sum(probs) <= 0:
            raise ValueError(f"config robust: corruption probabilities must be >= 0 with a "
                             f"positive sum, got {probs}")
        if self.paired and not self.corrupt:
            raise ValueError("config robust.l1_weight / gan_weight need robust.corrupt=true "
                             "(paired clean / corrupted views)")
        if self.critic_steps < 1 or self.critic_frames < 2:
            raise ValueError("config robust.critic_steps must be >= 1 and critic_frames >= 2")


ADVERSARY_TARGETS = ("none", "engine", "voice")


@dataclass
class AdversaryConfig:
    """Voice-invariant training (training.adversary): a classifier on the encoder's frame
    embeddings learns which engine or voice spoke each frame, and the encoder learns to leave it
    at chance (the confusion loss: cross-entropy to the uniform distribution), so what the
    encoder keeps is what all voices share. Training-only: bundles stay ordinary."""

    target: str = "none"  # "engine" (cut.custom["engine"]) | "voice" (the supervision speaker)
    weight: float = 0.1  # the encoder's confusion term, against the ASR loss
    lr: float = 1e-3  # the classifier's own Adam
    dim: int = 256  # the classifier's hidden width
    frames: int = 2048  # frames sampled per step from the batch's valid frames

    def validate(self) -> None:
        if self.target not in ADVERSARY_TARGETS:
            raise ValueError(f"config adversary.target must be one of {ADVERSARY_TARGETS}, got "
                             f"{self.target!r}")
        if self.weight < 0 or self.lr <= 0 or self.dim < 1 or self.frames < 2:
            raise ValueError(f"config adversary: weight >= 0, lr > 0, dim >= 1 and frames >= 2, "
                             f"got weight={self.weight} lr={self.lr} dim={self.dim} "
                             f"frames={self.frames}")


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 300
    max_steps: int = 5000
    # A wall-clock budget (minutes, 0 = none): training stops when it is spent and the
    # cosine decay follows elapsed time instead of steps, so a fixed-compute run always
    # anneals fully whatever the machine's speed. The steps reached land in the summary.
    max_minutes: float = 0.0
    grad_clip: float = 5.0
    val_every_steps: int = 500
    # Checkpoint averaging (WeNet's average_model, icefall's --avg): also keep the last N
    # validation checkpoints and, at the end, score their mean weights on dev; the bundle
    # gets whichever of best checkpoint / final weights / average has the lowest dev WER.
    average_last: int = 0
    # The first N steps train the head alone on the frozen encoder (and front end: no
    # gradient, dropout off), then everything trains: linear probing before fine-tuning, so
    # that a new head on a trained encoder (e.g. subword units after init_scope=encoder)
    # learns before its random start can pull the encoder away; the frozen steps cost a
    # forward pass only. The encoder's AdamW moments start at the thaw.
    freeze_encoder_steps: int = 0


@dataclass
class HeadConfig:
    type: str = "ctc"  # ctc | gram_ctc | rnnt
    units: str = "char"  # ctc, rnnt: char | subword (sentencepiece units from the train text)
    subword_vocab: int = 256  # units=subword: vocabulary size incl. blank, <unk>, the characters
    subword_type: str = "unigram"  # units=subword: unigram | bpe (sentencepiece model type)
    gram_size: int = 100  # gram_ctc: most frequent within-word n-grams added to the characters
    gram_max_n: int = 3
    grams: list[str] = field(default_factory=list)  # gram_ctc: a fixed gram set (e.g. refined)
    predictor: str = "lstm"  # rnnt: lstm | stateless
    pred_dim: int = 256  # rnnt
    joiner_dim: int = 256  # rnnt
    rnnt_loss: str = "full"  # rnnt: full | pruned (training.losses.pruned_rnnt)
    prune_range: int = 5  # rnnt pruned: label positions kept per frame
    simple_loss_scale: float = 0.5  # rnnt pruned: weight of the simple (linear joiner) loss
    # rnnt: cold fusion with this frozen character LM (a `chorus lm train --units char`
    # directory); it replaces the LM of an init_from bundle (a domain swap)
    cold_fusion_lm: str = ""
    cold_fusion_dim: int = 256  # rnnt cold fusion: width of the LM projection and the gate


@dataclass
class TrainConfig:
    name: str = "ctc"
    out_dir: str = "runs/ctc"
    seed: int = 0
    # warm start: a bundle directory whose weights (and feature normaliser) training continues
    # from; its model config must equal `model` but for the normaliser mode, the dropout, a
    # longer lookahead and the frame rate from x4 to x2 (training.train.warm_start). The
    # summary chains the earlier runs' history.
    init_from: str | None = None
    # what init_from loads: "all" (the whole model), or "encoder" (encoder + normaliser only:
    # the head, its units and the tokenizer start fresh, e.g. subword units on a character
    # model's encoder); the encoder config must equal `model` (with the same exceptions)
    init_scope: str = "all"
    model: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # the front end: "log" (log-mel) or "pcen" (trainable per-channel PCEN: training.frontend;
    # the bundle records the learned values and serving computes the same PCEN)
    frontend: str = "log"
    chunk_frames: int = 32
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str = "32-true"  # Lightning's: "bf16-mixed" on a GPU (autocast; CTC runs in fp32)
    threads: int = 1
    # write each process's trained cut ids and final parameter digest (training.audit)
    audit: bool = False


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        sub = {"model": EncoderConfig, "head": HeadConfig, "data": DataConfig,
               "augment": AugmentConfig, "robust": RobustConfig,
               "adversary": AdversaryConfig, "optim": OptimConfig}.get(name) if cls is TrainConfig else None
        if sub is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{name}: expected a mapping, got {value!r}")
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        elif isinstance(value, list) and "tuple" in str(ftype):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _scalar(value, str(ftype), f"{where}.{name}")
    return cls(**kwargs)


def _scalar(value: Any, ftype: str, where: str) -> Any:
    """A float / int / bool field's value checked (and a float written as YAML 1.1 reads
    `4e-4`, a string, converted), so a mistyped value fails here with the field named instead
    of deep inside training."""
    if ftype == "float":
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if ftype == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if ftype == "bool" and not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    return value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:  # type: ignore[assignment]
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        raw = loaded or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.field=value")
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return _build(TrainConfig, raw, "config")
