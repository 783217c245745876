"""Word and character error rates (jiwer), overall and per group (voice, engine, domain).

Rates are pooled over a group (total edits / total reference words), never an average of
per-utterance rates. `edit_counts` (training's dev WER) works without jiwer too, by a plain
Levenshtein distance (tested equal to jiwer's): the lent GPU machine has no jiwer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rates:
    utterances: int
    words: int
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["wer"], d["cer"] = round(self.wer, 4), round(self.cer, 4)
        return d


def _align(refs: Sequence[str], hyps: Sequence[str]) -> tuple[Any, Any]:
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("nothing to score: no utterances")
    # jiwer rejects empty strings; an empty hypothesis is all deletions, which "" -> " " keeps
    h = [x if x.strip() else " " for x in hyps]
    return jiwer.process_words(list(refs), h), jiwer.process_characters(list(refs), h)


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> Rates:
    w, c = _align(refs, hyps)
    words = w.hits + w.substitutions + w.deletions
    return Rates(len(refs), words, w.wer, c.cer, w.substitutions, w.deletions, w.insertions)


def edit_counts(refs: Sequence[str], hyps: Sequence[str]) -> tuple[int, int, int, int]:
    """(word edits, reference words, character edits, reference characters): the sums that pool.

    Shards of a set (a DDP rank's share of the dev set) add up to the whole set's counts, so
    WER = sum(word edits) / sum(reference words) over the shards is the set's WER.
    """
    try:
        import jiwer  # noqa: F401
    except ImportError:
        return levenshtein_counts(refs, hyps)
    w, c = _align(refs, hyps)
    return (w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions,
            c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions)


def _distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Edit distance (substitutions + deletions + insertions, each cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def levenshtein_counts(refs: Sequence[str], hyps: Sequence[str]) -> tuple[int, int, int, int]:
    """edit_counts without jiwer: words split on whitespace, characters as jiwer counts them
    (the stripped string, inner spaces included)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    out = [0, 0, 0, 0]
    for r, h in zip(refs, hyps, strict=True):
        rw, hw = r.split(), h.split()
        rc, hc = r.strip(), h.strip()
        out[0] += _distance(rw, hw)
        out[1] += len(rw)
        out[2] += _distance(rc, hc)
        out[3] += len(rc)
    return out[0], out[1], out[2], out[3]


def breakdown(refs: Sequence[str], hyps: Sequence[str], keys: Sequence[str]) -> dict[str, Rates]:
    """Rates per distinct key (keys[i] is utterance i's group), sorted by key."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    return {k: error_rates([refs[i] for i in idx], [hyps[i] for i in idx])
            for k, idx in sorted(groups.items())}


def markdown_table(title: str, columns: dict[str, dict[str, Rates]],
                   fmt: Callable[[Rates], str] | None = None) -> str:
    """One row per group, one column per system: 'WER % / CER %'."""
    fmt = fmt or (lambda r: f"{100 * r.wer:.1f} / {100 * r.cer:.1f}")
    systems = list(columns)
    rows = sorted({g for col in columns.values() for g in col})
    first = columns[systems[0]]
    head = f"| {title} | utts | words | " + " | ".join(f"{s} WER / CER %" for s in systems) + " |"
    sep = "|" + "---|" * (3 + len(systems))
    lines = [head, sep]
    for g in rows:
        r0 = first.get(g)
        cells = [fmt(columns[s][g]) if g in columns[s] else "-" for s in systems]
        lines.append(f"| {g} | {r0.utterances if r0 else '-'} | {r0.words if r0 else '-'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
