"""Hotwords at work: oracle biasing on the rare-word utterances of a split.

    python -m training.experiments.hotword_recall --manifest data/synth/cuts_dev.jsonl.gz \
        --floors 1e-4,1e-3 --boosts 0,2,4 --out docs/results/hotword-recall

Each utterance of one text domain (default `words`: lists of rare dictionary words, where the
LM helps least) is decoded with the bundle's beam and LM, and with each of its own reference
words as a hotword at each boost (an upper bound on what biasing can recover: a user who names
the right words), at each per-frame token floor (`BeamConfig.hotword_token_floor`: a boost can
only lift a letter the beam tries). Reports WER and word recall (the share of each reference's
distinct words found in its hypothesis); JSON + markdown.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from training.experiments import write_report


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.bundle import CTC_BUNDLE, load
    from models.decoding import BeamConfig, CtcPrefixBeamDecoder, Hotwords
    from training.eval.metrics import error_rates
    from training.eval.run import forward_all, load_manifest

    args.bundle = args.bundle or CTC_BUNDLE
    bundle = load(args.bundle)
    if bundle.model.output_kind != "log_probs":
        raise SystemExit(f"--bundle {args.bundle}: a {bundle.model.cfg.head} bundle; hotword "
                         "floors are the CTC prefix beam's: give a CTC bundle "
                         "(models/pretrained/ctc)")
    utts = [u for u in load_manifest(args.manifest) if args.domain in ("*", u.domain)]
    if not utts:
        raise SystemExit(f"{args.manifest}: no utterances of domain {args.domain!r}")
    log_probs, _ = forward_all(bundle, utts, progress=not args.no_progress)
    refs = [u.ref for u in utts]

    def decode(floor: float, boost: float) -> list[str]:
        hyps = []
        for u, lp in zip(utts, log_probs, strict=True):
            hot = Hotwords([(w, boost) for w in sorted(set(u.ref.split()))]) if boost else None
            cfg = BeamConfig(args.beam_size, hotword_token_floor=math.log(floor))
            dec = CtcPrefixBeamDecoder(bundle.tokenizer, frame_seconds=bundle.frame_seconds,
                                       config=cfg, hotwords=hot, lm=bundle.lm)
            dec.update(lp)
            hyps.append(dec.finalize().text)
        return hyps

    rows = []
    plain: list[str] | None = None  # without hotwords the floor is never read: decoded once
    for floor in args.floors:
        for boost in args.boosts:
            if boost:
                hyps = decode(floor, boost)
            else:
                if plain is None:
                    plain = decode(floor, boost)
                hyps = plain
            r = error_rates(refs, hyps)
            found = sum(len(set(a.split()) & set(h.split())) for a, h in zip(refs, hyps, strict=True))
            rows.append({"hotword_token_floor": floor, "boost": boost,
                         "wer": round(r.wer, 4), "cer": round(r.cer, 4),
                         "word_recall": round(found / sum(len(set(a.split())) for a in refs), 4)})
    return {"bundle": str(args.bundle), "manifest": str(args.manifest), "domain": args.domain,
            "utterances": len(utts), "beam_size": args.beam_size, "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"Oracle hotwords, {result['utterances']} `{result['domain']}` utterances of "
             f"{result['manifest']}, beam {result['beam_size']} + the bundle's LM.", "",
             "| hotword token floor | boost | WER % | CER % | word recall % |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['hotword_token_floor']:g} | {r['boost']:g} | {100 * r['wer']:.1f} | "
                     f"{100 * r['cer']:.1f} | {100 * r['word_recall']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", default=None, help="a CTC bundle (default: models/pretrained/"
                   "ctc; the CTC prefix beam's token floor is what this measures)")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--domain", default="words", help="a text domain, or * for every utterance")
    p.add_argument("--floors", default="1e-4,1e-3", help="comma-separated token floors (probs)")
    p.add_argument("--boosts", default="0,2,4", help="comma-separated; 0: no hotwords")
    p.add_argument("--beam-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path("docs/results/hotword-recall"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.floors = [float(x) for x in args.floors.split(",")]
    args.boosts = [float(x) for x in args.boosts.split(",")]
    result = run(args)
    write_report(args.out, result, table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
