"""`chorus train`: train a streaming CTC model from Lhotse manifests and export a bundle.

Launch:
- single process:  chorus train --config training/recipes/default.yaml
- multi-process (one node, DDP; gloo on CPU, NCCL on GPU):
      chorus train --config ... devices=2
- multi-node: run the same command on every node with num_nodes=N devices=G and the
  torch.distributed variables set (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE), or under
  `torchrun --nnodes N --nproc-per-node G -m clients.cli train ...` / SLURM `srun`, which
  Lightning detects. Tested as 2 nodes x 1 process on loopback (MASTER_ADDR=127.0.0.1,
  NODE_RANK=0 and 1, `num_nodes=2 devices=1`); `audit=true` writes what each rank did.
With more than one process each rank's DynamicBucketingSampler takes its share of the cuts
(Lhotse reads rank / world size from torch.distributed) and, with drop_last=False, Lhotse
redistributes the last batches so every rank runs the same number of steps (no DDP hang).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.acoustic import ModelConfig
from models.bundle import DecodingDefaults, save
from models.features import FbankConfig
from models.tokenizer import CharTokenizer
from training.config import TrainConfig
from training.data.manifests import check_distinct_ids
from training.extras import load_extras, save_extras
from training.frontend import FRONTENDS, TrainablePcen, serving_features

if TYPE_CHECKING:
    from training.ctc_module import CtcModule

log = logging.getLogger(__name__)
UNITS = ("char", "subword")
INIT_SCOPES = ("all", "encoder")


def _cuts(paths: list[str]) -> Any:
    from lhotse import CutSet

    if not paths:
        raise ValueError("config data.train / data.dev: at least one manifest is needed")
    sets = [CutSet.from_file(p) for p in paths]
    check_distinct_ids((path, cuts.ids) for path, cuts in zip(paths, sets, strict=True))
    out = sets[0]
    for s in sets[1:]:
        out = out + s
    return out


def _packed(paths: list[str]) -> bool:
    """Whether the manifests are packs (training.data.packed); a mix is refused."""
    from training.data.packed import is_packed

    kinds = {is_packed(p) for p in paths}
    if len(kinds) > 1:
        raise ValueError(f"config data: mix of packs (.npz) and Lhotse manifests in {paths}")
    return kinds == {True}


def _train_texts(cfg: TrainConfig) -> list[str]:
    if _packed(cfg.data.train):
        from training.data.packed import PackedCorpus

        return [t for p in cfg.data.train for t in PackedCorpus(p).texts]
    return [s.text for c in _cuts(cfg.data.train) for s in c.supervisions]


def make_datamodule(cfg: TrainConfig, tok: CharTokenizer, feats: FbankConfig,
                    mean: torch.Tensor) -> Any:
    """Train / dev loaders; with trainable PCEN (frontend=pcen) they carry mel energies."""
    import lightning as L

    from training.data.dataset import AsrDataset, worker_init

    pin = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto"
                                                 and torch.cuda.is_available())

    def loader(ds: Any, sampler: Any, workers: int) -> Any:
        return torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=None,
                                           num_workers=workers, worker_init_fn=worker_init,
                                           persistent_workers=workers > 0, pin_memory=pin)

    def packed_loader(paths: list[str], train: bool) -> Any:
        from training.data.packed import DurationBatchSampler, PackedCorpus, PackedDataset

        if len(paths) != 1:
            raise ValueError(f"config data: one pack per split, got {paths}")
        if (train and cfg.robust.corrupt) or cfg.frontend != "log":
            raise ValueError("config robust.corrupt and frontend=pcen need waveforms; packs "
                             "(.npz) hold log-mel features: use Lhotse manifests")
        corpus = PackedCorpus(paths[0])
        durations = corpus.durations if train else corpus.durations[: cfg.data.dev_max_cuts]
        sampler = DurationBatchSampler(durations, max_duration_s=cfg.data.max_duration_s,
                                       shuffle=train, seed=cfg.seed,
                                       num_buckets=cfg.data.num_buckets if train else 1)
        ds = PackedDataset(corpus, tokenizer=tok, augment=cfg.augment if train else None,
                           feat_mean=mean, seed=cfg.seed)
        return loader(ds, sampler, cfg.data.num_workers if train else 0)

    class DataModule(L.LightningDataModule):
        def train_dataloader(self) -> Any:
            if _packed(cfg.data.train):
                return packed_loader(cfg.data.train, True)
            from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

            cuts = _cuts(cfg.data.train)
            # lhotse refuses more buckets than cuts: a tiny fine-tuning set gets fewer, and one
            # cut is batched without buckets
            buckets = min(cfg.data.num_buckets, sum(1 for _ in cuts.ids))
            sampler: Any = (
                DynamicBucketingSampler(cuts, max_duration=cfg.data.max_duration_s,
                                        num_buckets=buckets, shuffle=True, drop_last=False,
                                        seed=cfg.seed) if buckets > 1 else
                SimpleCutSampler(cuts, max_duration=cfg.data.max_duration_s, shuffle=True,
                                 seed=cfg.seed))
            ds = AsrDataset(tokenizer=tok, features=feats, augment=cfg.augment, feat_mean=mean,
                            seed=cfg.seed, robust=cfg.robust, energies=cfg.frontend != "log")
            return loader(ds, sampler, cfg.data.num_workers)

        def val_dataloader(self) -> Any:
            if _packed(cfg.data.dev):
                return packed_loader(cfg.data.dev, False)
            from lhotse.dataset import SimpleCutSampler

            cuts = _cuts(cfg.data.dev).subset(first=cfg.data.dev_max_cuts)
            sampler = SimpleCutSampler(cuts, max_duration=cfg.data.max_duration_s)
            ds = AsrDataset(tokenizer=tok, features=feats, augment=None, feat_mean=mean,
                            energies=cfg.frontend != "log")
            return loader(ds, sampler, 0)

    return DataModule()


def strategy(cfg: TrainConfig) -> str:
    """Lightning's strategy: DDP over several processes; frozen encoder steps leave the
    encoder's parameters out of the loss, which DDP must be told to expect."""
    if cfg.devices * cfg.num_nodes <= 1:
        return "auto"
    return "ddp_find_unused_parameters_true" if cfg.optim.freeze_encoder_steps > 0 else "ddp"


def train(cfg: TrainConfig, *, progress: bool = True) -> Path:
    """Train; export the best checkpoint (by dev WER) as a bundle under out_dir/bundle."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

    from training.data.dataset import feature_stats

    cfg.robust.validate()
    cfg.adversary.validate()
    cfg.augment.validate()
    if cfg.optim.average_last < 0:
        raise ValueError(f"config optim.average_last must be >= 0, got {cfg.optim.average_last}")
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(cfg)
    feats = FbankConfig(num_mel_bins=cfg.model.num_mel_bins)
    frontend = make_frontend(cfg)
    module = make_module(cfg, tok, frontend)
    # the normaliser's statistics are of what the encoder sees: log-mel, or the initial PCEN
    stats_feats = serving_features(feats, frontend)
    history: list[dict[str, Any]] = []
    if cfg.init_from:
        history = warm_start(module, cfg.init_from, cfg.init_scope)
        if _bundle_features(cfg.init_from).compression != stats_feats.compression:
            log.info("init_from %s: other front end; the normaliser is re-estimated",
                     cfg.init_from)
            module.model.encoder.set_normalizer(*feature_stats(_cuts(cfg.data.train),
                                                               stats_feats))
        mean = module.model.encoder.feat_mean.clone()
    elif _packed(cfg.data.train):  # a pack carries its features' statistics
        from training.data.packed import PackedCorpus

        corpus = PackedCorpus(cfg.data.train[0])
        if corpus.features != feats:
            raise ValueError(f"{cfg.data.train[0]}: packed with features {corpus.features}, "
                             f"the model needs {feats}")
        mean = corpus.mean
        module.model.encoder.set_normalizer(corpus.mean, corpus.std)
    else:
        mean, std = feature_stats(_cuts(cfg.data.train), stats_feats)
        module.model.encoder.set_normalizer(mean, std)
    load_cold_fusion_lm(cfg, module)  # after any warm start: the named LM wins
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", monitor="dev_wer", mode="min",
                           save_top_k=1, filename="best-{step}-{dev_wer:.4f}")
    recent = []  # the last N validation checkpoints, for optim.average_last
    if cfg.optim.average_last:
        recent.append(ModelCheckpoint(dirpath=out / "checkpoints", monitor="step", mode="max",
                                      save_top_k=cfg.optim.average_last,
                                      filename="last-{step}"))
    loggers: list[Logger] = [CSVLogger(out, name="logs")]
    try:
        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(out, name="tb"))
    except ImportError:
        log.info("tensorboard not installed: CSV logs only (pip install tensorboard)")
    budget = cfg.optim.max_minutes
    audit = []
    if cfg.audit:
        from training.audit import RankAudit

        audit.append(RankAudit(out))
    trainer = L.Trainer(
        max_steps=cfg.optim.max_steps if budget <= 0 else -1,
        max_time=datetime.timedelta(minutes=budget) if budget > 0 else None,
        accelerator=cfg.accelerator, devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=strategy(cfg),
        precision=cfg.precision,  # type: ignore[arg-type]  # a str validated by Lightning
        gradient_clip_val=cfg.optim.grad_clip,
        val_check_interval=cfg.optim.val_every_steps,
        check_val_every_n_epoch=None, logger=loggers,
        callbacks=[ckpt, *recent, LearningRateMonitor(logging_interval="step"), *audit],
        enable_progress_bar=progress, use_distributed_sampler=False, log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    start = time.monotonic()
    datamodule = make_datamodule(cfg, tok, feats, mean)
    trainer.fit(module, datamodule=datamodule)
    seconds = time.monotonic() - start
    final_wer = None
    if trainer.global_step > 0 and trainer.global_step % max(cfg.optim.val_every_steps, 1):
        # a time budget ends between validations: score the final, fully annealed weights too
        scores = trainer.validate(module, datamodule=datamodule, verbose=False)
        final_wer = scores[0].get("dev_wer") if scores else None
    averaged = None  # every rank validates the mean (validation is collective under DDP)
    if recent:
        averaged = _average_recent(trainer, module, datamodule, recent[0],
                                   cfg.optim.average_last, final_wer is not None)
    if trainer.global_rank != 0:
        return out / "bundle"
    best_wer = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    keep_final = final_wer is not None and (best_wer is None or final_wer <= best_wer)
    chosen_wer = final_wer if keep_final else best_wer
    mean_state, mean_wer = (averaged.pop("state"), averaged["dev_wer"]) if averaged else (None, None)
    keep_average = mean_wer is not None and (chosen_wer is None or mean_wer < chosen_wer)
    best = ckpt.best_model_path
    if keep_average and mean_state is not None:
        module.load_state_dict(mean_state)
        chosen_wer = mean_wer
    elif best and not keep_final:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    provenance = {
        "recipe": cfg.name, "config": _jsonable(cfg), "steps": trainer.global_step,
        "world_size": trainer.world_size, "init_from": cfg.init_from,
        "history": history,  # earlier runs this one continued from, oldest first
        "train_seconds": round(seconds, 1),
        "best_dev_wer": chosen_wer,
        # the last step's weights beat every checkpoint's
        "final_weights": keep_final and not keep_average,
        "checkpoint_dev_wer": best_wer, "final_dev_wer": final_wer,
        # optim.average_last: the members' steps, the mean's dev WER, and whether it won
        "average": None if averaged is None else averaged | {"chosen": keep_average},
    }
    path = save(out / "bundle", module.model.cpu(),
                features=serving_features(feats, module.frontend), tokenizer=tok,
                decoding=DecodingDefaults(chunk_frames=cfg.chunk_frames), provenance=provenance)
    save_extras(path, module)
    (out / "summary.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return path


def _average_recent(trainer: Any, module: Any, datamodule: Any, recent: Any, n: int,
                    with_final: bool) -> dict[str, Any] | None:
    """Mean weights of the last `n` validation checkpoints (the final weights, when the run
    ended between validations, standing in for the oldest), scored on dev; None with fewer
    than two members. Restores the module's current (final) weights before returning."""
    from training.average import average_state_dicts, load_checkpoint_state

    step_of = {path: int(float(step)) for path, step in recent.best_k_models.items()}
    members = [(f"step {step}", load_checkpoint_state(path))
               for path, step in sorted(step_of.items(), key=lambda kv: kv[1])]
    final = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if with_final and trainer.global_step not in step_of.values():  # a time budget's stop
        members.append((f"step {trainer.global_step} (final)", final))  # may have saved one
    members = members[-n:]
    if len(members) < 2:
        return None
    state = average_state_dicts([m[1] for m in members], [m[0] for m in members])
    module.load_state_dict(state)
    scores = trainer.validate(module, datamodule=datamodule, verbose=False)
    module.load_state_dict(final)
    if not scores or "dev_wer" not in scores[0]:
        return None
    return {"members": [m[0] for m in members], "dev_wer": float(scores[0]["dev_wer"]),
            "state": state}


def _bundle_features(bundle_dir: str) -> FbankConfig:
    from models.bundle import load

    return load(bundle_dir).features


def make_frontend(cfg: TrainConfig) -> TrainablePcen | None:
    """Trainable PCEN for frontend=pcen (its initial values: init_from's learned PCEN when it
    has one, else the defaults); None for log-mel."""
    from models.features import PcenConfig

    if cfg.frontend not in FRONTENDS:
        raise ValueError(f"config frontend must be one of {FRONTENDS}, got {cfg.frontend!r}")
    if cfg.frontend == "log":
        return None
    init = PcenConfig()
    if cfg.init_from:
        earlier = _bundle_features(cfg.init_from)
        if earlier.compression == "pcen":
            init = earlier.pcen
    hop = FbankConfig().hop_ms
    return TrainablePcen(cfg.model.num_mel_bins, init, hop)


def make_module(cfg: TrainConfig, tok: CharTokenizer,
                frontend: TrainablePcen | None = None) -> CtcModule:
    """The Lightning module for the config's head: CtcModule (CTC, Gram-CTC) or RnntModule."""
    from training.ctc_module import CtcModule

    transducer = None
    if cfg.head.type == "rnnt":
        from models.nn.transducer import TransducerConfig

        transducer = TransducerConfig(predictor=cfg.head.predictor,  # type: ignore[arg-type]
                                      pred_dim=cfg.head.pred_dim, joiner_dim=cfg.head.joiner_dim,
                                      cold_fusion=cold_fusion_config(cfg, tok))
    elif cfg.head.cold_fusion_lm:
        raise ValueError("config head.cold_fusion_lm: cold fusion is for head.type=rnnt, not "
                         f"{cfg.head.type!r}")
    model_cfg = ModelConfig(cfg.model, tok.vocab_size, head=cfg.head.type,  # type: ignore[arg-type]
                            transducer=transducer)
    adversary = make_adversary(cfg)
    if cfg.head.type == "rnnt":
        from training.rnnt_module import RnntModule

        return RnntModule(model_cfg, cfg.optim, tok, loss=cfg.head.rnnt_loss,
                          prune_range=cfg.head.prune_range,
                          simple_loss_scale=cfg.head.simple_loss_scale, robust=cfg.robust,
                          frontend=frontend, spec_augment=cfg.augment, adversary=adversary)
    return CtcModule(model_cfg, cfg.optim, tok, robust=cfg.robust, frontend=frontend,
                     spec_augment=cfg.augment, adversary=adversary)


def make_adversary(cfg: TrainConfig) -> Any:
    """training.adversary's voice classifier over the training manifests' engines or voices,
    or None (adversary.target none)."""
    if cfg.adversary.target == "none":
        return None
    from training.adversary import VoiceAdversary, label_vocabulary

    if _packed(cfg.data.train):
        raise ValueError("config adversary.target needs engine / voice labels; packs (.npz) "
                         "hold features only: use Lhotse manifests")
    labels = label_vocabulary(_cuts(cfg.data.train), cfg.adversary.target)
    return VoiceAdversary(cfg.adversary, cfg.model.d_model, labels, seed=cfg.seed)


def _cold_fusion_lm(cfg: TrainConfig) -> Any:
    from models.lm.neural import NeuralLmError, load

    try:
        return load(cfg.head.cold_fusion_lm)
    except NeuralLmError as exc:
        raise ValueError(f"config head.cold_fusion_lm: {exc}") from None


def cold_fusion_config(cfg: TrainConfig, tok: CharTokenizer) -> Any:
    """The ColdFusionConfig of head.cold_fusion_lm for the tokenizer (None when unset)."""
    if not cfg.head.cold_fusion_lm:
        return None
    from dataclasses import asdict

    from models.lm.neural import NeuralLmError
    from models.nn.cold_fusion import ColdFusionConfig, token_map

    lm = _cold_fusion_lm(cfg)
    try:
        mapping = token_map(tok.symbols, lm)
    except NeuralLmError as exc:
        raise ValueError(f"config head.cold_fusion_lm: {exc}") from None
    return ColdFusionConfig(lm=asdict(lm.cfg), token_map=mapping, dim=cfg.head.cold_fusion_dim)


def load_cold_fusion_lm(cfg: TrainConfig, module: Any) -> None:
    """Copy head.cold_fusion_lm's weights into the model's frozen LM (after any warm start, so
    the named LM wins over the init_from bundle's: how a domain's LM is swapped in)."""
    if cfg.head.cold_fusion_lm:
        module.model.head.fusion.load_lm(_cold_fusion_lm(cfg))


def make_tokenizer(cfg: TrainConfig) -> CharTokenizer:
    """Characters, or sentencepiece subword units (CTC, RNN-T), learned from the training
    transcripts unless `init_from` brings its own; characters + n-grams for Gram-CTC (the
    config's fixed set, or the most frequent ones in the training transcripts)."""
    from models.acoustic import HEADS

    if cfg.head.type not in HEADS:
        raise ValueError(f"config head.type must be one of {HEADS}, got {cfg.head.type!r}")
    if cfg.head.units not in UNITS:
        raise ValueError(f"config head.units must be one of {UNITS}, got {cfg.head.units!r}")
    if cfg.head.units == "subword":
        if cfg.head.type == "gram_ctc":
            raise ValueError("config head.units=subword: Gram-CTC learns its own grams; "
                             "use head.type=ctc or rnnt")
        if cfg.init_from and cfg.init_scope == "all":
            from models.tokenizer import SubwordTokenizer

            tok = CharTokenizer.load(Path(cfg.init_from) / "tokens.txt")
            if not isinstance(tok, SubwordTokenizer):
                raise ValueError(f"init_from {cfg.init_from} has character tokens, "
                                 "but the config asks for head.units=subword")
            return tok
        from training.units import train_subword

        tok = train_subword(_train_texts(cfg), cfg.head.subword_vocab,
                            model_type=cfg.head.subword_type)
        log.info("subword units: %d (%s), e.g. %s", tok.vocab_size, cfg.head.subword_type,
                 [s for s in tok.symbols if len(s) > 3][:10])
        return tok
    if cfg.head.type != "gram_ctc":
        return CharTokenizer()
    from training.grams import gram_tokenizer, select_grams

    grams = list(cfg.head.grams)
    if not grams:
        grams = select_grams(_train_texts(cfg), max_n=cfg.head.gram_max_n, size=cfg.head.gram_size)
    log.info("gram_ctc: %d grams, e.g. %s", len(grams), grams[:10])
    return gram_tokenizer(grams)


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def grow_lookahead(state: dict[str, Any], lookahead: int) -> dict[str, Any]:
    """A model state dict with its row convolution (Deep Speech 2's lookahead) extended to
    `lookahead` future frames: the new taps are zero, so the model computes exactly what it did
    (the body's extra frames are weighted by zero) until training learns to use them."""
    key = "encoder.rowconv.conv.weight"
    w = state[key]  # (D, 1, tau + 1): tap j weighs frame t + j
    if w.shape[-1] == lookahead + 1:
        return state
    grown = w.new_zeros(w.shape[0], 1, lookahead + 1)
    if w.shape[-1] == 1:  # lookahead 0 ignores its weight (RowConv.forward): the identity
        grown[:, 0, 0] = 1.0
    else:
        grown[..., : w.shape[-1]] = w
    return {**state, key: grown}


def spread_lookahead(state: dict[str, Any], factor: int) -> dict[str, Any]:
    """A state dict for `factor` times the frame rate: row-convolution tap j (frame t + j)
    becomes tap factor * j, so each tap still weighs the frame the same time ahead."""
    key = "encoder.rowconv.conv.weight"
    w = state[key]  # (D, 1, tau + 1)
    if factor == 1 or w.shape[-1] == 1:
        return state
    spread = w.new_zeros(w.shape[0], 1, factor * (w.shape[-1] - 1) + 1)
    spread[..., ::factor] = w
    return {**state, key: spread}


def warm_start(module: Any, bundle_dir: str, scope: str = "all") -> list[dict[str, Any]]:
    """Load a bundle's weights (and normaliser) into `module`, all of them or (scope
    "encoder") the encoder's only; return the runs behind it. The config may differ from the
    bundle in the normaliser's mode, the dropout, a longer lookahead (`grow_lookahead`) and,
    from x4 to x2, the frame rate: the convolutions keep their kernels (the second one's time
    stride becomes 1, `models.nn.subsampling`), the body runs twice as many frames, and the
    row convolution's taps are spread (`spread_lookahead`) so the lookahead keeps its time."""
    from models.bundle import load

    if scope not in INIT_SCOPES:
        raise ValueError(f"config init_scope must be one of {INIT_SCOPES}, got {scope!r}")
    bundle = load(bundle_dir)
    theirs, wanted = bundle.model.cfg.encoder, module.model.cfg.encoder
    rate = {(4, 4): 1, (2, 2): 1, (8, 8): 1, (4, 2): 2}.get(
        (theirs.subsampling, wanted.subsampling))
    if rate is None:
        raise ValueError(f"init_from {bundle_dir}: model.subsampling {wanted.subsampling} from "
                         f"the bundle's {theirs.subsampling}: only the same, or 4 -> 2")
    if wanted.lookahead < rate * theirs.lookahead:
        raise ValueError(f"init_from {bundle_dir}: model.lookahead {wanted.lookahead} is shorter "
                         f"than the bundle's {theirs.lookahead}"
                         + (f" x {rate} frames at the new frame rate" if rate > 1 else "")
                         + " (a lookahead can grow, not shrink)")
    # the feature normaliser's mode (global / online CMN) and the dropout may change: the
    # weights are the same; a longer lookahead starts with its new future taps at zero (the
    # same function)
    mine = dataclasses.replace(wanted, cmn=theirs.cmn, cmn_prior_frames=theirs.cmn_prior_frames,
                               lookahead=theirs.lookahead, dropout=theirs.dropout,
                               subsampling=theirs.subsampling)
    state = grow_lookahead(spread_lookahead(bundle.model.state_dict(), rate), wanted.lookahead)
    if scope == "encoder":
        if theirs != mine:
            raise ValueError(f"init_from {bundle_dir}: its encoder {theirs} "
                             f"differs from the config's {wanted}")
        module.model.encoder.load_state_dict(
            {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
    else:
        if bundle.model.cfg != dataclasses.replace(module.model.cfg, encoder=mine):
            raise ValueError(f"init_from {bundle_dir}: its model {bundle.model.cfg} differs from "
                             f"the config's {module.model.cfg}")
        module.model.load_state_dict(state)
        load_extras(bundle_dir, module)  # e.g. the pruned RNN-T loss's simple joiner
    prov = dict(bundle.provenance)
    earlier = prov.pop("history", [])
    prov.pop("config", None)
    return [*earlier, prov]
