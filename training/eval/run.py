"""`chorus eval`: transcribe a manifest with a bundle (and optionally a peer), score, report.

Our model runs the offline batched `forward` (identical outputs to chunked streaming, which a
test checks transcript by transcript) and then the chosen streaming decoder per utterance. A
peer runs in a second process at the same time on the same audio. Compute cost is reported as
CPU seconds per audio second (process CPU time, robust to the two sharing the machine).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.eval.metrics import Rates, breakdown, error_rates, markdown_table

GROUPS = ("engine", "domain", "voice", "heard")


@dataclass(frozen=True)
class Utterance:
    id: str
    ref: str
    engine: str
    domain: str
    voice: str
    duration: float
    cut: Any = field(repr=False, compare=False)
    heard: str = "?"  # "heard": the voice is one the corpus trained on; "unseen"; "?" unknown

    def audio(self) -> np.ndarray:
        return self.cut.load_audio()[0].astype(np.float32)


def training_voices(manifest: Path, voices: str | Path | None = None) -> frozenset[str] | None:
    """The voice ids a synthetic corpus trained on: the "train" list of its voices.json (given,
    or found beside the manifest); None when there is none (a real or corrupted corpus)."""
    path = Path(voices) if voices is not None else manifest.parent / "voices.json"
    if not path.is_file():
        if voices is not None:
            raise FileNotFoundError(f"voices file not found: {path}")
        return None
    try:
        train = json.loads(path.read_text())["train"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: expected a corpus's voices.json with a \"train\" list of "
                         f"voice ids ({exc})") from exc
    return frozenset(train)


def load_manifest(path: str | Path, limit: int | None = None,
                  voices: str | Path | None = None) -> list[Utterance]:
    """`voices`: a corpus's voices.json, to label each utterance's voice heard in training or
    unseen (default: the voices.json beside the manifest, if any)."""
    from lhotse import CutSet

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    heard = training_voices(p, voices)
    out = []
    for cut in CutSet.from_file(p):
        if cut.sampling_rate != 16_000:
            raise ValueError(f"{p}: cut {cut.id} is {cut.sampling_rate} Hz; eval expects 16 kHz")
        sup = cut.supervisions[0]
        custom = sup.custom or {}
        voice = sup.speaker or "?"
        out.append(Utterance(cut.id, sup.text, custom.get("engine", "?"),
                             custom.get("domain", "?"), voice, cut.duration, cut,
                             "?" if heard is None else "heard" if voice in heard else "unseen"))
        if limit and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{p}: no utterances")
    return out


@torch.no_grad()
def forward_all(bundle: Any, utts: list[Utterance], *, batch_seconds: float = 120.0,
                progress: bool = True, desc: str = "chorus", encoder_only: bool = False
                ) -> tuple[list[torch.Tensor], float]:
    """Log-probs (T'_i, V) per utterance in `utts` order and CPU seconds (features + model);
    with `encoder_only`, the encoder's embeddings (T'_i, D) instead."""
    from tqdm import tqdm

    from models.features import Fbank

    fbank = Fbank(bundle.features)
    model = bundle.model
    pad = model.encoder.pad_frame  # (F,) the normaliser's zero
    order = sorted(range(len(utts)), key=lambda i: utts[i].duration)
    out: list[torch.Tensor] = [torch.empty(0)] * len(utts)
    cpu = 0.0
    bar = tqdm(total=round(sum(u.duration for u in utts)), unit="audio-s", disable=not progress,
               desc=desc)
    i = 0
    while i < len(order):
        batch = [order[i]]
        while (i + len(batch) < len(order)
               and utts[order[i + len(batch)]].duration * (len(batch) + 1) <= batch_seconds):
            batch.append(order[i + len(batch)])
        i += len(batch)
        waves = [utts[j].audio() for j in batch]
        t0 = time.process_time()
        feats = [fbank(torch.from_numpy(w)) for w in waves]
        lengths = torch.tensor([f.shape[0] for f in feats])
        x = pad.expand(len(feats), int(lengths.max()), -1).clone()  # (B, T, F)
        for b, f in enumerate(feats):
            x[b, : f.shape[0]] = f
        log_probs, out_len = (model.encoder if encoder_only else model)(x, lengths)  # (B, T', V)
        for b, j in enumerate(batch):
            out[j] = log_probs[b, : int(out_len[b])].clone()
        cpu += time.process_time() - t0
        bar.update(round(sum(utts[j].duration for j in batch)))
    bar.close()
    return out, cpu


def decode_all(bundle: Any, log_probs: list[torch.Tensor], *, decoder: str, beam_size: int,
               lm: Any = None, rescore: Any = None) -> tuple[list[str], float]:
    """Final transcripts of each utterance's log-probs and the CPU seconds decoding took;
    `rescore` (models.decoding.rescore.Rescorer, beam only): the final is the rescored n-best's
    best."""
    from models.decoding import bundle_decoder

    if rescore is not None and decoder != "beam":
        raise ValueError("n-best rescoring needs the beam decoder (--decoder beam)")
    t0 = time.process_time()
    hyps = []
    for lp in log_probs:
        dec = bundle_decoder(bundle, decoder, beam_size=beam_size, lm=lm)
        dec.update(lp)
        hyps.append((rescore.choose(dec) if rescore is not None else dec.finalize()).text)
    return hyps, time.process_time() - t0


def transcribe_ours(bundle: Any, utts: list[Utterance], *, decoder: str, beam_size: int,
                    lm: Any = None, rescore: Any = None,
                    progress: bool = True) -> tuple[list[str], float]:
    """Texts in `utts` order and CPU seconds spent (features + model + decoding)."""
    log_probs, cpu = forward_all(bundle, utts, progress=progress, desc=f"chorus ({decoder})")
    hyps, cpu_dec = decode_all(bundle, log_probs, decoder=decoder, beam_size=beam_size, lm=lm,
                               rescore=rescore)
    return hyps, cpu + cpu_dec


def _peer_worker(name: str, paths: list[str]) -> tuple[list[str], float]:
    import os

    import soundfile as sf

    from training.eval.peers import make_peer

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    peer = make_peer(name)
    t0 = time.process_time()
    out = []
    for p in paths:
        audio, rate = sf.read(p, dtype="float32", always_2d=True)
        if rate != peer.sample_rate:
            raise ValueError(f"{p}: {rate} Hz, the {name} peer expects {peer.sample_rate}")
        out.append(peer.transcribe(audio[:, 0]))
    return out, time.process_time() - t0


def _source_path(u: Utterance) -> str:
    return str(u.cut.recording.sources[0].source)


def evaluate(bundle_path: str | Path | None, manifest: str | Path, *, decoder: str | None = None,
             beam_size: int | None = None, peers: tuple[str, ...] = (), limit: int | None = None,
             lm: list[str] | None = None, lm_mix_weights: list[float] | None = None,
             lm_weight: float | None = None,
             word_bonus: float | None = None, oov_penalty: float | None = None,
             lexicon: bool | None = None, lm_lookahead: bool | None = None,
             ilm_weight: float | None = None,
             rescore: Any = None,
             progress: bool = True, voices: str | Path | None = None,
             int8: bool = False) -> dict[str, Any]:
    """`lm`: ARPA files to fuse instead of the bundle's (several: interpolated with
    `lm_mix_weights`), or ["none"] for no LM; `rescore`: a Rescorer for the beam's n-best;
    `voices`: the voices.json that says which voices training heard (per_heard); `int8`: the
    model's GRU / LSTM / Linear layers in dynamic int8, as `chorus serve --int8` runs them."""
    import dataclasses

    from models.bundle import load

    bundle = load(bundle_path)
    if int8:
        from models.quantize import quantize_int8

        bundle = dataclasses.replace(bundle, model=quantize_int8(bundle.model))  # type: ignore[arg-type]
    decoder = decoder or bundle.decoding.decoder
    beam_size = beam_size or bundle.decoding.beam_size
    fusion = lm_override(bundle, lm, lm_weight, word_bonus, oov_penalty, lexicon, lm_mix_weights,
                         lm_lookahead, ilm_weight)
    utts = load_manifest(manifest, limit, voices)
    audio_s = sum(u.duration for u in utts)
    texts: dict[str, list[str]] = {}
    cpu: dict[str, float] = {}
    start = time.monotonic()
    with cf.ProcessPoolExecutor(max_workers=max(1, len(peers))) as pool:
        futures = {p: pool.submit(_peer_worker, p, [_source_path(u) for u in utts]) for p in peers}
        texts["chorus"], cpu["chorus"] = transcribe_ours(bundle, utts, decoder=decoder,
                                                         beam_size=beam_size, lm=fusion,
                                                         rescore=rescore, progress=progress)
        for p, fut in futures.items():
            texts[p], cpu[p] = fut.result()
    refs = [u.ref for u in utts]
    systems: dict[str, Any] = {}
    for name, hyps in texts.items():
        systems[name] = {
            "overall": error_rates(refs, hyps).to_dict(),
            "cpu_seconds_per_audio_second": round(cpu[name] / audio_s, 4),
            **{f"per_{g}": {k: r.to_dict() for k, r in
                            breakdown(refs, hyps, [getattr(u, g) for u in utts]).items()}
               for g in GROUPS},
        }
    return {
        "bundle": str(bundle.path), "manifest": str(manifest), "decoder": decoder, "int8": int8,
        "beam_size": beam_size if decoder == "beam" else None,
        "lm": ({"order": fusion.lm.order, "weight": fusion.cfg.weight,
                "word_bonus": fusion.cfg.word_bonus, "oov_penalty": fusion.cfg.oov_penalty,
                "lexicon": fusion.cfg.lexicon, "lookahead": fusion.cfg.lookahead,
                "ilm_weight": fusion.cfg.ilm_weight,
                "source": lm or [bundle.decoding.lm, *bundle.decoding.lm_mix],
                "mix_weights": lm_mix_weights or list(bundle.decoding.lm_mix_weights) or None}
               if fusion is not None and decoder == "beam" else None),
        "rescore": ({"lm": str(getattr(rescore.lm, "path", "")), "weight": rescore.weight,
                     "nbest": rescore.nbest, "type": rescore.lm.cfg.type}
                    if rescore is not None else None),
        "utterances": len(utts), "audio_hours": round(audio_s / 3600, 4),
        "wall_seconds": round(time.monotonic() - start, 1), "systems": systems,
        "hypotheses": [{"id": u.id, "engine": u.engine, "domain": u.domain, "voice": u.voice,
                        "heard": u.heard, "ref": u.ref, **{n: texts[n][i] for n in texts}}
                       for i, u in enumerate(utts)],
    }


def lm_override(bundle: Any, lm: list[str] | str | None, weight: float | None,
                bonus: float | None, oov: float | None = None, lexicon: bool | None = None,
                mix_weights: list[float] | None = None, lookahead: bool | None = None,
                ilm_weight: float | None = None) -> Any:
    """The LmFusion to decode with: the bundle's, other ARPA files' (mixed), or none."""
    from models.decoding import LmConfig, LmFusion
    from models.lm.mixture import load_lms

    paths = [lm] if isinstance(lm, str) else lm
    if paths == ["none"]:
        return None
    base = bundle.lm
    if not paths and base is None:
        return None
    model = load_lms(paths, mix_weights) if paths else base.lm
    cfg = base.cfg if base is not None else LmConfig()
    return LmFusion(model, LmConfig(cfg.weight if weight is None else weight,
                                    cfg.word_bonus if bonus is None else bonus,
                                    cfg.oov_penalty if oov is None else oov,
                                    cfg.lexicon if lexicon is None else lexicon,
                                    cfg.lookahead if lookahead is None else lookahead,
                                    cfg.ilm_weight if ilm_weight is None else ilm_weight))


def report_markdown(result: dict[str, Any]) -> str:
    systems = result["systems"]

    def cols(key: str) -> dict[str, dict[str, Rates]]:
        return {n: {k: Rates(**v) for k, v in s[key].items()} for n, s in systems.items()}

    overall = {n: {"all": Rates(**s["overall"])} for n, s in systems.items()}
    cost = " · ".join(f"{n}: {s['cpu_seconds_per_audio_second']:.3f} CPU-s per audio-s"
                      for n, s in systems.items())
    tables = [
        f"{result['utterances']} utterances, {result['audio_hours']} h, decoder "
        f"{result['decoder']}{_lm_words(result.get('lm'))}; {cost}",
        markdown_table("overall", overall), markdown_table("engine", cols("per_engine")),
        markdown_table("domain", cols("per_domain")),
    ]
    if any(set(s.get("per_heard", {})) - {"?"} for s in systems.values()):
        tables.append(markdown_table("voice in training", cols("per_heard")))
    return "\n\n".join(tables) + "\n"


def _lm_words(lm: dict[str, Any] | None) -> str:
    if not lm:
        return ""
    return (f" + {lm['order']}-gram LM (weight {lm['weight']}, word bonus "
            f"{lm['word_bonus']}, " + ("lexicon-constrained)" if lm.get("lexicon") else
                                        f"OOV penalty {lm.get('oov_penalty')})"))
