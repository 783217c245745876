import json

import pytest
import torch

from models import bundle as bundle_mod
from models.bundle import BundleError, DecodingDefaults, load, save
from models.features import FbankConfig
from models.tokenizer import CharTokenizer
from tests.models.test_encoder import make_model


@pytest.fixture
def saved(tmp_path):
    model = make_model()
    save(tmp_path / "b", model, features=FbankConfig(), tokenizer=CharTokenizer(),
         decoding=DecodingDefaults(chunk_frames=16), provenance={"recipe": "test"})
    return tmp_path / "b", model


def test_round_trip(saved) -> None:
    path, model = saved
    b = load(path)
    assert b.provenance == {"recipe": "test"} and b.decoding.chunk_frames == 16
    assert b.frame_seconds == pytest.approx(0.04)
    x = torch.randn(1, 50, 80)
    with torch.no_grad():
        assert torch.equal(b.model(x)[0], model(x)[0])


@pytest.mark.parametrize("name", ["bundle.json", "model.safetensors", "tokens.txt"])
def test_missing_file(saved, name: str) -> None:
    path, _ = saved
    (path / name).unlink()
    with pytest.raises(BundleError, match=f"missing {name}"):
        load(path)


def test_mismatched_vocab(saved) -> None:
    path, _ = saved
    CharTokenizer(CharTokenizer().symbols[:-1]).save(path / "tokens.txt")
    with pytest.raises(BundleError, match="has 28 tokens but"):
        load(path)


def test_mismatched_shapes(saved) -> None:
    path, _ = saved
    meta = json.loads((path / "bundle.json").read_text())
    meta["model"]["encoder"]["d_model"] = 64
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="has shape"):
        load(path)


def test_bad_version_and_json(saved) -> None:
    path, _ = saved
    meta = json.loads((path / "bundle.json").read_text())
    meta["format_version"] = 99
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format_version"):
        load(path)
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load(path)


def test_weights_are_not_pickle(saved) -> None:
    path, _ = saved
    (path / "model.safetensors").write_bytes(b"\x80\x04garbage pickle")
    with pytest.raises(BundleError, match="cannot be read"):
        load(path)


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load(tmp_path / "nope")
    assert bundle_mod.DEFAULT_BUNDLE.name == "default"


def test_a_bad_rescoring_lm_is_refused_naming_the_field_and_file(saved) -> None:
    """decoding.rescore_lm: outside the bundle, missing, or mismatched weights -> BundleError
    naming decoding.rescore_lm and the file; a good one loads as the bundle's rescorer."""
    from models.lm.neural import NeuralLm, NeuralLmConfig

    path, _ = saved
    meta = json.loads((path / "bundle.json").read_text())

    def with_rescore(rel: str) -> None:
        meta["decoding"].update({"rescore_lm": rel, "rescore_weight": 0.5})
        (path / "bundle.json").write_text(json.dumps(meta))

    with_rescore("../elsewhere")
    with pytest.raises(BundleError, match="rescore_lm must be inside the bundle"):
        load(path)
    with_rescore("lm/nn")
    with pytest.raises(BundleError, match=r"decoding.rescore_lm 'lm/nn': .*lm.json: not found"):
        load(path)
    NeuralLm(NeuralLmConfig(vocab=["<unk>", "<s>", "</s>", "a"], embed=4, hidden=4)).save(path / "lm/nn")
    assert load(path).rescorer.weight == 0.5
    cfg = json.loads((path / "lm/nn/lm.json").read_text())
    (path / "lm/nn/lm.json").write_text(json.dumps({**cfg, "hidden": 5}))
    with pytest.raises(BundleError, match=r"rescore_lm 'lm/nn': .*lm.safetensors: tensor"):
        load(path)
