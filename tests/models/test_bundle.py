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
