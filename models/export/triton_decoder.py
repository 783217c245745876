"""Triton Python-backend model `chorus_decoder`: per-stream decoding of `chorus_encoder`'s outputs.

`chorus export --format triton` copies this file to `<repo>/chorus_decoder/1/model.py` and the
bundle beside it (`1/bundle/`). Triton's sequence batcher (strategy `oldest`) sends every
request of a stream to the same instance, with the control tensors START, END and CORRID; this
model keeps one decoder per CORRID, feeds it each request's model output frames (T', X) and
answers the partial (or, on END, the final) result:
  text    TYPE_STRING [1]  the transcript so far
  result  TYPE_STRING [1]  JSON {"text", "confidence", "words": [{word, start, end, confidence}],
                           "final"}: the same fields as the native WebSocket protocol's results

Two implementations, chosen by the config's `implementation` parameter:
  numpy   CTC / Gram-CTC greedy decoding written here with numpy only (runs on a stock
          tritonserver image); the same decisions and word timings as
          models.decoding.CtcGreedyDecoder (tests compare them).
  chorus  models.decoding from the chorus-asr package (prefix beam search + the bundle's word
          LM, hotword-free; RNN-T greedy and beam): needs chorus-asr and torch installed in
          Triton's Python environment.

A stream that goes quiet for max_sequence_idle_microseconds is released by Triton without an
END; its decoder is dropped here after the same time. This file imports nothing from chorus at
module level, so it loads in Triton's Python stub as it is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend
except ImportError:  # pragma: no cover - imported outside Triton (docs, linters)
    pb_utils = None

BLANK_ID = 0
SPACE = "<sp>"  # tokens.txt's spelling of " " (models/tokenizer.py)
WORD_START = "\u2581"  # "▁" inside a symbol stands for a space


def spellings(tokens_txt: Path) -> list[str]:
    """What each token spells (models.tokenizer.CharTokenizer.spell): the blank and
    specials such as <unk> nothing, "<sp>" a space, "▁" inside a symbol a space."""
    out: list[str] = []
    for line in tokens_txt.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        sym, idx = line.split()
        if int(idx) != len(out):
            raise ValueError(f"{tokens_txt}: ids must be 0, 1, 2, ... in order")
        sym = " " if sym == SPACE else sym.replace(WORD_START, " ")
        special = len(sym) > 2 and sym[0] == "<" and sym[-1] == ">"
        out.append("" if len(out) == BLANK_ID or special else sym)
    return out


def hypothesis(emissions: list[tuple[int, int, float]], spell: list[str],
               frame_seconds: float) -> dict[str, Any]:
    """Emitted (token, frame, prob) -> {"text", "confidence", "words"}, as
    models.decoding.hypothesis does: a spelling that starts with a space starts a word."""
    words: list[dict[str, Any]] = []
    current: list[tuple[int, int, float]] = []
    text: list[str] = []

    def flush() -> None:
        if current and "".join(text):
            conf = sum(p for _, _, p in current) / len(current)
            words.append({"word": "".join(text), "start": round(current[0][1] * frame_seconds, 3),
                          "end": round((current[-1][1] + 1) * frame_seconds, 3),
                          "confidence": round(conf, 4)})
        current.clear()
        text.clear()

    for item in emissions:
        piece = spell[item[0]]
        if piece.startswith(" "):
            flush()
            piece = piece.lstrip(" ")
        if piece:
            current.append(item)
            text.append(piece)
    flush()
    conf = sum(w["confidence"] for w in words) / len(words) if words else 0.0
    return {"text": " ".join(w["word"] for w in words), "confidence": round(conf, 4),
            "words": words}


class GreedyCtc:
    """Streaming CTC greedy decoding over log-probs (T', V), numpy only."""

    def __init__(self, spell: list[str], frame_seconds: float):
        self.spell, self.frame_seconds = spell, frame_seconds
        self.frames, self.prev = 0, BLANK_ID
        self.tokens: list[tuple[int, int, float]] = []

    def update(self, log_probs: np.ndarray) -> None:
        best = log_probs.argmax(axis=-1)  # (T',)
        best_lp = log_probs.max(axis=-1)
        for t, (k, lp) in enumerate(zip(best.tolist(), best_lp.tolist(), strict=True)):
            if k != BLANK_ID and k != self.prev:
                self.tokens.append((k, self.frames + t, math.exp(lp)))
            self.prev = k
        self.frames += int(log_probs.shape[0])

    def result(self) -> dict[str, Any]:
        return hypothesis(self.tokens, self.spell, self.frame_seconds)

    def finalize(self) -> dict[str, Any]:
        return self.result()


class PackageDecoder:
    """A models.decoding decoder (beam + LM, RNN-T) behind the same numpy interface."""

    def __init__(self, bundle: Any, decoder: str):
        from models.decoding import bundle_decoder

        self.decoder = bundle_decoder(bundle, decoder)

    def update(self, outputs: np.ndarray) -> None:
        import torch

        self.decoder.update(torch.from_numpy(np.ascontiguousarray(outputs)))

    def result(self) -> dict[str, Any]:
        return dict(self.decoder.result().to_dict())

    def finalize(self) -> dict[str, Any]:
        return dict(self.decoder.finalize().to_dict())


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        here = Path(__file__).resolve().parent
        self.decoder = params.get("decoder", "greedy")
        self.implementation = params.get("implementation", "numpy")
        self.idle_s = int(cfg.get("sequence_batching", {}).get(
            "max_sequence_idle_microseconds", 0) or 0) / 1e6
        self.streams: dict[Any, tuple[Any, float]] = {}  # CORRID -> (decoder, last request)
        if self.implementation == "numpy":
            if self.decoder != "greedy":
                raise ValueError("implementation numpy decodes greedily only; set "
                                 "implementation chorus for beam search")
            spell = spellings(here / "bundle" / "tokens.txt")
            frame_seconds = float(params["frame_seconds"])
            self.new_decoder: Any = lambda: GreedyCtc(spell, frame_seconds)
        elif self.implementation == "chorus":
            try:
                import torch

                from models.bundle import load
            except ImportError as exc:
                raise ImportError(
                    "chorus_decoder with implementation chorus needs the chorus-asr package "
                    "and torch in Triton's Python environment (pip install /path/to/chorus "
                    "in the server image, or a custom EXECUTION_ENV_PATH); or set "
                    "implementation numpy with decoder greedy") from exc
            torch.set_num_threads(int(params.get("threads", "1")))
            bundle = load(here / "bundle")
            self.new_decoder = lambda: PackageDecoder(bundle, self.decoder)
        else:
            raise ValueError(f"implementation must be numpy or chorus, got {self.implementation!r}")

    def _drop_idle(self, now: float) -> None:
        if self.idle_s > 0:
            for corrid in [c for c, (_, seen) in self.streams.items() if now - seen > self.idle_s]:
                del self.streams[corrid]

    def execute(self, requests: list[Any]) -> list[Any]:
        now = time.monotonic()
        self._drop_idle(now)
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request, now))
            except Exception as exc:  # noqa: BLE001 - one failing stream fails only its request
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"chorus_decoder: {exc}")))
        return responses

    def _one(self, request: Any, now: float) -> Any:
        def value(name: str) -> Any:
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]

        outputs = pb_utils.get_input_tensor_by_name(request, "outputs").as_numpy()  # (1, T', X)
        corrid = value("CORRID")
        corrid = corrid.decode() if isinstance(corrid, bytes) else int(corrid)
        start, end = bool(value("START")), bool(value("END"))
        if start or corrid not in self.streams:
            self.streams[corrid] = (self.new_decoder(), now)
        decoder = self.streams[corrid][0]
        self.streams[corrid] = (decoder, now)
        for row in outputs:  # the sequence batcher sends one row per request
            decoder.update(row)
        if end:
            result = decoder.finalize()
            del self.streams[corrid]
        else:
            result = decoder.result()
        result["final"] = end
        text = np.array([[result["text"].encode("utf-8")]], dtype=np.object_)
        blob = np.array([[json.dumps(result).encode("utf-8")]], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text", text),
                                                          pb_utils.Tensor("result", blob)])

    def finalize(self) -> None:
        self.streams.clear()
