"""`python -m training.eval.speech_rate`: what speaking rate costs a bundle, per engine.

Two measurements of the acoustic model alone (greedy CTC, the production decoder) on one
manifest:
1. **Label density quartiles.** Per utterance, CTC labels (characters + the blanks adjacent
   repeats need, `label_density.label_count`) per model output frame; per engine the WER, CER
   and deletion rate of its densest quarter against its sparsest, and their correlation. A
   model whose errors climb with density within one engine (same voices, same synthesiser) is
   short of frames, not of voices.
2. **Tempo.** Every utterance time-stretched by sox's `tempo` (WSOLA: the duration changes,
   pitch and formants stay) at each factor, then transcribed: if slowed speech (factor < 1)
   scores better, the frame rate limits the model (x2 halves the density). Factor 1 is the
   audio as it is (no sox call), so its row is `chorus eval --decoder greedy`'s.

sox is the stretcher because it is already a system dependency (the corpus's post-processing)
and its WSOLA keeps the voice; a phase vocoder (librosa) smears transients.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.label_density import label_count
from training.eval.metrics import Rates, breakdown, error_rates

SAMPLE_RATE = 16_000


def stretch(audio: np.ndarray, factor: float) -> np.ndarray:
    """Mono float32 16 kHz audio played `factor` times as fast (duration / factor), pitch kept."""
    if factor == 1.0:
        return audio
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"tempo factor must be in [0.5, 2], got {factor}")
    raw = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    proc = subprocess.run(["sox", "-V1", *raw, "-", *raw, "-", "tempo", "-s", str(factor)],
                          input=np.ascontiguousarray(audio, dtype=np.float32).tobytes(),
                          capture_output=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"sox tempo {factor} failed: {proc.stderr.decode(errors='replace')}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


class _Stretched:
    """An eval Utterance seen through a tempo change (what `forward_all` reads)."""

    def __init__(self, utt: Any, factor: float):
        self.utt, self.factor = utt, factor
        self.duration = utt.duration / factor

    def audio(self) -> np.ndarray:
        return stretch(self.utt.audio(), self.factor)


def _with_deletions(r: Rates) -> dict[str, Any]:
    """Pooled rates as a dict, with deletions per reference word."""
    return {**r.to_dict(), "deletion_rate": round(r.deletions / max(r.words, 1), 4)}


def _rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Any]:
    """Pooled rates of a group of utterances, with deletions per reference word."""
    return _with_deletions(error_rates(refs, hyps))


def density_quartiles(utts: Sequence[Any], hyps: Sequence[str],
                      frames: Sequence[int]) -> dict[str, Any]:
    """Per engine (and "all"): median density, the sparsest and densest quarters' pooled rates,
    and the Pearson correlation of density with the utterance's CER."""
    dens = np.array([label_count(list(u.ref)) / max(f, 1) for u, f in zip(utts, frames,
                                                                         strict=True)])
    cer = np.array([error_rates([u.ref], [h]).cer for u, h in zip(utts, hyps, strict=True)])

    def pooled(idx: list[int]) -> dict[str, Any]:
        return _rates([utts[i].ref for i in idx], [hyps[i] for i in idx])

    groups: dict[str, list[int]] = {"all": list(range(len(utts)))}
    for i, u in enumerate(utts):
        groups.setdefault(u.engine, []).append(i)
    out = {}
    for name, idx in sorted(groups.items()):
        d = dens[idx]
        lo, med, hi = np.quantile(d, [0.25, 0.5, 0.75])
        corr = float(np.corrcoef(d, cer[idx])[0, 1]) if len(idx) > 2 and d.std() > 0 else None
        out[name] = {
            "utterances": len(idx), "median_density": round(float(med), 3),
            "low_quarter_max": round(float(lo), 3), "high_quarter_min": round(float(hi), 3),
            "low": pooled([i for i in idx if dens[i] <= lo]),
            "high": pooled([i for i in idx if dens[i] >= hi]),
            "corr_density_cer": None if corr is None or np.isnan(corr) else round(corr, 3)}
    return out


def measure(bundle_path: str | Path | None, manifest: str | Path, tempos: Sequence[float],
            limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    from models.bundle import load
    from training.eval.run import decode_all, forward_all, load_manifest

    bundle = load(bundle_path)
    if bundle.model.output_kind != "log_probs":
        raise ValueError("speech_rate measures CTC bundles (greedy over log-probs)")
    utts = load_manifest(manifest, limit)
    refs, engines = [u.ref for u in utts], [u.engine for u in utts]
    rows: dict[str, Any] = {}
    quartiles = None
    for f in tempos:
        lps, _ = forward_all(bundle, [_Stretched(u, f) for u in utts],  # type: ignore[misc]
                             progress=progress, desc=f"tempo {f}")
        hyps, _ = decode_all(bundle, lps, decoder="greedy", beam_size=1)
        rows[str(f)] = {"overall": _rates(refs, hyps),
                        "per_engine": {e: _with_deletions(r)
                                       for e, r in breakdown(refs, hyps, engines).items()},
                        "output_frames": int(sum(lp.shape[0] for lp in lps)),
                        "hypotheses": hyps}
        if f == 1.0:
            quartiles = density_quartiles(utts, hyps, [lp.shape[0] for lp in lps])
    return {"bundle": str(bundle.path), "manifest": str(manifest), "utterances": len(utts),
            "subsampling": bundle.model.subsampling, "decoder": "greedy",
            "tempos": rows, "density_quartiles": quartiles}


def markdown(result: dict[str, Any]) -> str:
    tempos = result["tempos"]
    engines = sorted({e for r in tempos.values() for e in r["per_engine"]})
    lines = [f"{result['utterances']} utterances of {result['manifest']}, {result['bundle']} "
             f"(x{result['subsampling']}), greedy",
             "", "| tempo | WER % | CER % | deletions % | " + " | ".join(
                 f"{e} WER / CER" for e in engines) + " |",
             "|---" * (4 + len(engines)) + "|"]
    for f, r in tempos.items():
        o = r["overall"]
        cells = [f"{100 * r['per_engine'][e]['wer']:.1f} / {100 * r['per_engine'][e]['cer']:.1f}"
                 if e in r["per_engine"] else "-" for e in engines]
        lines.append(f"| {f} | {100 * o['wer']:.2f} | {100 * o['cer']:.2f} | "
                     f"{100 * o['deletion_rate']:.2f} | " + " | ".join(cells) + " |")
    q = result.get("density_quartiles")
    if q:
        lines += ["", "| engine | utterances | median labels / frame | sparsest quarter WER / CER "
                  "/ deletions % | densest quarter WER / CER / deletions % | corr(density, CER) |",
                  "|---|---|---|---|---|---|"]
        for e, g in q.items():
            lo, hi = g["low"], g["high"]
            lines.append(
                f"| {e} | {g['utterances']} | {g['median_density']:.2f} | "
                f"{100 * lo['wer']:.1f} / {100 * lo['cer']:.1f} / {100 * lo['deletion_rate']:.1f} | "
                f"{100 * hi['wer']:.1f} / {100 * hi['cer']:.1f} / {100 * hi['deletion_rate']:.1f} | "
                f"{g['corr_density_cer']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.eval.speech_rate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None,
                    help="a CTC bundle (default: models/pretrained/ctc, the shipped CTC model)")
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--tempo", default="1.0,0.85",
                    help="comma-separated tempo factors (< 1 slower; 1.0 adds the density table)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        tempos = [float(x) for x in args.tempo.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--tempo: comma-separated numbers, e.g. 1.0,0.85; got {args.tempo!r}")
    if not tempos:
        ap.error("--tempo: at least one factor")
    from models.bundle import CTC_BUNDLE

    result = measure(args.bundle or CTC_BUNDLE, args.manifest, tempos, args.limit,
                     not args.no_progress)
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
