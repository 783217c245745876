"""Output units for training: sentencepiece subword units learned from the train transcripts.

Sentencepiece (Kudo and Richardson 2018) rather than our own BPE: it is the well-kept standard
(icefall, WeNet and ESPnet train their units with it), and its model serialises into the
bundle. The unigram model is the default (icefall's choice); `bpe` is the alternative.
"""

from __future__ import annotations

import io

from models.tokenizer import BLANK, DEFAULT_SYMBOLS, WORD_START, SubwordTokenizer

MODEL_TYPES = ("unigram", "bpe")


def train_subword(texts: list[str], vocab_size: int, *, model_type: str = "unigram") -> SubwordTokenizer:
    """Sentencepiece units from normalised transcripts; every character of the alphabet is a
    unit of its own (character_coverage 1, the alphabet as required characters)."""
    try:
        import sentencepiece as spm
    except ImportError as exc:
        raise ImportError("subword units need sentencepiece: pip install sentencepiece") from exc
    if model_type not in MODEL_TYPES:
        raise ValueError(f"subword model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if vocab_size < len(DEFAULT_SYMBOLS) + 1:
        raise ValueError(f"subword vocab_size must be >= {len(DEFAULT_SYMBOLS) + 1} (blank, <unk> "
                         f"and every character), got {vocab_size}")
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, user_defined_symbols=[BLANK],
            unk_id=1, bos_id=-1, eos_id=-1, pad_id=-1, required_chars="".join(DEFAULT_SYMBOLS[2:]),
            input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=1,
            minloglevel=2, add_dummy_prefix=True, remove_extra_whitespaces=True,
        )
    except RuntimeError as exc:
        if "Vocabulary size too high" in str(exc):  # the text has fewer distinct pieces
            raise ValueError(f"subword vocab_size {vocab_size} is too large for this text: "
                             f"{str(exc).split('] ')[-1]}") from None
        raise
    proto = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    symbols = [sp.id_to_piece(i).replace(WORD_START, " ") for i in range(sp.get_piece_size())]
    if symbols[0] != BLANK:
        raise RuntimeError(f"sentencepiece put {symbols[0]!r} at id 0, expected the blank")
    return SubwordTokenizer(tuple(symbols), proto)
