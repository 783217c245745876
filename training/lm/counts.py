"""Published n-gram count tables as LM text: lines `w1 ... wn count` (e.g. symspellpy's English
bigram dictionary, 242 k word pairs counted in Google Books, shipped inside its PyPI wheel).

Counts are scaled so the smallest listed count is 1 (the table is pruned: raw counts of
millions would leave Kneser-Ney almost no discount), and words outside our alphabet (digits,
other scripts) are dropped with their entries.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from models.tokenizer import DEFAULT_SYMBOLS

SYMSPELL_BIGRAMS = "symspell-bigrams"  # the name `chorus lm build --counts` resolves
_ALPHABET = set(DEFAULT_SYMBOLS[2:])  # apostrophe and a-z


def resolve(name: str | Path) -> Path:
    if str(name) == SYMSPELL_BIGRAMS:
        try:
            import symspellpy
        except ImportError as exc:
            raise SystemExit("--counts symspell-bigrams needs symspellpy: pip install symspellpy "
                             "(the train extra has it)") from exc
        return Path(symspellpy.__file__).parent / "frequency_bigramdictionary_en_243_342.txt"
    p = Path(name)
    if not p.is_file():
        raise SystemExit(f"--counts {p}: file not found")
    return p


def read_counts(path: Path) -> tuple[Counter[tuple[str, ...]], int]:
    """(scaled counts, n): every line must list n words and a positive integer count."""
    raw: Counter[tuple[str, ...]] = Counter()
    order = 0
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[-1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'w1 ... wn count', got {line!r}")
        words = tuple(w.lower() for w in parts[:-1])
        if order and len(words) != order:
            raise ValueError(f"{path}:{lineno}: {len(words)} words, the table's lines have {order}")
        order = len(words)
        if all(set(w) <= _ALPHABET for w in words):
            raw[words] += int(parts[-1])
    if not raw:
        raise ValueError(f"{path}: no usable n-gram counts")
    low = min(raw.values())
    return Counter({g: max(1, round(c / low)) for g, c in raw.items()}), order
