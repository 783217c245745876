import pytest

from models.tokenizer import BLANK, CharTokenizer


def test_round_trip_and_vocab() -> None:
    tok = CharTokenizer()
    assert tok.vocab_size == 29 and tok.symbols[0] == BLANK
    text = "don't stop me now"
    ids = tok.encode(text)
    assert 0 not in ids
    assert tok.decode(ids) == text


def test_rejects_unknown_characters_specifically() -> None:
    with pytest.raises(ValueError, match=r"character 'A' at position 0"):
        CharTokenizer().encode("A cat")


def test_save_load(tmp_path) -> None:
    tok = CharTokenizer()
    tok.save(tmp_path / "tokens.txt")
    lines = (tmp_path / "tokens.txt").read_text().splitlines()
    assert lines[0] == "<blk> 0" and lines[1] == "<sp> 1"
    assert CharTokenizer.load(tmp_path / "tokens.txt") == tok


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        CharTokenizer.load(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("<blk> 0\na 2\n")
    with pytest.raises(ValueError, match="ids must be 0, 1, 2"):
        CharTokenizer.load(bad)
