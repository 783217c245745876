"""Tokenizers: characters (blank, space, apostrophe, a-z) and sentencepiece subword units.

Both are stored with the bundle as tokens.txt (one "symbol id" per line, sherpa-onnx style: a
space inside a symbol is written "▁", the lone space "<sp>"); a subword bundle also stores its
sentencepiece model (tokens.model), needed only to *encode* training transcripts, so serving a
subword bundle never imports sentencepiece.

Decoders never need a tokenizer's segmentation: every token *spells* characters (`spell(id)`:
a subword unit such as " the" spells a word start and three letters, a Gram-CTC gram several
letters, a special such as <unk> nothing), and hotwords and the word LM walk those characters
in the fixed character alphabet (`char_ids`), whatever the model's units are.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

BLANK = "<blk>"
UNK = "<unk>"
SPACE = "<sp>"  # how " " is written in tokens.txt (one token per line, "symbol id")
WORD_START = "\u2581"  # "▁": sentencepiece's (and tokens.txt's) spelling of a space in a symbol
DEFAULT_SYMBOLS: tuple[str, ...] = (BLANK, " ", "'", *string.ascii_lowercase)
MODEL_SUFFIX = ".model"  # tokens.txt -> tokens.model (a subword tokenizer's sentencepiece model)
_CHAR_IDS = {s: i for i, s in enumerate(DEFAULT_SYMBOLS) if i}


def is_special(symbol: str) -> bool:
    return len(symbol) > 2 and symbol[0] == "<" and symbol[-1] == ">"


def char_ids(text: str) -> list[int]:
    """Characters -> ids in the character alphabet (what hotword tries and the LM walk)."""
    out = []
    for pos, ch in enumerate(text):
        i = _CHAR_IDS.get(ch)
        if i is None:
            raise ValueError(
                f"character {ch!r} at position {pos} of {text!r} is not in the vocabulary "
                "(normalise text to lowercase a-z, apostrophe and single spaces)"
            )
        out.append(i)
    return out


@dataclass(frozen=True)
class CharTokenizer:
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS

    def __post_init__(self) -> None:
        if not self.symbols or self.symbols[0] != BLANK:
            raise ValueError(f"token 0 must be the blank {BLANK!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("tokens must be unique")
        object.__setattr__(self, "_ids", {s: i for i, s in enumerate(self.symbols)})
        object.__setattr__(self, "_spelling", tuple(
            "" if i == 0 or is_special(s) else s for i, s in enumerate(self.symbols)))

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def spell(self, token: int) -> str:
        """The characters a token stands for ("" for the blank and specials)."""
        return self._spelling[token]  # type: ignore[attr-defined,no-any-return]

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
        spelling: tuple[str, ...] = self._spelling  # type: ignore[attr-defined]
        return "".join(spelling[i] for i in ids)

    def save(self, path: str | Path) -> None:
        lines = [f"{SPACE if s == ' ' else s.replace(' ', WORD_START)} {i}"
                 for i, s in enumerate(self.symbols)]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """tokens.txt, or a subword tokenizer when its sentencepiece model lies beside it."""
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
            symbols.append(" " if sym == SPACE else sym.replace(WORD_START, " "))
        model = p.with_suffix(MODEL_SUFFIX)
        if model.is_file():
            return SubwordTokenizer(tuple(symbols), model.read_bytes())
        return cls(tuple(symbols))


@dataclass(frozen=True)
class SubwordTokenizer(CharTokenizer):
    """Sentencepiece units (Kudo 2018) with the blank at id 0 and <unk> at id 1.

    `model` is the serialized sentencepiece model whose pieces are `symbols` (ids equal);
    encoding imports sentencepiece lazily (a training dependency only).
    """

    model: bytes = b""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("a subword tokenizer needs its sentencepiece model")
        object.__setattr__(self, "_sp", None)

    def _processor(self):  # type: ignore[no-untyped-def]
        if self._sp is None:  # type: ignore[has-type]
            try:
                import sentencepiece as spm
            except ImportError as exc:
                raise ImportError("encoding text with a subword tokenizer needs sentencepiece: "
                                  "pip install sentencepiece (the train extra has it)") from exc
            sp = spm.SentencePieceProcessor(model_proto=self.model)
            pieces = tuple(sp.id_to_piece(i).replace(WORD_START, " ") for i in range(sp.get_piece_size()))
            if pieces[1:] != self.symbols[1:] or sp.get_piece_size() != self.vocab_size:
                raise ValueError("the sentencepiece model's pieces differ from the tokens")
            object.__setattr__(self, "_sp", sp)
        return self._sp

    def encode(self, text: str) -> list[int]:
        char_ids(text)  # the same alphabet check (and error) as the character tokenizer
        ids: list[int] = self._processor().encode(text)
        if 1 in ids:
            raise ValueError(f"{text!r} has characters outside the subword vocabulary")
        return ids

    def save(self, path: str | Path) -> None:
        super().save(path)
        Path(path).with_suffix(MODEL_SUFFIX).write_bytes(self.model)
