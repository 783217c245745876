"""A stream whose model steps go through the dispatcher: the async twin of StreamingTranscriber.

Same Chunker (features, chunking, end padding) and decoders; only `step` is shared with other
streams via Batch Dispatch. So a stream's transcript is the same alone or batched (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from models.bundle import Bundle
from models.decoding import Decoder, Hypothesis, make_decoder
from models.features import Fbank
from models.streaming import Chunker
from server.dispatch import Dispatcher


class DispatchedStream:
    def __init__(self, bundle: Bundle, dispatcher: Dispatcher, *, fbank: Fbank | None = None,
                 decoder: str | None = None, chunk_frames: int | None = None):
        self.dispatcher = dispatcher
        self.chunker = Chunker(bundle, fbank=fbank, chunk_frames=chunk_frames)
        self.decoder: Decoder = make_decoder(decoder or bundle.decoding.decoder, bundle.tokenizer,
                                             frame_seconds=bundle.frame_seconds,
                                             beam_size=bundle.decoding.beam_size)
        self.sid = dispatcher.open_stream()  # may raise Overloaded: nothing to clean up then

    async def _run(self, chunks: list[torch.Tensor]) -> None:
        for frames in chunks:
            out = await self.dispatcher.step(self.sid, frames.numpy())
            self.decoder.update(torch.from_numpy(out))

    async def accept_waveform(self, samples: np.ndarray) -> Hypothesis:
        await self._run(self.chunker.accept(samples))
        return self.decoder.result()

    async def finalize(self) -> Hypothesis:
        try:
            await self._run(self.chunker.finish())
            return self.decoder.finalize()
        finally:
            self.close()

    def close(self) -> None:
        self.dispatcher.close_stream(self.sid)
