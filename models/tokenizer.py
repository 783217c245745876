"""Character tokenizer: blank, space, apostrophe, a-z. Stored with the bundle as tokens.txt."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

BLANK = "<blk>"
SPACE = "<sp>"  # how " " is written in tokens.txt (one token per line, "symbol id")
DEFAULT_SYMBOLS: tuple[str, ...] = (BLANK, " ", "'", *string.ascii_lowercase)


@dataclass(frozen=True)
class CharTokenizer:
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS

    def __post_init__(self) -> None:
        if not self.symbols or self.symbols[0] != BLANK:
            raise ValueError(f"token 0 must be the blank {BLANK!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("tokens must be unique")
        object.__setattr__(self, "_ids", {s: i for i, s in enumerate(self.symbols)})

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        ids: dict[str, int] = self._ids  # type: ignore[attr-defined]
        out = []
        for pos, ch in enumerate(text):
            if ch not in ids or ch == BLANK:
                raise ValueError(
                    f"character {ch!r} at position {pos} of {text!r} is not in the vocabulary "
                    "(normalise text to lowercase a-z, apostrophe and single spaces)"
                )
            out.append(ids[ch])
        return out

    def decode(self, ids: list[int]) -> str:
        """Token ids (blanks already removed or not) -> text."""
        return "".join(self.symbols[i] for i in ids if i != self.blank_id)

    def save(self, path: str | Path) -> None:
        lines = [f"{SPACE if s == ' ' else s} {i}" for i, s in enumerate(self.symbols)]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"tokens file not found: {p}")
        symbols: list[str] = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{p}:{n}: expected 'symbol id', got {line!r}")
            sym, idx = parts[0], int(parts[1])
            if idx != len(symbols):
                raise ValueError(f"{p}:{n}: ids must be 0, 1, 2, ... in order; got {idx}")
            symbols.append(" " if sym == SPACE else sym)
        return cls(tuple(symbols))
