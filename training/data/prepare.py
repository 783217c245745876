"""`chorus data prepare librispeech|commonvoice|kaldi DIR --out M`: a corpus the user already has
-> the manifests `chorus train` and `chorus eval` read, the same as the synthetic corpus's.

Lhotse's own recipes read the layouts (`prepare_librispeech`, `prepare_commonvoice`,
`load_kaldi_data_dir`: no download step, the user points at a directory); this module only maps
their parts onto our splits and our conventions:
- `cuts_{train,dev,test}.jsonl.gz` (and `cuts_<part>.jsonl.gz` per corpus part), one cut per
  supervision, mono, resampled to 16 kHz where the audio is not (lazily, by Lhotse);
- transcripts through our text normaliser (lowercase a-z, apostrophe, numbers spelled), cuts
  whose text normalises to nothing dropped and counted;
- custom fields `engine` (the corpus) and `domain` (its part), speaker = the corpus speaker, so
  `chorus eval` reports per part and speaker as it does per TTS engine and voice.
Subword units come from the train text when training (`head.units=subword`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LAYOUTS = ("librispeech", "commonvoice", "kaldi")
SPLITS = ("train", "dev", "test")
SAMPLE_RATE_HZ = 16_000
# LibriSpeech part -> our split (clean and other both kept; per-part manifests are written too)
LIBRISPEECH_SPLIT = {"train-clean-5": "train", "train-clean-100": "train",
                     "train-clean-360": "train", "train-other-500": "train",
                     "dev-clean-2": "dev", "dev-clean": "dev", "dev-other": "dev",
                     "test-clean": "test", "test-other": "test"}


class PrepareError(ValueError):
    pass


def _librispeech(corpus: Path, work: Path) -> dict[str, Any]:
    from lhotse.recipes import prepare_librispeech

    if not any((corpus / p).is_dir() for p in LIBRISPEECH_SPLIT):
        raise PrepareError(f"{corpus}: no LibriSpeech part directory (expected one of "
                           f"{sorted(LIBRISPEECH_SPLIT)}, each <speaker>/<chapter>/*.trans.txt)")
    parts = prepare_librispeech(corpus, output_dir=work, dataset_parts="auto")
    return {part: (LIBRISPEECH_SPLIT[part], m["recordings"], m["supervisions"])
            for part, m in parts.items()}


def _commonvoice(corpus: Path, work: Path, language: str) -> dict[str, Any]:
    from lhotse.recipes import prepare_commonvoice

    lang_dir = corpus / language
    missing = [s for s in ("train", "dev", "test") if not (lang_dir / f"{s}.tsv").is_file()]
    if missing or not (lang_dir / "clips").is_dir():
        raise PrepareError(f"{corpus}: expected {language}/{{train,dev,test}}.tsv and "
                           f"{language}/clips/ (a Common Voice release directory); missing "
                           f"{[f'{language}/{m}.tsv' for m in missing] or [f'{language}/clips']}")
    out = prepare_commonvoice(corpus, output_dir=work, languages=[language])[language]
    return {part: (part, m["recordings"], m["supervisions"]) for part, m in out.items()}


def _kaldi(corpus: Path, splits: dict[str, str]) -> dict[str, Any]:
    from lhotse.kaldi import load_kaldi_data_dir

    out = {}
    for split, sub in splits.items():
        d = corpus / sub if sub else corpus
        for name in ("wav.scp", "text"):
            if not (d / name).is_file():
                raise PrepareError(f"{d}: a Kaldi data directory needs {name} (and utt2spk; "
                                   "segments optional)")
        recordings, supervisions, _ = load_kaldi_data_dir(d, sampling_rate=SAMPLE_RATE_HZ)
        out[sub or split] = (split, recordings, supervisions)
    return out


def _cuts(recordings: Any, supervisions: Any, engine: str, part: str, counts: Counter[str]) -> Any:
    """Recordings + supervisions -> one 16 kHz cut per supervision (its channel), normalised text."""
    from dataclasses import replace

    from lhotse import CutSet, SupervisionSet

    from training.data.text.normalize import normalize_text

    sups = []
    for sup in supervisions:
        counts["supervisions"] += 1
        text = normalize_text(sup.text or "")
        if text:
            sups.append(replace(sup, text=text))
        else:
            counts["dropped_empty_text"] += 1
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=SupervisionSet.from_segments(sups))
    out = []
    for cut in cuts.trim_to_supervisions(keep_overlapping=False):
        if cut.sampling_rate != SAMPLE_RATE_HZ:
            cut = cut.resample(SAMPLE_RATE_HZ)
        cut.custom = {**(cut.custom or {}), "engine": engine, "domain": part}
        sup = cut.supervisions[0]
        sup.custom = {**(sup.custom or {}), "engine": engine, "domain": part}
        out.append(cut)
        counts["cuts"] += 1
    return CutSet.from_cuts(out)


def prepare(layout: str, corpus: Path, out: Path, *, language: str = "en",
            kaldi_splits: dict[str, str] | None = None) -> dict[str, Any]:
    """Write out/cuts_{split}.jsonl.gz (+ per part) and out/stats.json; return the stats."""
    if layout not in LAYOUTS:
        raise PrepareError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise PrepareError(f"corpus directory not found: {corpus}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chorus-prepare-") as tmp:
        if layout == "librispeech":
            parts = _librispeech(corpus, Path(tmp))
        elif layout == "commonvoice":
            parts = _commonvoice(corpus, Path(tmp), language)
        else:
            parts = _kaldi(corpus, kaldi_splits or _kaldi_default_splits(corpus))
        by_split: dict[str, list[Any]] = {s: [] for s in SPLITS}
        stats: dict[str, Any] = {"layout": layout, "corpus": str(corpus), "parts": {}}
        for part, (split, recordings, supervisions) in sorted(parts.items()):
            counts: Counter[str] = Counter()
            cuts = _cuts(recordings, supervisions, layout, part, counts).to_eager()
            cuts.to_file(out / f"cuts_{part}.jsonl.gz")
            by_split[split].append(cuts)
            stats["parts"][part] = {"split": split, **counts,
                                    "hours": round(sum(c.duration for c in cuts) / 3600, 4)}
            log.info("prepare %s: %s -> %s, %d cuts", layout, part, split, counts["cuts"])
    from lhotse import CutSet

    for split, sets in by_split.items():
        if sets:
            CutSet.from_cuts(c for s in sets for c in s).to_file(out / f"cuts_{split}.jsonl.gz")
    stats["splits"] = {s: sum(stats["parts"][p]["cuts"] for p in stats["parts"]
                              if stats["parts"][p]["split"] == s) for s in SPLITS}
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def _kaldi_default_splits(corpus: Path) -> dict[str, str]:
    """A data directory itself is the train split; else its train/dev/test subdirectories."""
    if (corpus / "wav.scp").is_file():
        return {"train": ""}
    found = {s: s for s in SPLITS if (corpus / s / "wav.scp").is_file()}
    if not found:
        raise PrepareError(f"{corpus}: neither a Kaldi data directory (wav.scp) nor one with "
                           "train/, dev/, test/ data directories; name them with --split")
    return found


def parse_splits(items: list[str]) -> dict[str, str]:
    """["train=train_960", "dev=dev_clean"] -> {"train": "train_960", ...}."""
    out = {}
    for item in items:
        split, sep, sub = item.partition("=")
        if not sep or split not in SPLITS or not sub:
            raise PrepareError(f"--split {item!r}: expected SPLIT=SUBDIR with SPLIT one of {SPLITS}")
        out[split] = sub
    return out
