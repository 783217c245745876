import random

import pytest

from training.data.text.normalize import is_normalized, normalize_text
from training.data.text.sources import fortune_sentences
from training.data.text.templates import TEMPLATES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("I paid $3.50 in 1999.", "i paid three dollars and fifty cents in nineteen ninety nine"),
        ("It's 50% off & the 3rd time", "it's fifty percent off and the third time"),
        ("pi = 3.14", "pi equals three point one four"),
        ("'quoted' words aren't split", "quoted words aren't split"),
        ("1,024 bytes", "one thousand and twenty four bytes"),
        ("Caf\u00e9 na\u00efve", "cafe naive"),
        ("   ", None),
        ("!!!", None),
    ],
)
def test_normalize(raw: str, expected: str | None) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("domain", sorted(TEMPLATES))
def test_templates_are_normalized(domain: str) -> None:
    rng = random.Random(0)
    for _ in range(200):
        text, speak = TEMPLATES[domain](rng)
        assert is_normalized(text), (domain, text)
        assert speak.strip()


def test_spelled_letters_are_read_as_letter_names() -> None:
    text, speak = TEMPLATES["spelled"](random.Random(3))
    letters = text.split()[-3:]
    assert all(len(c) == 1 for c in letters)
    assert speak.endswith(", ".join(c.upper() for c in letters) + ".")


def test_fortunes_are_normalized_and_many() -> None:
    sentences = fortune_sentences()
    assert len(sentences) > 5000  # Debian fortunes gives ~20k
    assert all(is_normalized(s) for s in sentences[:2000])
