"""A stream whose model steps go through the dispatcher: the async twin of StreamingTranscriber.

Same Chunker (features, chunking, end padding) and decoders; only `step` is shared with other
streams via Batch Dispatch. So a stream's transcript is the same alone or batched (tested).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from models.bundle import Bundle
from models.decoding import Decoder, Hypothesis, bundle_decoder
from models.features import Fbank
from models.streaming import Chunker
from server.dispatch import Dispatcher

T = TypeVar("T")


class DispatchedStream:
    def __init__(self, bundle: Bundle, dispatcher: Dispatcher, *, fbank: Fbank | None = None,
                 decoder: str | None = None, chunk_frames: int | None = None):
        self.dispatcher = dispatcher
        self.chunker = Chunker(bundle, fbank=fbank, chunk_frames=chunk_frames)
        self.decoder: Decoder = bundle_decoder(bundle, decoder)
        # seconds spent per stage, for "where does the time go" (features and decoding run on
        # the event loop; the model step runs in the dispatcher's thread)
        self.timings: defaultdict[str, float] = defaultdict(float)
        self.sid = dispatcher.open_stream()  # may raise Overloaded: nothing to clean up then

    async def _run(self, chunks: list[torch.Tensor]) -> None:
        for frames in chunks:
            t0 = time.perf_counter()
            out = await self.dispatcher.step(self.sid, frames.numpy())
            t1 = time.perf_counter()
            self.decoder.update(torch.from_numpy(out))
            self.timings["dispatch"] += t1 - t0
            self.timings["decode"] += time.perf_counter() - t1

    def _timed(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timings[stage] += time.perf_counter() - t0

    async def accept_waveform(self, samples: np.ndarray) -> Hypothesis:
        await self._run(self._timed("features", self.chunker.accept, samples))
        return self._timed("decode", self.decoder.result)

    async def finalize(self) -> Hypothesis:
        try:
            await self._run(self._timed("features", self.chunker.finish))
            return self._timed("decode", self.decoder.finalize)
        finally:
            self.close()

    def close(self) -> None:
        self.dispatcher.close_stream(self.sid)
