"""The cold-fusion domain-transfer command end to end on a tiny corpus and a tiny model
(seconds per step): domain splits, LM texts from the train split only, the LM swap, and
fine-tuning that keeps the swapped-in target LM."""

from __future__ import annotations

import json

import pytest
import torch

from training.data.synth.corpus import SynthConfig, synthesize_corpus
from training.experiments.cold_fusion import SOURCE, TARGET, main, paths

SMALL = ["model.d_model=96", "model.num_layers=1", "model.conv_channels=8",
         "data.max_duration_s=20", "data.num_buckets=2", "data.num_workers=0",
         "augment.noise_prob=0.0", "augment.reverb_prob=0.0", "augment.telephone_prob=0.0",
         "augment.speed=[1.0]", "chunk_frames=16", "optim.val_every_steps=10",
         "head.pred_dim=32", "head.joiner_dim=32", "head.cold_fusion_dim=16"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("cf")
    synthesize_corpus(SynthConfig(out=out, hours=0.04, seed=2, jobs=2, engines=("flite",),
                                  split_weights={"train": 0.6, "dev": 0.2, "test": 0.2}),
                      progress=False)
    return out


@pytest.fixture(scope="module")
def init_bundle(tmp_path_factory):
    """A random tiny CTC bundle whose encoder matches SMALL (what the source runs start from)."""
    from models.acoustic import AcousticModel, ModelConfig
    from models.bundle import save
    from models.features import FbankConfig
    from models.nn.encoder import EncoderConfig
    from models.tokenizer import CharTokenizer

    torch.manual_seed(0)
    cfg = ModelConfig(EncoderConfig(d_model=96, num_layers=1, conv_channels=8),
                      CharTokenizer().vocab_size)
    return save(tmp_path_factory.mktemp("init") / "b", AcousticModel(cfg), features=FbankConfig(),
                tokenizer=CharTokenizer())


def test_study_runs_every_step_and_fine_tuning_keeps_the_target_lm(corpus, init_bundle,
                                                                     tmp_path) -> None:
    from lhotse import CutSet

    from models.bundle import load
    from models.lm.neural import load as load_lm
    from training.data.synth.split import text_split

    work, out = tmp_path / "work", tmp_path / "table"
    common = ["--corpus", str(corpus), "--work", str(work), "--out", str(out), "--no-progress",
              "--init-from", str(init_bundle), "--minutes", "0.08", "--ft-minutes", "0.05",
              "--lm-minutes", "0.02", "--lm-embed", "8", "--lm-hidden", "16", "--ft-val-every",
              "5", "--dev-limit", "3", "--template-sentences", "50",
              *sum((["--override", o] for o in SMALL), [])]
    assert main([*common, "--only", "data,lm-source,lm-target"]) == 0
    p = paths(work)
    for dom, names in (("source", SOURCE), ("target", TARGET)):
        for split in ("train", "dev", "test"):
            domains = {c.supervisions[0].custom["domain"] for c in CutSet.from_file(p[f"{dom}_{split}"])}
            assert domains and domains <= set(names), (dom, split, domains)
        sentences = p[f"{dom}_text"].read_text().splitlines()
        assert sentences and all(text_split(s) == "train" for s in sentences)
    subsets = [{c.id for c in CutSet.from_file(p[f"target_train_{f}"])} for f in (1, 5, 10)]
    assert subsets[0] <= subsets[1] <= subsets[2]  # nested label budgets

    assert main([*common, "--only", "baseline,cold,swap,ft-cold-1,ft-baseline-1"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    runs = {r["run"]: r for r in result["runs"]}
    assert {"lm-source", "lm-target", "baseline", "cold", "swap", "ft-cold-1",
            "ft-baseline-1"} <= set(runs)
    for name in ("baseline", "cold", "swap", "ft-cold-1"):
        r = runs[name]
        for key in ("source_greedy", "target_greedy", "target_beam", "target_beam_source_lm",
                    "target_beam_target_lm"):
            assert 0 <= r[key], (name, key)
    target = load_lm(p["lm_target"]).state_dict()
    source = load_lm(p["lm_source"]).state_dict()
    for name, want in (("cold", source), ("swap", target), ("ft-cold-1", target)):
        got = load(runs[name]["bundle"]).model.head.fusion.lm.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert load(runs["baseline"]["bundle"]).model.head.fusion is None
    table = out.with_suffix(".md").read_text()
    assert "| cold | target | 1 % |" in table and "| lm-target |" in table
    assert runs["cold"]["curve"]["dev_wer"] and runs["cold"]["curve"]["train_loss"]
    out.with_suffix(".md").unlink()
    assert main([*common, "--only", "render"]) == 0  # the table again from its JSON
    assert "source training: step" in out.with_suffix(".md").read_text()

    # rescore: every model row scored again from its bundle (a decoder changed), curves kept
    assert main([*common, "--only", "rescore"]) == 0
    again = {r["run"]: r for r in json.loads(out.with_suffix(".json").read_text())["runs"]}
    assert {n for n, r in again.items() if r.get("rescored")} == \
        {"baseline", "cold", "swap", "ft-cold-1", "ft-baseline-1"}
    for name in ("baseline", "swap"):
        assert again[name]["curve"] == runs[name]["curve"]
        assert again[name]["target_greedy"] == runs[name]["target_greedy"]  # same decoder
    assert again["lm-source"] == runs["lm-source"]
