"""`chorus data ...` subcommands (training-side tools)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="training data tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser(
        "synth", help="synthesize a speech corpus with every offline TTS voice",
        description="Synthesize 16 kHz WAVs + Lhotse manifests (train/dev/test; test has unseen "
                    "voices and sentences).")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--hours", type=float, required=True, help="hours of audio to produce")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--jobs", type=int, default=None, help="parallel workers (default: CPUs)")
    synth.add_argument("--engines", default=None,
                       help="comma-separated subset of engines (default: all installed)")
    synth.add_argument("--min-voices-per-engine", type=int, default=0,
                       help="derive voices (a fixed pitch / formant / intonation transform per "
                            "derived voice) until every engine has this many (default 0: none)")
    synth.add_argument("--id-prefix", default="",
                       help="prepended to every utterance id, so that this corpus can be trained "
                            "together with another (e.g. derived-; default none)")
    synth.add_argument("--voice-seed", type=int, default=None,
                       help="seed of the voice split (default: --seed); give a first corpus's "
                            "seed to add new sentences under its held-out voices (e.g. --seed 1 "
                            "--voice-seed 0 --id-prefix s1-)")
    synth.add_argument("--no-progress", action="store_true")
    synth.set_defaults(func=run_synth)

    prep = data_sub.add_parser(
        "prepare", help="manifests from a corpus you have (LibriSpeech, Common Voice, Kaldi)",
        description="Read a corpus directory with Lhotse's recipes (no download) and write the "
                    "manifests chorus train/eval read: cuts_{train,dev,test}.jsonl.gz (16 kHz, "
                    "normalised text) plus one per corpus part.")
    prep.add_argument("layout", choices=("librispeech", "commonvoice", "kaldi"))
    prep.add_argument("corpus", type=Path, help="LibriSpeech/ (its parts inside), a Common "
                      "Voice release (cv-corpus-*/ with LANG/), or a Kaldi data directory")
    prep.add_argument("--out", type=Path, required=True, help="output directory")
    prep.add_argument("--language", default="en", help="commonvoice: the language directory")
    prep.add_argument("--split", action="append", default=[],
                      help="kaldi: SPLIT=SUBDIR (repeatable), e.g. train=train_960 dev=dev_clean; "
                           "default: DIR itself as train, or DIR/{train,dev,test}")
    prep.set_defaults(func=run_prepare)

    cor = data_sub.add_parser(
        "corrupt", help="corrupted copies of a manifest (noisy, far-field, telephone test sets)",
        description="Seeded and deterministic per utterance: the same seed gives the same "
                    "audio whatever the order or subset.")
    cor.add_argument("--manifest", type=Path, required=True)
    cor.add_argument("--kind", required=True,
                     choices=("white", "pink", "brown", "noise", "babble", "farfield", "telephone"))
    cor.add_argument("--snr", type=float, default=10.0, help="dB (noise kinds and farfield)")
    cor.add_argument("--out", type=Path, required=True)
    cor.add_argument("--seed", type=int, default=0)
    cor.add_argument("--limit", type=int, default=None)
    cor.add_argument("--name", default=None, help="default: SPLIT-KINDSNR, e.g. test-noise10")
    cor.add_argument("--no-progress", action="store_true")
    cor.set_defaults(func=run_corrupt)

    dl = data_sub.add_parser("dialogues", help="MIND-style two-speaker conversations from "
                                               "WordNet, arithmetic and fortunes (no LLM)")
    dl.add_argument("--out", type=Path, required=True, help="output directory")
    dl.add_argument("--count", type=int, required=True, help="dialogues to make")
    dl.add_argument("--seed", type=int, default=0)
    dl.set_defaults(func=run_dialogues)

    sd = data_sub.add_parser(
        "synth-dialogues", help="speak chorus data dialogues turn by turn, two voices each",
        description="Each dialogue keeps its split and draws two different voices of that "
                    "split (test: voices never heard in training); one utterance per turn, "
                    "domain 'dialogue'; writes WAVs + cuts_{train,dev,test}.jsonl.gz.")
    sd.add_argument("--dialogues", type=Path, required=True, help="dialogues.jsonl")
    sd.add_argument("--out", type=Path, required=True)
    sd.add_argument("--seed", type=int, default=0, help="voices (the corpus's split of voices)")
    sd.add_argument("--jobs", type=int, default=None)
    sd.add_argument("--limit", type=int, default=None, help="first N dialogues")
    sd.add_argument("--engines", default=None, help="comma-separated subset of engines")
    sd.add_argument("--no-progress", action="store_true")
    sd.set_defaults(func=run_synth_dialogues)

    rf = data_sub.add_parser(
        "refine", help="score synthesized utterances (round-trip CER, LM, signal checks) and "
                       "keep the good ones (Nemotron-style filter rounds)",
        description="Each utterance of --pool is transcribed by --bundle (greedy), its text "
                    "scored by --lm, its audio checked for clipping, silence and speaking rate; "
                    "failures are removed, then --keep cuts the rest to a fraction of the pool "
                    "by CER. Writes the kept cuts and a report (JSON + markdown: what was "
                    "removed by engine, voice, domain, with examples).")
    rf.add_argument("--pool", type=Path, required=True, help="Lhotse cuts (candidates)")
    rf.add_argument("--out", type=Path, required=True, help="the kept cuts (.jsonl.gz)")
    rf.add_argument("--bundle", type=Path, default=None,
                    help="the scoring model (default: the shipped bundle); round 2: the model "
                         "trained on round 1's output")
    rf.add_argument("--lm", type=Path, default=None,
                    help="word ARPA LM for the text score (default: the bundle's, if any)")
    rf.add_argument("--max-cer", type=float, default=0.5)
    rf.add_argument("--max-clipping", type=float, default=0.001,
                    help="fraction of samples at full scale")
    rf.add_argument("--max-silence", type=float, default=0.7,
                    help="fraction of 10 ms frames 40 dB below the loudest")
    rf.add_argument("--max-rate-z", type=float, default=3.5,
                    help="robust z-score of log letters per voiced second, over the pool")
    rf.add_argument("--min-lm-logprob", type=float, default=None,
                    help="log10 per word (default: LM score reported, not filtered on)")
    rf.add_argument("--keep", type=float, default=None,
                    help="after the checks keep this fraction of the pool, lowest CER first "
                         "(equal-size comparisons)")
    rf.add_argument("--limit", type=int, default=None, help="score only the first N")
    rf.add_argument("--no-progress", action="store_true")
    rf.set_defaults(func=run_refine)


    tr = sub.add_parser("train", help="train a streaming CTC model and export a bundle")
    tr.add_argument("--config", type=Path, default=None, help="recipe YAML (training/recipes/)")
    tr.add_argument("overrides", nargs="*", help="section.field=value overrides")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=run_train)

    av = sub.add_parser("average", help="a bundle whose weights are the mean of several "
                                         "bundles' (checkpoint averaging / model soup)")
    av.add_argument("bundles", nargs="+", type=Path,
                    help="bundles of one model, features and tokens (e.g. runs continued from "
                         "one another); decoding, LM and rescorer come from the first")
    av.add_argument("--out", type=Path, required=True, help="the averaged bundle's directory")
    av.add_argument("--weights", default=None,
                    help="comma-separated, one weight per bundle, summing to 1 (default: "
                         "equal); e.g. 0.7,0.3 interpolates between a model and its "
                         "continuation (WiSE-FT)")
    av.set_defaults(func=run_average)

    wd = sub.add_parser("widen", help="a bundle whose recurrent CTC encoder is k times as wide, "
                                      "computing the same function (Net2WiderNet), to train on")
    wd.add_argument("--bundle", type=Path, required=True, help="a recurrent (GRU / LSTM) CTC bundle")
    wd.add_argument("--out", type=Path, required=True, help="the widened bundle's directory")
    wd.add_argument("--factor", type=int, default=2, help="integer width factor k >= 2 (default 2)")
    wd.add_argument("--noise", type=float, default=0.0,
                    help="Gaussian noise on the widened weights, relative to each tensor's std "
                         "(default 0: exactly the same function; dropout breaks the symmetry)")
    wd.add_argument("--seed", type=int, default=0)
    wd.set_defaults(func=run_widen)

    ev = sub.add_parser("eval", help="WER/CER of a bundle on a manifest (per engine, domain, voice)")
    ev.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: shipped)")
    ev.add_argument("--manifest", type=Path, required=True, help="Lhotse cuts (.jsonl.gz)")
    ev.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                    help="default: the bundle's decoding.decoder")
    ev.add_argument("--beam-size", type=int, default=None)
    ev.add_argument("--peer", action="append", default=[], choices=("pocketsphinx",),
                    help="also transcribe the same audio with an offline peer")
    ev.add_argument("--limit", type=int, default=None, help="first N utterances only")
    ev.add_argument("--lm", action="append", default=None,
                    help="ARPA word LM for the beam decoder instead of the bundle's ('none': no "
                         "LM); repeat with --lm-mix-weights to interpolate several")
    ev.add_argument("--lm-mix-weights", default=None,
                    help="comma-separated interpolation weights, one per --lm, sum 1")
    ev.add_argument("--lm-weight", type=float, default=None, help="LM weight (alpha)")
    ev.add_argument("--word-bonus", type=float, default=None, help="per-word bonus (beta)")
    ev.add_argument("--oov-penalty", type=float, default=None, help="per out-of-vocabulary word")
    ev.add_argument("--lexicon", action=argparse.BooleanOptionalAction, default=None,
                    help="beam + LM: only words of the LM's vocabulary (default: the bundle's)")
    ev.add_argument("--lm-lookahead", action=argparse.BooleanOptionalAction, default=None,
                    help="beam + n-gram: partial words pay the unigram mass of their "
                         "completions, not a lump at the space (default: the bundle's)")
    ev.add_argument("--ilm-weight", type=float, default=None,
                    help="RNN-T beam + LM: subtract the transducer's internal LM at this weight "
                         "(default: the bundle's)")
    ev.add_argument("--rescore-lm", type=Path, default=None,
                    help="beam: rescore each final's n-best with this neural LM (chorus lm train)")
    ev.add_argument("--rescore-weight", type=float, default=0.3,
                    help="weight of the neural LM's ln p in rescoring")
    ev.add_argument("--rescore-nbest", type=int, default=8, help="hypotheses rescored")
    ev.add_argument("--json", type=Path, default=None, help="write the full result here")
    ev.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    ev.add_argument("--int8", action="store_true",
                    help="run the model in dynamic int8 (GRU / LSTM / Linear), as `chorus serve "
                         "--int8` does")
    ev.add_argument("--voices", type=Path, default=None,
                    help="a synthetic corpus's voices.json: report WER for voices heard in "
                         "training vs unseen (default: the voices.json beside the manifest)")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=run_eval)

    se = sub.add_parser("select", help="choose which pool utterances to label next (active "
                                       "learning: EGL, confidence, random, length)")
    se.add_argument("--pool", type=Path, required=True, help="Lhotse cuts of the unlabelled pool")
    se.add_argument("--budget", type=int, required=True, help="utterances to select")
    se.add_argument("--method", choices=("egl", "confidence", "random", "length"), default="egl")
    se.add_argument("--bundle", type=Path, default=None,
                    help="the current model (CTC; default: the shipped bundle)")
    se.add_argument("--out", type=Path, required=True, help="the selected cuts (.jsonl.gz)")
    se.add_argument("--nbest", type=int, default=8, help="EGL: hypotheses of the expectation")
    se.add_argument("--length-norm", action="store_true", help="EGL per encoder frame")
    se.add_argument("--seed", type=int, default=0, help="random: the shuffle's seed")
    se.add_argument("--report", type=Path, default=None,
                    help="per-utterance scores and the EGL / confidence correlation (JSON; "
                         "default: OUT with .report.json)")
    se.add_argument("--no-progress", action="store_true")
    se.set_defaults(func=run_select)


def run_refine(args: argparse.Namespace) -> int:
    from lhotse import CutSet

    from models.bundle import BundleError, load
    from models.lm.arpa import ArpaError, ArpaLM, WordLM
    from training.eval.run import load_manifest
    from training.refine import RefineConfig, filter_pool, markdown, report, score_pool

    cfg = RefineConfig(args.max_cer, args.max_clipping, args.max_silence, args.max_rate_z,
                       args.min_lm_logprob, args.keep)
    try:
        cfg.validate()
        utts = load_manifest(args.pool, args.limit)
        bundle = load(args.bundle)
        lm: WordLM | None
        if args.lm is not None:
            lm = ArpaLM.load(args.lm)
        else:
            lm = bundle.lm.lm if bundle.lm is not None else None
        cands = score_pool(bundle, utts, lm, progress=not args.no_progress)
    except (BundleError, ArpaError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"chorus data refine: {exc}") from exc
    kept, removed = filter_pool(cands, cfg)
    rep = report(cands, kept, removed, cfg) | {"pool_manifest": str(args.pool),
                                              "bundle": str(bundle.path), "lm": lm is not None}
    keep_set = set(kept)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    CutSet.from_file(args.pool).filter(lambda c: c.id in keep_set).to_eager().to_file(args.out)
    stem = args.out.name.split(".")[0] + ".report"
    (args.out.parent / f"{stem}.json").write_text(json.dumps(rep, indent=1) + "\n")
    (args.out.parent / f"{stem}.md").write_text(markdown(rep))
    print(json.dumps({k: rep[k] for k in ("pool", "kept", "removed", "reasons", "mean_cer")}
                     | {"report": str(args.out.parent / f"{stem}.json")}))
    return 0


def run_dialogues(args: argparse.Namespace) -> int:
    from collections import Counter

    from training.data.text.dialogues import generate

    if args.count < 1:
        raise SystemExit(f"chorus data dialogues: --count must be >= 1, got {args.count}")
    args.out.mkdir(parents=True, exist_ok=True)
    splits: Counter[str] = Counter()
    styles: Counter[str] = Counter()
    texts: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    with open(args.out / "dialogues.jsonl", "w") as f:
        for d in generate(args.count, args.seed):
            f.write(json.dumps(d.to_dict()) + "\n")
            splits[d.split] += 1
            styles[d.style] += 1
            texts[d.split] += [t for _, t in d.turns]
    for split, lines in texts.items():  # LM text: one turn per line
        (args.out / f"text_{split}.txt").write_text("".join(t + "\n" for t in lines))
    print(json.dumps({"dialogues": args.count, "splits": dict(splits), "styles": dict(styles),
                      "turns": sum(len(v) for v in texts.values())}, indent=1))
    return 0


def run_corrupt(args: argparse.Namespace) -> int:
    from training.data.corrupt import corrupt_manifest

    if not args.manifest.is_file():
        raise SystemExit(f"--manifest {args.manifest}: file not found")
    print(json.dumps(corrupt_manifest(str(args.manifest), str(args.out), args.kind,
                                      snr_db=args.snr, seed=args.seed, limit=args.limit,
                                      name=args.name, progress=not args.no_progress), indent=1))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    try:
        from training.data.prepare import PrepareError, parse_splits, prepare
    except ImportError as exc:
        raise SystemExit(f"`chorus data prepare` needs the train extra ({exc.name} is missing): "
                         "pip install 'chorus-asr[train]'") from exc

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = prepare(args.layout, args.corpus, args.out, language=args.language,
                        kaldi_splits=parse_splits(args.split) or None)
    except PrepareError as exc:
        raise SystemExit(f"chorus data prepare: {exc}") from exc
    print(json.dumps(stats, indent=1))
    return 0


def run_synth_dialogues(args: argparse.Namespace) -> int:
    import os

    from training.data.synth.dialogues import DialogueSynthConfig, synthesize_dialogues

    if not args.dialogues.is_file():
        raise SystemExit(f"--dialogues {args.dialogues}: file not found")
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip()) if args.engines else None
    cfg = DialogueSynthConfig(args.dialogues, args.out, seed=args.seed,
                              jobs=args.jobs or os.cpu_count() or 1, limit=args.limit,
                              engines=engines)
    try:
        stats = synthesize_dialogues(cfg, progress=not args.no_progress)
    except ValueError as exc:
        raise SystemExit(f"chorus data synth-dialogues: {exc}") from exc
    print(json.dumps(stats, indent=1))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    import os

    try:
        from training.data.synth.corpus import SynthConfig, synthesize_corpus
    except ImportError as exc:
        raise SystemExit(f"`chorus data synth` needs the train extra ({exc.name} is missing): "
                         "pip install 'chorus-asr[train]'") from exc

    if args.hours <= 0:
        raise SystemExit("--hours must be positive")
    cfg = SynthConfig(out=args.out, hours=args.hours, seed=args.seed,
                      jobs=args.jobs or os.cpu_count() or 1,
                      min_voices_per_engine=args.min_voices_per_engine, id_prefix=args.id_prefix,
                      voice_seed=args.voice_seed)
    if args.engines:
        engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
        cfg = dataclasses.replace(cfg, engines=engines)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stats = synthesize_corpus(cfg, progress=not args.no_progress)
    print(json.dumps({k: stats[k] for k in ("hours", "utterances", "distinct_voices",
                                            "voices_per_engine", "failures",
                                            "audio_seconds_per_wall_second")}, indent=1))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.train import train

    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"chorus train: bad config: {exc}") from exc
    print(f"bundle written to {train(cfg, progress=not args.no_progress)}")
    return 0


def run_average(args: argparse.Namespace) -> int:
    from models.bundle import BundleError
    from training.average import average_bundles
    from training.lm.cli import _floats

    weights = None if args.weights is None else _floats(args.weights, "chorus average: --weights")
    try:
        out = average_bundles(args.bundles, args.out, weights)
    except (BundleError, ValueError, OSError) as exc:
        raise SystemExit(f"chorus average: {exc}") from exc
    print(json.dumps({"bundle": str(out), "averaged": [str(b) for b in args.bundles],
                      "weights": weights}))
    return 0


def run_widen(args: argparse.Namespace) -> int:
    from models.bundle import BundleError
    from training.widen import widen_bundle

    try:
        out = widen_bundle(args.bundle, args.out, args.factor, args.noise, args.seed)
    except (BundleError, ValueError, OSError) as exc:
        raise SystemExit(f"chorus widen: {str(exc).removeprefix('widen: ')}") from exc
    print(json.dumps({"bundle": str(out), "widened_from": str(args.bundle),
                      "factor": args.factor}))
    return 0


def run_select(args: argparse.Namespace) -> int:
    from lhotse import CutSet

    from models.bundle import BundleError, load
    from training.eval.run import load_manifest
    from training.select import choose, score_pool, spearman

    if args.nbest < 1:
        raise SystemExit(f"chorus select: --nbest must be >= 1, got {args.nbest}")
    try:
        utts = load_manifest(args.pool)
        bundle = load(args.bundle) if args.method in ("egl", "confidence") else None
        scores = score_pool(bundle, utts, method=args.method, nbest=args.nbest,
                            length_norm=args.length_norm, progress=not args.no_progress)
        ids = choose(args.method, [u.id for u in utts], scores, [u.duration for u in utts],
                     min(args.budget, len(utts)), seed=args.seed)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"chorus select: {exc}") from exc
    chosen = set(ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    CutSet.from_file(args.pool).filter(lambda c: c.id in chosen).to_eager().to_file(args.out)
    report = {"pool": str(args.pool), "method": args.method, "budget": args.budget,
              "selected": ids, "pool_utterances": len(utts),
              "selected_hours": round(sum(u.duration for u in utts if u.id in chosen) / 3600, 4)}
    if args.method in ("egl", "confidence"):
        report["egl_confidence_spearman"] = spearman([s.egl for s in scores],
                                                     [s.confidence for s in scores])
        report["scores"] = {u.id: {"egl": s.egl, "confidence": s.confidence, "frames": s.frames}
                            for u, s in zip(utts, scores, strict=True)}
    path = args.report or args.out.with_name(args.out.name.split(".")[0] + ".report.json")
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("method", "pool_utterances", "selected_hours")}
                     | {"selected": len(ids), "report": str(path),
                        "egl_confidence_spearman": report.get("egl_confidence_spearman")}))
    return 0


def _rescorer(args: argparse.Namespace) -> Any:
    """The n-best rescorer --rescore-lm asks for (None without it)."""
    if args.rescore_lm is None:
        return None
    from models.decoding.rescore import Rescorer
    from models.lm.neural import load

    if args.rescore_nbest < 1:
        raise ValueError(f"--rescore-nbest must be >= 1, got {args.rescore_nbest}")
    return Rescorer(load(args.rescore_lm), args.rescore_weight, args.rescore_nbest)


def run_eval(args: argparse.Namespace) -> int:
    from models.bundle import BundleError
    from training.eval.run import evaluate, report_markdown

    try:
        result = evaluate(args.bundle, args.manifest, decoder=args.decoder,
                          beam_size=args.beam_size, peers=tuple(args.peer), limit=args.limit,
                          lm=args.lm, lm_mix_weights=[float(x) for x in args.lm_mix_weights.split(",")]
                          if args.lm_mix_weights else None,
                          lm_weight=args.lm_weight, word_bonus=args.word_bonus,
                          oov_penalty=args.oov_penalty, lexicon=args.lexicon,
                          lm_lookahead=args.lm_lookahead, ilm_weight=args.ilm_weight,
                          rescore=_rescorer(args), progress=not args.no_progress,
                          voices=args.voices, int8=args.int8)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"chorus eval: {exc}") from exc
    table = report_markdown(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    return 0
