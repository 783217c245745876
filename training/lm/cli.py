"""`chorus lm build | tune | ppl | train | attach`: word n-gram LMs for the beam decoder, and
the neural LMs (LSTM, TCNLM: `chorus lm train --type lstm|tcnlm --out DIR`).

    chorus lm build --out runs/lm/words3.arpa.gz            # train-split text of the corpus
    chorus lm tune --bundle B --manifest dev.jsonl.gz --lm runs/lm/words3.arpa.gz
    chorus lm attach --bundle B --lm runs/lm/words3.arpa.gz --weight 0.5 --bonus 1.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    lm = sub.add_parser("lm", help="word n-gram language models (build, tune, attach to a bundle)")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True)

    b = lm_sub.add_parser("build", help="estimate a Kneser-Ney n-gram LM and write ARPA",
                          description="Text: the train split of the synthetic corpus's text "
                                      "pool (default) and/or --text files, one sentence per line.")
    b.add_argument("--out", type=Path, required=True, help="ARPA file (.arpa or .arpa.gz)")
    b.add_argument("--order", type=int, default=3)
    b.add_argument("--text", type=Path, action="append", default=[],
                   help="extra normalised text, one sentence per line (repeatable)")
    b.add_argument("--counts", default=None,
                   help="instead of text: a published n-gram count table ('w1 .. wn count' "
                        "lines), or 'symspell-bigrams' (symspellpy's English bigrams); the "
                        "order is the table's, build it as its own LM and mix it in")
    b.add_argument("--no-corpus-text", action="store_true",
                   help="only --text (no synthetic-corpus text, no word list)")
    b.add_argument("--wordnet", action="store_true",
                   help="add WordNet's glosses and usage examples (Debian wordnet-base; train "
                        "split only, by the corpus's text hash)")
    b.add_argument("--template-sentences", type=int, default=20000,
                   help="sentences drawn per template domain")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=run_build)

    t = lm_sub.add_parser("tune", help="grid-search LM weight and word bonus on a dev manifest")
    t.add_argument("--bundle", type=Path, default=None)
    t.add_argument("--manifest", type=Path, required=True, help="dev cuts (.jsonl.gz)")
    t.add_argument("--lm", type=Path, action="append", required=True,
                   help="ARPA LM; repeat with --mix-weights to interpolate several")
    t.add_argument("--mix-weights", default="", help="comma-separated, one per --lm, sum 1")
    t.add_argument("--weights", default="0.3,0.5,0.8,1.2", help="comma-separated alphas")
    t.add_argument("--bonuses", default="0,1,2,3", help="comma-separated betas")
    t.add_argument("--oov-penalties", default="10", help="comma-separated OOV penalties")
    t.add_argument("--beam-size", type=int, default=8)
    t.add_argument("--lookahead", action="store_true",
                   help="partial words pay the unigram mass of their completions (LmConfig)")
    t.add_argument("--ilm-weights", default="0",
                   help="comma-separated internal-LM subtraction weights (RNN-T bundles)")
    t.add_argument("--limit", type=int, default=300)
    t.add_argument("--json", type=Path, default=None)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run_tune)

    pp = lm_sub.add_parser("ppl", help="perplexity of an LM (or a mixture) on a manifest's "
                                       "transcripts, overall and per domain")
    pp.add_argument("--lm", type=Path, action="append", required=True,
                    help="ARPA LM (repeat with --mix-weights), or one neural LM directory")
    pp.add_argument("--mix-weights", default="", help="comma-separated, one per --lm, sum 1")
    pp.add_argument("--manifest", type=Path, action="append", required=True)
    pp.add_argument("--json", type=Path, default=None)
    pp.set_defaults(func=run_ppl)

    tr = lm_sub.add_parser(
        "train", help="train a neural LM: word LSTM or TCNLM (topic-compositional), or a "
                 "character LSTM (--units char, for cold fusion)",
        description="Text: the corpus's train-split text pool (each sentence its own document) "
                    "and --dialogues (each train-split dialogue one document, so TCNLM's topic "
                    "model sees the earlier turns). Writes DIR/lm.json + lm.safetensors + "
                    "summary.json (perplexity on --dev) + topics.json (tcnlm).")
    tr.add_argument("--type", choices=("lstm", "tcnlm"), required=True)
    tr.add_argument("--units", choices=("word", "char"), default="word",
                    help="char: a character LSTM (the LM of a cold-fused transducer)")
    tr.add_argument("--out", type=Path, required=True, help="output directory")
    tr.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    tr.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: budget)")
    tr.add_argument("--dialogues", type=Path, action="append", default=[],
                    help="dialogues.jsonl of chorus data dialogues (its train split)")
    tr.add_argument("--text", type=Path, action="append", default=[],
                    help="extra normalised text, one sentence per line (repeatable)")
    tr.add_argument("--no-corpus-text", action="store_true")
    tr.add_argument("--template-sentences", type=int, default=20000)
    tr.add_argument("--dev", type=Path, action="append", default=[],
                    help="manifest(s) whose transcripts measure dev perplexity; or a "
                         "dialogues.jsonl, whose dev split is scored with its contexts")
    tr.add_argument("--embed", type=int, default=256)
    tr.add_argument("--hidden", type=int, default=256)
    tr.add_argument("--topics", type=int, default=16, help="tcnlm: K")
    tr.add_argument("--factor", type=int, default=128, help="tcnlm: rank F of W = Wa diag(Wb t) Wc")
    tr.add_argument("--bow-size", type=int, default=2000, help="tcnlm: topic-model vocabulary")
    tr.add_argument("--kl-anneal-steps", type=int, default=0,
                    help="tcnlm: ramp the topic model's KL weight 0 -> 1 over N steps")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=run_train)

    ar = lm_sub.add_parser(
        "attach-rescorer", help="copy a neural LM into a bundle to rescore its beam finals",
        description="Each final of the beam decoder (server, chorus transcribe, chorus eval) "
                    "is chosen from its n-best after adding weight x ln p of this LM.")
    ar.add_argument("--bundle", type=Path, required=True)
    ar.add_argument("--lm", type=Path, required=True, help="a chorus lm train directory")
    ar.add_argument("--weight", type=float, required=True)
    ar.add_argument("--nbest", type=int, default=8)
    ar.set_defaults(func=run_attach_rescorer)

    a = lm_sub.add_parser("attach", help="copy an LM (ARPA or neural) into a bundle and make "
                                         "beam fuse it")
    a.add_argument("--bundle", type=Path, required=True)
    a.add_argument("--lm", type=Path, action="append", required=True,
                   help="ARPA LM or neural LM directory; repeat with --mix-weights to "
                        "interpolate several")
    a.add_argument("--mix-weights", default="", help="comma-separated, one per --lm, sum 1")
    a.add_argument("--weight", type=float, required=True)
    a.add_argument("--bonus", type=float, required=True)
    a.add_argument("--oov-penalty", type=float, default=10.0)
    a.add_argument("--lexicon", action="store_true",
                   help="decode only words of the LM's vocabulary (a hard constraint)")
    a.add_argument("--decoder", choices=("greedy", "beam"), default=None,
                   help="also set the bundle's default decoder")
    a.add_argument("--beam-size", type=int, default=None,
                   help="also set the bundle's default beam size")
    a.add_argument("--lookahead", action="store_true",
                   help="partial words pay alpha x ln of their completions' unigram mass "
                        "(an n-gram LM; chorus lm tune --lookahead)")
    a.add_argument("--ilm-weight", type=float, default=0.0,
                   help="RNN-T beam: subtract this weight x the internal LM's log p")
    a.set_defaults(func=run_attach)


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(f"{name}: expected comma-separated numbers, got {text!r}") from exc


def run_build(args: argparse.Namespace) -> int:
    import time

    from models.lm.arpa import write_arpa
    from training.lm.ngram import estimate
    from training.lm.text import LmTextConfig, train_sentences, vocabulary

    t0 = time.monotonic()
    if args.counts:
        from training.lm.counts import read_counts, resolve
        from training.lm.ngram import estimate_counts

        counts, order = read_counts(resolve(args.counts))
        print(f"chorus lm build: {len(counts)} {order}-gram counts from {args.counts}", flush=True)
        ngrams = estimate_counts(counts, order)
        write_arpa(args.out, ngrams)
        print(f"chorus lm build: wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) "
              f"in {time.monotonic() - t0:.0f} s")
        return 0
    sentences: list[list[str]] = []
    if not args.no_corpus_text:
        cfg = LmTextConfig(template_sentences=args.template_sentences, seed=args.seed,
                           wordnet=args.wordnet)
        sentences += [s.split() for s in train_sentences(cfg)]
    for path in args.text:
        if not path.is_file():
            raise SystemExit(f"--text {path}: file not found")
        sentences += [line.split() for line in path.read_text(encoding="utf-8").splitlines()
                      if line.strip()]
    if not sentences:
        raise SystemExit("no text: give --text or drop --no-corpus-text")
    words = [] if args.no_corpus_text else vocabulary()
    print(f"chorus lm build: {len(sentences)} sentences, {sum(map(len, sentences))} words, "
          f"+{len(words)} word-list entries; estimating order {args.order}", flush=True)
    ngrams = estimate(sentences, args.order, vocabulary=words)
    write_arpa(args.out, ngrams)
    sizes = ", ".join(f"{n + 1}-grams {len(t)}" for n, t in enumerate(ngrams))
    print(f"chorus lm build: wrote {args.out} ({sizes}; {args.out.stat().st_size / 1e6:.1f} MB) "
          f"in {time.monotonic() - t0:.0f} s")
    return 0


def _dev_examples(paths: list[Path]) -> list[Any]:
    """Dev examples (context, sentence): a manifest's transcripts without context, or a
    dialogues.jsonl's dev split with each turn's preceding turns."""
    import gzip

    from training.lm.neural import dialogue_documents, examples

    out = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--dev {path}: file not found")
        if path.name.endswith(".jsonl"):
            out += examples(dialogue_documents(path, "dev"))
        else:
            with gzip.open(path, "rt") as f:
                out += [([], json.loads(line)["supervisions"][0]["text"].split()) for line in f]
    return out


def run_train(args: argparse.Namespace) -> int:
    from training.lm.neural import NeuralTrainConfig, dialogue_documents, examples, topic_report, train
    from training.lm.text import LmTextConfig, train_sentences

    docs: list[list[list[str]]] = []
    if not args.no_corpus_text:
        docs += [[s.split()] for s in train_sentences(
            LmTextConfig(template_sentences=args.template_sentences, seed=args.seed))]
    for path in args.text:
        if not path.is_file():
            raise SystemExit(f"--text {path}: file not found")
        docs += [[line.split()] for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    for path in args.dialogues:
        if not path.is_file():
            raise SystemExit(f"--dialogues {path}: file not found")
        docs += dialogue_documents(path, "train")
    train_set = examples(docs)
    if not train_set:
        raise SystemExit("chorus lm train: no text (give --text / --dialogues or drop "
                         "--no-corpus-text)")
    if args.units == "char" and args.type != "lstm":
        raise SystemExit("chorus lm train: --units char trains an lstm (give --type lstm)")
    cfg = NeuralTrainConfig(type=args.type, units=args.units, embed=args.embed, hidden=args.hidden,
                            topics=args.topics, factor=args.factor, bow_size=args.bow_size,
                            minutes=args.minutes, max_steps=args.max_steps, seed=args.seed,
                            kl_anneal_steps=args.kl_anneal_steps)
    print(f"chorus lm train: {len(train_set)} sentences in {len(docs)} documents", flush=True)
    summary = train(cfg, train_set, _dev_examples(args.dev) or None, args.out,
                    progress=not args.no_progress)
    if args.type == "tcnlm":
        from models.lm.neural import load

        topics = topic_report(load(args.out), seed=args.seed)
        (args.out / "topics.json").write_text(json.dumps(topics, indent=1) + "\n")
        summary["topics"] = topics[:3]
    print(json.dumps(summary, indent=1))
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from models.bundle import load
    from models.decoding import LmConfig, LmFusion
    from models.lm.mixture import load_lms
    from training.eval.metrics import error_rates
    from training.eval.run import decode_all, forward_all, load_manifest

    bundle = load(args.bundle)
    utts = load_manifest(args.manifest, args.limit)
    refs = [u.ref for u in utts]
    lm = load_lms(args.lm, _floats(args.mix_weights, "--mix-weights"))
    log_probs, _ = forward_all(bundle, utts, progress=not args.no_progress)
    rows = []

    def score(name: str, fusion: LmFusion | None, decoder: str) -> None:
        hyps, cpu = decode_all(bundle, log_probs, decoder=decoder, beam_size=args.beam_size,
                               lm=fusion)
        r = error_rates(refs, hyps)
        row = {"decoder": name, "weight": fusion.cfg.weight if fusion else None,
               "word_bonus": fusion.cfg.word_bonus if fusion else None,
               "oov_penalty": fusion.cfg.oov_penalty if fusion else None,
               "lookahead": fusion.cfg.lookahead if fusion else None,
               "ilm_weight": fusion.cfg.ilm_weight if fusion else None,
               "wer": round(r.wer, 4), "cer": round(r.cer, 4), "decode_cpu_s": round(cpu, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    score("greedy", None, "greedy")
    score("beam", None, "beam")
    for w in _floats(args.weights, "--weights"):
        for b in _floats(args.bonuses, "--bonuses"):
            for o in _floats(args.oov_penalties, "--oov-penalties"):
                for i in _floats(args.ilm_weights, "--ilm-weights"):
                    score("beam+lm", LmFusion(lm, LmConfig(w, b, o, lookahead=args.lookahead,
                                                           ilm_weight=i)), "beam")
    best = min((r for r in rows if r["decoder"] == "beam+lm"), key=lambda r: (r["wer"], r["cer"]))
    print(f"chorus lm tune: best weight {best['weight']} bonus {best['word_bonus']} OOV penalty "
          f"{best['oov_penalty']}: WER "
          f"{best['wer']:.3f} (greedy {rows[0]['wer']:.3f}, beam {rows[1]['wer']:.3f}) on "
          f"{len(utts)} utterances of {args.manifest}")
    if args.json:
        args.json.write_text(json.dumps({"manifest": str(args.manifest), "utterances": len(utts),
                                         "lm": [str(p) for p in args.lm],
                                         "mix_weights": args.mix_weights, "beam_size": args.beam_size,
                                         "rows": rows, "best": best}, indent=1) + "\n")
    return 0


def run_ppl(args: argparse.Namespace) -> int:
    import gzip
    import math
    from collections import defaultdict

    from models.lm.mixture import load_lms

    if len(args.lm) == 1 and args.lm[0].is_dir():  # a neural LM (chorus lm train)
        lm: Any = _NeuralSentences(args.lm[0])
    else:
        lm = load_lms(args.lm, _floats(args.mix_weights, "--mix-weights"))
    result: dict[str, dict[str, dict[str, float]]] = {}
    for manifest in args.manifest:
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])  # ln p, tokens, OOVs
        with gzip.open(manifest, "rt") as f:
            for line in f:
                sup = json.loads(line)["supervisions"][0]
                words = sup["text"].split()
                lp = lm.sentence_logprob(words)
                oov = sum(w not in lm.vocab for w in words)
                for key in ("all", (sup.get("custom") or {}).get("domain", "?")):
                    s = sums[key]
                    s[0] += lp
                    s[1] += len(words) + 1  # + </s>
                    s[2] += oov
        result[str(manifest)] = {k: {"perplexity": round(math.exp(-v[0] / v[1]), 1),
                                     "tokens": int(v[1]), "oov_rate": round(v[2] / v[1], 4)}
                                 for k, v in sorted(sums.items())}
        for k, v in result[str(manifest)].items():
            print(f"{manifest} {k}: perplexity {v['perplexity']} ({v['tokens']} tokens, "
                  f"OOV {100 * v['oov_rate']:.2f} %)")
    if args.json:
        args.json.write_text(json.dumps({"lm": [str(p) for p in args.lm],
                                         "mix_weights": args.mix_weights, **result}, indent=1))
    return 0


class _NeuralSentences:
    """A neural LM directory seen as `chorus lm ppl` sees an n-gram: sentence ln p and vocab
    (sentences scored without preceding context, as the manifests' single utterances are)."""

    def __init__(self, path: Path):
        from models.lm.neural import NeuralLmError, load

        try:
            self.model = load(path)
        except NeuralLmError as exc:
            raise SystemExit(f"--lm {path}: {exc}") from exc
        self.vocab = frozenset(self.model.cfg.vocab[3:])

    def sentence_logprob(self, words: list[str]) -> float:
        return self.model.sentence_logprobs([list(words)])[0]


def run_attach_rescorer(args: argparse.Namespace) -> int:
    import shutil

    from models.bundle import BUNDLE_JSON, BundleError, load
    from models.lm.neural import NeuralLmError
    from models.lm.neural import load as load_neural

    meta_path = args.bundle / BUNDLE_JSON
    if not meta_path.is_file():
        raise SystemExit(f"--bundle {args.bundle}: no {BUNDLE_JSON}")
    try:
        load_neural(args.lm)
    except NeuralLmError as exc:
        raise SystemExit(f"--lm {args.lm}: {exc}") from exc
    if args.nbest < 1:
        raise SystemExit(f"--nbest must be >= 1, got {args.nbest}")
    rel = Path("lm") / f"rescore-{args.lm.name}"
    dest = args.bundle / rel
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("lm.json", "lm.safetensors"):
        shutil.copyfile(args.lm / name, dest / name)
    meta = json.loads(meta_path.read_text())
    meta.setdefault("decoding", {}).update({"rescore_lm": rel.as_posix(),
                                            "rescore_weight": args.weight,
                                            "rescore_nbest": args.nbest})
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    try:
        load(args.bundle)
    except BundleError as exc:
        raise SystemExit(f"chorus lm attach-rescorer: the bundle no longer loads: {exc}") from exc
    print(f"chorus lm attach-rescorer: {dest} (weight {args.weight}, n-best {args.nbest})")
    return 0


def run_attach(args: argparse.Namespace) -> int:
    import shutil

    from models.bundle import BUNDLE_JSON, BundleError, load
    from models.decoding.lm_fusion import LmConfig

    meta_path = args.bundle / BUNDLE_JSON
    if not meta_path.is_file():
        raise SystemExit(f"--bundle {args.bundle}: no {BUNDLE_JSON}")
    for path in args.lm:
        if not path.exists():
            raise SystemExit(f"--lm {path}: not found (an ARPA file or a neural LM directory)")
    weights = _floats(args.mix_weights, "--mix-weights")
    if args.beam_size is not None and args.beam_size < 1:
        raise SystemExit(f"--beam-size: expected >= 1, got {args.beam_size}")
    try:  # refused before anything is written: a bundle that no longer loads helps no one
        LmConfig(args.weight, args.bonus, args.oov_penalty, args.lexicon, args.lookahead,
                 args.ilm_weight)
    except ValueError as exc:
        raise SystemExit(f"--weight / --oov-penalty / --ilm-weight: {exc}") from exc
    if len(args.lm) > 1 and len(weights) != len(args.lm):
        raise SystemExit(f"--mix-weights: one per --lm ({len(args.lm)}), got {weights}")
    (args.bundle / "lm").mkdir(exist_ok=True)
    rels = [Path("lm") / p.name for p in args.lm]
    for src, rel in zip(args.lm, rels, strict=True):
        if src.is_dir():  # a neural LM (chorus lm train): its config and weights
            (args.bundle / rel).mkdir(parents=True, exist_ok=True)
            for name in ("lm.json", "lm.safetensors"):
                shutil.copyfile(src / name, args.bundle / rel / name)
        else:
            shutil.copyfile(src, args.bundle / rel)
    meta = json.loads(meta_path.read_text())
    dec = meta.setdefault("decoding", {})
    dec.update({"lm": rels[0].as_posix(), "lm_mix": [r.as_posix() for r in rels[1:]],
                "lm_mix_weights": weights if len(rels) > 1 else [],
                "lm_weight": args.weight, "word_bonus": args.bonus,
                "oov_penalty": args.oov_penalty, "lexicon": args.lexicon,
                "lm_lookahead": args.lookahead, "ilm_weight": args.ilm_weight})
    if args.decoder:
        dec["decoder"] = args.decoder
    if args.beam_size is not None:
        dec["beam_size"] = args.beam_size
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    try:
        load(args.bundle)
    except BundleError as exc:
        raise SystemExit(f"chorus lm attach: the bundle no longer loads: {exc}") from exc
    print(f"chorus lm attach: {', '.join(str(args.bundle / r) for r in rels)} (weight "
          f"{args.weight}, bonus {args.bonus}{f', mixed {weights}' if len(rels) > 1 else ''})")
    return 0
