"""Acoustic features: Kaldi-compatible fbank (offline and streaming-exact), optional PCEN."""

from models.features.config import FbankConfig, PcenConfig
from models.features.fbank import Fbank
from models.features.streaming import StreamingFbank

__all__ = ["Fbank", "FbankConfig", "PcenConfig", "StreamingFbank"]
