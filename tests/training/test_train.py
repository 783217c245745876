"""A tiny model trains for a few steps on a tiny real corpus: the loss falls, a bundle comes out
that loads and streams with streaming == offline transcripts."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.audio import load_audio
from models.bundle import load
from models.streaming import StreamingTranscriber, transcribe
from training.config import TrainConfig, load_config
from training.data.synth.corpus import SynthConfig, synthesize_corpus
from training.train import train


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    synthesize_corpus(SynthConfig(out=out, hours=0.01, seed=5, jobs=2, engines=("flite",),
                                  split_weights={"train": 0.8, "dev": 0.2, "test": 0.0}),
                      progress=False)
    return out


def overrides(corpus: Path, out: Path, steps: int) -> list[str]:
    return [f"data.train=[{corpus / 'cuts_train.jsonl.gz'}]",
            f"data.dev=[{corpus / 'cuts_dev.jsonl.gz'}]", f"out_dir={out}",
            f"optim.max_steps={steps}", f"optim.val_every_steps={steps}", "optim.warmup_steps=15",
            "optim.lr=0.01", "model.d_model=96", "model.num_layers=1", "model.conv_channels=8",
            "data.max_duration_s=20", "data.num_buckets=2", "data.num_workers=0", "augment.noise_prob=0.0",
            "augment.reverb_prob=0.0", "augment.telephone_prob=0.0", "augment.speed=[1.0]",
            "augment.spec_time_masks=0", "augment.spec_freq_masks=0", "chunk_frames=16"]


def experiment_overrides(corpus: Path, out: Path, steps: int,
                         groups: tuple[str, ...] = ("model", "augment", "data")) -> list[str]:
    """The tiny recipe's settings in `groups`, minus data.train / data.dev: what an experiment
    command's --override takes (the command names its own manifests)."""
    return [o for o in overrides(corpus, out, steps) if o.split("=")[0].split(".")[0] in groups
            and not o.startswith(("data.train", "data.dev"))]


def assert_logged(out: Path, keys: tuple[str, ...]) -> None:
    """Each of `keys` has at least one finite value in the run's metrics.csv."""
    import math

    rows = (out / "logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for key in keys:
        values = [r.split(",")[header.index(key)] for r in rows[1:]]
        assert any(v and math.isfinite(float(v)) for v in values), key


def stream_equals_offline(bundle, audio, decoder: str | None = None) -> None:
    """The bundle's transcript of `audio` fed in 1234-sample pieces equals the offline one."""
    offline = transcribe(bundle, audio, decoder=decoder)
    t = StreamingTranscriber(bundle, decoder=decoder)
    for i in range(0, audio.size, 1234):
        t.accept_waveform(audio[i : i + 1234])
    assert t.finalize() == offline


def test_loss_falls_and_bundle_streams(tiny_corpus, tmp_path) -> None:
    cfg = load_config(None, overrides(tiny_corpus, tmp_path / "run", 500))
    bundle_path = train(cfg, progress=False)
    rows = (tmp_path / "run/logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train_loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert len(losses) >= 3
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses

    bundle = load(bundle_path)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["steps"] == 500 and bundle.provenance["recipe"] == "ctc"
    from lhotse import CutSet

    cut = next(iter(CutSet.from_file(tiny_corpus / "cuts_dev.jsonl.gz")))
    audio = load_audio(cut.recording.sources[0].source)
    offline = transcribe(bundle, audio)
    rng = np.random.default_rng(0)
    t = StreamingTranscriber(bundle)
    pos = 0
    while pos < audio.size:
        n = int(rng.integers(1, 4000))
        t.accept_waveform(audio[pos : pos + n])
        pos += n
    assert t.finalize() == offline

    # warm start: a second run continues from the bundle (loss starts where the first ended)
    cfg2 = load_config(None, [*overrides(tiny_corpus, tmp_path / "run2", 20),
                              f"init_from={bundle_path}"])
    bundle2 = load(train(cfg2, progress=False))
    rows2 = (tmp_path / "run2/logs/version_0/metrics.csv").read_text().splitlines()
    first2 = next(float(r.split(",")[col]) for r in rows2[1:] if r.split(",")[col])
    assert first2 < 0.8 * sum(losses[:3]) / 3, (first2, losses[:3])
    assert [h["steps"] for h in bundle2.provenance["history"]] == [500]
    with pytest.raises(ValueError, match="differs from the config"):
        train(load_config(None, [*overrides(tiny_corpus, tmp_path / "run3", 2), "model.d_model=64",
                                 f"init_from={bundle_path}"]), progress=False)

    # the same weights continued with online CMN (the normaliser's mode may change on a warm
    # start): the bundle records it and streams exactly as it transcribes offline
    cfg4 = load_config(None, [*overrides(tiny_corpus, tmp_path / "run4", 5), "model.cmn=online",
                              f"init_from={bundle_path}"])
    bundle4 = load(train(cfg4, progress=False))
    assert bundle4.model.cfg.encoder.cmn == "online"
    assert "cmn_sum" in bundle4.model.init_state(1)
    stream_equals_offline(bundle4, audio)


def test_a_run_ending_between_validations_scores_its_final_weights(tiny_corpus, tmp_path) -> None:
    """12 steps, validation every 5: the final weights (step 12) are validated too, and the
    bundle keeps whichever of the checkpoints (steps 5, 10) and the final weights scored best."""
    out = tmp_path / "run"
    cfg = load_config(None, [*overrides(tiny_corpus, out, 12), "optim.val_every_steps=5"])
    bundle = load(train(cfg, progress=False))
    rows = (out / "logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    dev = [(int(r.split(",")[header.index("step")]), float(r.split(",")[header.index("dev_wer")]))
           for r in rows[1:] if r.split(",")[header.index("dev_wer")]]
    assert [step for step, _ in dev] == [4, 9, 12], dev  # after steps 5 and 10 (0-based), final
    best = min(wer for _, wer in dev)
    assert bundle.provenance["best_dev_wer"] == pytest.approx(best)
    assert bundle.provenance["final_weights"] == (dev[-1][1] <= min(w for _, w in dev[:-1]))


def test_average_last_scores_the_mean_of_the_last_checkpoints_and_keeps_the_best(
        tiny_corpus, tmp_path) -> None:
    """optim.average_last=3, 15 steps, validation every 5: the mean of the checkpoints at
    steps 5, 10 and 15 is scored on dev; the bundle holds exactly that mean when its dev WER
    beat the best checkpoint's, else exactly the best checkpoint's weights."""
    out = tmp_path / "run"
    cfg = load_config(None, [*overrides(tiny_corpus, out, 15), "optim.val_every_steps=5",
                             "optim.average_last=3"])
    bundle = load(train(cfg, progress=False))
    prov = bundle.provenance
    avg = prov["average"]
    assert avg["members"] == ["step 5", "step 10", "step 15"], avg
    rows = (out / "logs/version_0/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    wers = [float(r.split(",")[header.index("dev_wer")]) for r in rows[1:]
            if r.split(",")[header.index("dev_wer")]]
    assert len(wers) == 4  # steps 5, 10, 15, then the mean
    assert avg["dev_wer"] == pytest.approx(wers[-1])
    assert avg["chosen"] == (wers[-1] < min(wers[:3]))
    assert prov["best_dev_wer"] == pytest.approx(min(wers))
    ckpts = {n: torch.load(out / "checkpoints" / f"last-step={n}.ckpt",
                           weights_only=True)["state_dict"] for n in (5, 10, 15)}
    best_step = (5, 10, 15)[min(range(3), key=lambda i: (wers[i], i))]  # ties: the first
    weights = bundle.model.state_dict()
    for key, value in weights.items():
        if not value.is_floating_point():
            continue
        members = [ckpts[n]["model." + key] for n in (5, 10, 15)]
        want = sum(members) / 3 if avg["chosen"] else ckpts[best_step]["model." + key]
        assert torch.allclose(value, want, atol=1e-6), key

    # a run ending between validations: its final weights stand in for the oldest member
    cfg2 = load_config(None, [*overrides(tiny_corpus, tmp_path / "run2", 12),
                              "optim.val_every_steps=5", "optim.average_last=2"])
    prov2 = load(train(cfg2, progress=False)).provenance
    assert prov2["average"]["members"] == ["step 10", "step 12 (final)"]
    # a time budget's stop saves a checkpoint of the final weights: they count once
    cfg3 = load_config(None, [*overrides(tiny_corpus, tmp_path / "run4", 10_000),
                              "optim.max_minutes=0.1", "optim.val_every_steps=7",
                              "optim.average_last=4"])
    members = load(train(cfg3, progress=False)).provenance["average"]["members"]
    steps = [int(m.split()[1]) for m in members]
    assert len(members) >= 2 and len(set(steps)) == len(steps), members
    with pytest.raises(ValueError, match="optim.average_last must be >= 0"):
        train(load_config(None, [*overrides(tiny_corpus, tmp_path / "run3", 2),
                                 "optim.average_last=-1"]), progress=False)


def test_freeze_encoder_steps_train_the_head_alone_first(tiny_corpus, tmp_path) -> None:
    """optim.freeze_encoder_steps=N: a warm-started encoder keeps its weights exactly through
    N steps while the head moves from its initial weights; with fewer frozen steps than the
    run has, the encoder learns too."""
    import lightning as L

    from training.train import make_frontend, make_module, make_tokenizer

    base = train(load_config(None, overrides(tiny_corpus, tmp_path / "base", 20)), progress=False)

    def config(name: str, frozen: int) -> TrainConfig:
        return load_config(None, [*overrides(tiny_corpus, tmp_path / name, 10),
                                  f"init_from={base}", "init_scope=encoder",
                                  f"optim.freeze_encoder_steps={frozen}"])

    cfg = config("frozen", 10)
    L.seed_everything(cfg.seed)  # as train() does: the head it starts from
    head0 = make_module(cfg, make_tokenizer(cfg), make_frontend(cfg)).model.head.state_dict()
    frozen = load(train(cfg, progress=False))
    thawed = load(train(config("thawed", 5), progress=False))
    enc0 = load(base).model.encoder.state_dict()
    assert all(torch.equal(v, enc0[k]) for k, v in frozen.model.encoder.state_dict().items())
    assert not all(torch.equal(v, enc0[k]) for k, v in thawed.model.encoder.state_dict().items())
    assert all(v.shape == head0[k].shape for k, v in frozen.model.head.state_dict().items())
    assert not any(torch.equal(v, head0[k]) for k, v in frozen.model.head.state_dict().items())


def test_two_corpora_with_the_same_cut_ids_are_refused_by_name(tiny_corpus, tmp_path) -> None:
    """A second corpus of the same seed numbers its utterances the same way: training on both
    is refused naming the id and both files (--id-prefix makes them distinct), before a step."""
    manifest = str(tiny_corpus / "cuts_train.jsonl.gz")
    other = tmp_path / "copy.jsonl.gz"
    other.write_bytes(Path(manifest).read_bytes())
    cfg = load_config(None, [*overrides(tiny_corpus, tmp_path / "run", 1),
                             f"data.train=[{manifest},{other}]"])
    with pytest.raises(ValueError, match=r"cut id '.*train-\d+' is in both .*cuts_train"
                                         r"\.jsonl\.gz and .*copy\.jsonl\.gz.*--id-prefix"):
        train(cfg, progress=False)


def test_bad_config_is_specific() -> None:
    with pytest.raises(ValueError, match=r"config.optim: unknown field\(s\) \['lr_max'\]"):
        load_config(None, ["optim.lr_max=1"])
    with pytest.raises(ValueError, match="section.field=value"):
        load_config(None, ["optim.lr"])


def test_scalar_fields_are_type_checked_and_yaml_exponents_read_as_numbers() -> None:
    """YAML 1.1 reads `4e-4` as a string: a float field takes it as the number; a value of the
    wrong type is refused with the field named instead of failing inside training."""
    cfg = load_config(None, ["optim.lr=4e-4", "optim.grad_clip=2"])
    assert cfg.optim.lr == 4e-4 and isinstance(cfg.optim.grad_clip, float)
    with pytest.raises(ValueError, match=r"config.optim.lr: expected a number, got 'fast'"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ValueError, match=r"config.optim.warmup_steps: expected an integer"):
        load_config(None, ["optim.warmup_steps=1.5"])
    with pytest.raises(ValueError, match=r"config.audit: expected true or false"):
        load_config(None, ["audit=maybe"])


RECIPES = sorted((Path(__file__).parents[2] / "training/recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipes_parse(recipe: Path) -> None:
    cfg = load_config(recipe, ["optim.max_steps=7"])
    assert cfg.optim.max_steps == 7 and cfg.chunk_frames % cfg.model.subsampling == 0
    assert cfg.name == f"{recipe.stem}-ctc" and cfg.data.train and cfg.data.dev


def ddp_args(corpus: Path, out: Path, steps: int) -> list[str]:
    args = [a for a in overrides(corpus, out, steps) if not a.startswith("data.max_duration_s")]
    return ["-m", "clients.cli", "train", "--no-progress", *args, "data.max_duration_s=8",
            "accelerator=cpu", "audit=true"]


def assert_data_parallel(corpus: Path, out: Path, steps: int, world: int) -> None:
    """Every rank ran `steps` steps on its own cuts (disjoint, all from train) and ended
    with parameters identical to every other rank's."""
    from lhotse import CutSet

    ranks = [json.loads((out / f"ranks/rank{r}.json").read_text()) for r in range(world)]
    assert [r["global_rank"] for r in ranks] == list(range(world))
    assert all(r["world_size"] == world and r["steps"] == steps for r in ranks), ranks
    assert len({r["param_sha256"] for r in ranks}) == 1, "parameters differ across ranks"
    train_ids = {c.id for c in CutSet.from_file(corpus / "cuts_train.jsonl.gz")}
    for epoch in range(len(ranks[0]["epochs"])):
        seen = [set(r["epochs"][epoch]) for r in ranks]
        assert all(seen), "every rank trains on cuts"
        assert not set.intersection(*seen), f"epoch {epoch}: ranks must see different cuts"
        assert set.union(*seen) <= train_ids


def test_two_process_ddp_on_cpu(tiny_corpus, tmp_path) -> None:
    """The documented multi-process launch: 2 CPU processes (gloo), synchronised parameters,
    disjoint data, dev WER pooled over both ranks."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, *ddp_args(tiny_corpus, out, 4), "devices=2"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    rows = (out / "logs/version_0/metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("dev_wer")  # pooled over both ranks' dev shares
    assert [r.split(",")[col] for r in rows[1:] if r.split(",")[col]], rows
    assert "gloo" in proc.stderr or "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert_data_parallel(tiny_corpus, out, 4, 2)


def test_ddp_trains_through_frozen_encoder_steps(tiny_corpus, tmp_path) -> None:
    """2 CPU processes with optim.freeze_encoder_steps=2 of 4 steps: DDP accepts the steps
    where the encoder gets no gradient (its parameters unused) and the run ends."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp-frozen"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, *ddp_args(tiny_corpus, out, 4), "devices=2",
                           "optim.freeze_encoder_steps=2"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_gan_robust_ddp_keeps_every_ranks_critic_identical(tiny_corpus, tmp_path) -> None:
    """2 CPU processes with paired views, L1 and the WGAN-GP critic: the model and the critic
    (which DDP does not hold; training.robust averages its gradients) end identical on both
    ranks, each rank on its own cuts."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    robust = ["robust.corrupt=true", "robust.l1_weight=1.0", "robust.gan_weight=0.5",
              "robust.rir_bank=2", "robust.critic_steps=2"]
    proc = subprocess.run([sys.executable, *ddp_args(tiny_corpus, out, 4), "devices=2", *robust],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_data_parallel(tiny_corpus, out, 4, 2)
    critics = [json.loads((out / f"ranks/rank{r}.json").read_text())["critic_sha256"] for r in (0, 1)]
    assert critics[0] == critics[1], "the critics drifted apart across ranks"


def test_two_nodes_on_loopback(tiny_corpus, tmp_path) -> None:
    """The documented multi-node launch, as 2 nodes x 1 process on this machine: the same
    command on each "node" with num_nodes=2 and MASTER_ADDR / MASTER_PORT / NODE_RANK set."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "nodes"
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2]),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, *ddp_args(tiny_corpus, out, 4), "devices=1",
                               "num_nodes=2"], env={**base, "NODE_RANK": str(n)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in (0, 1)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    ranks = [json.loads((out / f"ranks/rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["node_rank"] for r in ranks] == [0, 1]
    assert_data_parallel(tiny_corpus, out, 4, 2)


def test_gram_ctc_trains_and_streams(tiny_corpus, tmp_path) -> None:
    cfg = load_config(None, [*overrides(tiny_corpus, tmp_path / "gram", 200), "head.type=gram_ctc",
                             "head.gram_size=20"])
    bundle = load(train(cfg, progress=False))
    rows = (tmp_path / "gram/logs/version_0/metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train_loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    grams = [s for s in bundle.tokenizer.symbols if len(s) > 1 and not s.startswith("<")]
    assert len(grams) == 20 and bundle.model.cfg.head == "gram_ctc"
    assert bundle.model.cfg.vocab_size == 29 + 20
    from lhotse import CutSet

    cut = next(iter(CutSet.from_file(tiny_corpus / "cuts_dev.jsonl.gz")))
    audio = load_audio(cut.recording.sources[0].source)
    offline = transcribe(bundle, audio)
    t = StreamingTranscriber(bundle)
    for i in range(0, audio.size, 1234):
        t.accept_waveform(audio[i : i + 1234])
    assert t.finalize() == offline


@pytest.mark.parametrize("predictor, loss", [("lstm", "full"), ("stateless", "pruned")])
def test_rnnt_trains_and_streams(tiny_corpus, tmp_path, predictor: str, loss: str) -> None:
    cfg = load_config(None, [*overrides(tiny_corpus, tmp_path / "rnnt", 150), "head.type=rnnt",
                             f"head.predictor={predictor}", "head.pred_dim=64",
                             "head.joiner_dim=64", f"head.rnnt_loss={loss}",
                             "head.prune_range=4"])
    bundle = load(train(cfg, progress=False))
    rows = (tmp_path / "rnnt/logs/version_0/metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train_loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert bundle.model.cfg.head == "rnnt" and bundle.model.output_kind == "encoder"
    assert bundle.model.cfg.transducer.predictor == predictor
    from lhotse import CutSet

    cut = next(iter(CutSet.from_file(tiny_corpus / "cuts_dev.jsonl.gz")))
    audio = load_audio(cut.recording.sources[0].source)

    from models.decoding import bundle_decoder
    from models.features import Fbank

    with torch.no_grad():  # the whole utterance through `forward`, not chunked
        enc, _ = bundle.model(Fbank(bundle.features)(torch.from_numpy(audio))[None])
    for decoder in ("greedy", "beam"):
        offline = transcribe(bundle, audio, decoder=decoder)
        t = StreamingTranscriber(bundle, decoder=decoder)
        for i in range(0, audio.size, 1234):
            t.accept_waveform(audio[i : i + 1234])
        assert t.finalize() == offline
        whole = bundle_decoder(bundle, decoder)
        whole.update(enc[0])
        assert whole.finalize().text == offline.text


def test_a_pruned_rnnt_continuation_starts_its_simple_joiner_where_the_run_ended(
        tiny_corpus, tmp_path) -> None:
    """The pruned loss's simple joiner (not in the bundle's model: decoding never uses it) is
    saved beside the bundle, and init_from loads it: the continuation's simple_am / simple_lm
    equal the run's last checkpoint's, not a fresh initialisation. A CTC bundle writes none."""
    from training.extras import EXTRAS
    from training.train import make_module, make_tokenizer, warm_start

    extra = ["head.type=rnnt", "head.pred_dim=64", "head.joiner_dim=64",
             "head.rnnt_loss=pruned", "head.prune_range=4"]
    cfg = load_config(None, [*overrides(tiny_corpus, tmp_path / "p", 30), *extra])
    path = train(cfg, progress=False)
    assert (path / EXTRAS).is_file()
    (ckpt,) = (tmp_path / "p/checkpoints").glob("*.ckpt")  # step 30: the bundle's weights
    ran = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    cont = load_config(None, [*overrides(tiny_corpus, tmp_path / "c", 5), *extra,
                              f"init_from={path}"])
    module = make_module(cont, make_tokenizer(cont))
    fresh = {k: v.clone() for k, v in module.state_dict().items() if k.startswith("simple_")}
    warm_start(module, str(path), "all")
    for k, v in fresh.items():
        assert torch.equal(module.state_dict()[k], ran[k]), k
        assert not torch.equal(v, ran[k]), k
    ctc = train(load_config(None, overrides(tiny_corpus, tmp_path / "ctc", 5)), progress=False)
    assert not (ctc / EXTRAS).exists()


@pytest.mark.parametrize("head", ["ctc", "rnnt"])
def test_subword_units_train_stream_and_warm_start(tiny_corpus, tmp_path, head: str) -> None:
    """head.units=subword: sentencepiece units from the train text; the bundle carries them
    (tokens.model), streams == offline with both decoders, and a warm start keeps the units."""
    from models.tokenizer import SubwordTokenizer

    extra = ["head.units=subword", "head.subword_vocab=40", f"head.type={head}",
             "head.pred_dim=64", "head.joiner_dim=64", "model.subsampling=8"]
    cfg = load_config(None, [*overrides(tiny_corpus, tmp_path / "sw", 150), *extra])
    path = train(cfg, progress=False)
    bundle = load(path)
    rows = (tmp_path / "sw/logs/version_0/metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train_loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert isinstance(bundle.tokenizer, SubwordTokenizer) and (path / "tokens.model").is_file()
    assert bundle.model.cfg.vocab_size == 40 and bundle.model.subsampling == 8
    from lhotse import CutSet

    cut = next(iter(CutSet.from_file(tiny_corpus / "cuts_dev.jsonl.gz")))
    audio = load_audio(cut.recording.sources[0].source)
    for decoder in ("greedy", "beam"):
        stream_equals_offline(bundle, audio, decoder)
    cfg2 = load_config(None, [*overrides(tiny_corpus, tmp_path / "sw2", 20), *extra,
                              f"init_from={path}"])
    assert load(train(cfg2, progress=False)).tokenizer.symbols == bundle.tokenizer.symbols
    # init_scope=encoder: a character model starts from the subword model's encoder
    from models.tokenizer import CharTokenizer
    from training.train import make_module, warm_start

    cfg3 = load_config(None, [*overrides(tiny_corpus, tmp_path / "sw3", 20), *extra[3:],
                              f"head.type={head}", f"init_from={path}", "init_scope=encoder"])
    module = make_module(cfg3, CharTokenizer())
    assert [h["steps"] for h in warm_start(module, str(path), "encoder")] == [150]
    for k, v in bundle.model.encoder.state_dict().items():
        assert torch.equal(module.model.encoder.state_dict()[k], v), k
    assert module.model.cfg.vocab_size == 29
    with pytest.raises(ValueError, match="its model .* differs from the config"):
        warm_start(module, str(path), "all")
    with pytest.raises(ValueError, match="init_scope must be one of"):
        warm_start(module, str(path), "head")
