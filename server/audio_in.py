"""Incoming audio bytes -> float32 mono samples at the model rate, incrementally (sans I/O).

Encodings: `pcm_s16le`, `pcm_f32le`, `mulaw` (G.711 u-law, 8 bit) at a declared sample rate
and channel count, and `wav` (a RIFF/WAVE header first, in the stream itself: PCM16, float32
or u-law; this is what Riva's file scripts send with ENCODING_UNSPECIFIED and rate 0). Any rate
4-192 kHz is resampled with a streaming soxr resampler, so the samples equal a one-shot
resample of the whole stream (tested). Raw encodings must arrive in frames of whole samples
(an odd-length PCM16 frame is an error); a WAV stream is a file's bytes and may be cut anywhere.
Float samples beyond [-1, 1] are clipped (NaN and infinities are refused).

Every error is an `AudioError` naming the field and what was expected; a bad frame is refused
before any of it is used, so audio already accepted stays valid.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from models.audio import AudioError, check_sample_rate

ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw", "wav")
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1}
MAX_WAV_HEADER = 64 * 1024
FMT_MIN_BYTES = 16  # PCMWAVEFORMAT: the fields read from a 'fmt ' chunk
WAV_FORMATS = {1: "pcm_s16le", 3: "pcm_f32le", 7: "mulaw"}  # WAVE format tags we read


def mulaw_decode(data: np.ndarray) -> np.ndarray:
    """G.711 u-law bytes (uint8) -> float32 in [-1, 1]."""
    u = ~data.astype(np.uint8)
    sign = (u & 0x80) != 0
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    sample = (magnitude - 0x84).astype(np.float32)
    return np.where(sign, -sample, sample) / 32768.0


@dataclass(frozen=True)
class AudioFormat:
    encoding: str = "pcm_s16le"
    sample_rate: int = 16_000
    channels: int = 1

    def validate(self) -> AudioFormat:
        if self.encoding not in ENCODINGS:
            raise AudioError(f"encoding must be one of {list(ENCODINGS)}, got {self.encoding!r}")
        if self.encoding != "wav":
            check_sample_rate(self.sample_rate, field="sample_rate")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) \
                or not 1 <= self.channels <= 8:
            raise AudioError(f"channels must be an integer 1..8, got {self.channels!r}")
        return self


def looks_like_wav(data: bytes) -> bool:
    """The bytes begin with a RIFF/WAVE header."""
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def parse_wav_header(buf: bytes) -> tuple[AudioFormat, int, int | None] | None:
    """(format, offset of the sample data, data bytes or None if unknown) once the header is
    complete; None while more bytes are needed."""
    if len(buf) < 12:
        return None
    if not looks_like_wav(buf):
        raise AudioError("encoding 'wav' expects a RIFF/WAVE header; the first bytes are "
                         f"{buf[:12]!r}")
    pos, fmt = 12, None
    while True:
        if len(buf) < pos + 8:
            return None
        cid, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
        if cid == b"data":
            if fmt is None:
                raise AudioError("WAV header: 'data' chunk before 'fmt ' chunk")
            # 0 / 0xFFFFFFFF: written by a streaming writer that did not know the length
            return fmt, pos + 8, (None if size in (0, 0xFFFFFFFF) else size)
        if pos + 8 + size > MAX_WAV_HEADER:  # refused now, not after 64 KiB of waiting
            name = cid.decode("latin-1")
            raise AudioError(f"WAV header: {name!r} chunk of {size} bytes does not end within the "
                             f"first {MAX_WAV_HEADER} bytes (expected 'fmt ' then 'data')")
        if len(buf) < pos + 8 + size:
            return None
        if cid == b"fmt ":
            if size < FMT_MIN_BYTES:
                raise AudioError(f"WAV header: 'fmt ' chunk of {size} bytes; expected at least "
                                 f"{FMT_MIN_BYTES} (format tag, channels, rate, byte rate, "
                                 "block align, bits per sample)")
            tag, channels, rate = struct.unpack("<HHI", buf[pos + 8 : pos + 16])
            bits = struct.unpack("<H", buf[pos + 22 : pos + 24])[0]
            if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack("<H", buf[pos + 32 : pos + 34])[0]
            encoding = WAV_FORMATS.get(tag)
            if encoding is None or bits != 8 * BYTES_PER_SAMPLE[encoding]:
                raise AudioError(f"WAV header: format tag {tag} with {bits} bits per sample is not "
                                 "supported (expected PCM 16-bit, float 32-bit or u-law 8-bit)")
            try:
                fmt = AudioFormat(encoding, int(rate), int(channels)).validate()
            except AudioError as exc:
                raise AudioError(f"WAV header: {exc}") from None
        pos += 8 + size + (size & 1)
        if pos > MAX_WAV_HEADER:
            raise AudioError(f"WAV header: no 'data' chunk in the first {MAX_WAV_HEADER} bytes")


class StreamDecoder:
    def __init__(self, fmt: AudioFormat, *, target_rate: int = 16_000):
        self.declared = fmt.validate()
        self.target_rate = target_rate
        self.fmt: AudioFormat | None = None if fmt.encoding == "wav" else fmt
        self._header = b""
        self._carry = b""  # wav only: bytes of a sample split across frames
        self._data_left: int | None = None  # wav only: bytes of the data chunk still to come
        self._resampler = None
        self.samples_in = 0  # per channel, at the source rate
        if self.fmt is not None:
            self._start(self.fmt)

    def _start(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        if fmt.sample_rate != self.target_rate:
            import soxr

            self._resampler = soxr.ResampleStream(fmt.sample_rate, self.target_rate, 1,
                                                  dtype="float32", quality="HQ")

    @property
    def source_seconds(self) -> float:
        return self.samples_in / self.fmt.sample_rate if self.fmt else 0.0

    def seconds_in(self, data: bytes) -> float:
        """Source seconds a frame of bytes holds (0 while the WAV header is still unread)."""
        if self.fmt is None:
            return 0.0
        width = BYTES_PER_SAMPLE[self.fmt.encoding] * self.fmt.channels
        return len(data) / width / self.fmt.sample_rate

    def feed(self, data: bytes) -> np.ndarray:
        """One frame of bytes -> new samples at the target rate (possibly none yet)."""
        if self.fmt is None:  # still reading the WAV header
            buf = self._header + data
            parsed = parse_wav_header(buf)
            if parsed is None:
                if len(buf) > MAX_WAV_HEADER:
                    raise AudioError(f"WAV header: incomplete after {MAX_WAV_HEADER} bytes")
                self._header = buf
                return np.zeros(0, np.float32)
            header_fmt, offset, self._data_left = parsed
            self._header = b""
            self._start(header_fmt)
            data = buf[offset:]
        fmt = self.fmt
        assert fmt is not None
        width = BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
        if self.declared.encoding == "wav":  # a file's bytes: any framing, keep the remainder
            if self._data_left is not None:  # chunks after the data chunk are not audio
                data = data[: self._data_left]
                self._data_left -= len(data)
            data = self._carry + data
            cut = len(data) - len(data) % width
            data, self._carry = data[:cut], data[cut:]
        elif len(data) % width:
            raise AudioError(f"{fmt.encoding} audio with {fmt.channels} channel(s) must come in "
                             f"frames of whole samples ({width} bytes each); got a frame of "
                             f"{len(data)} bytes")
        if fmt.encoding == "pcm_s16le":
            x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        elif fmt.encoding == "pcm_f32le":
            x = np.frombuffer(data, "<f4").astype(np.float32)
            if not np.isfinite(x).all():
                raise AudioError("pcm_f32le audio contains NaN or infinite samples")
            # samples are in [-1, 1]; beyond, they saturate as PCM would. Unclipped, a finite but
            # huge value (3e38) overflows the mix-down, the resampler or the features to inf
            # and poisons the stream's model state (NaN outputs) for the rest of the stream.
            np.clip(x, -1.0, 1.0, out=x)
        else:
            x = mulaw_decode(np.frombuffer(data, np.uint8))
        if fmt.channels > 1:
            x = x.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32)
        self.samples_in += x.size
        return self._resample(x, last=False)

    def _resample(self, x: np.ndarray, *, last: bool) -> np.ndarray:
        if self._resampler is None:
            return x
        return np.asarray(self._resampler.resample_chunk(x, last=last), dtype=np.float32)

    def flush(self) -> np.ndarray:
        """End of stream: the resampler's remaining samples."""
        if self.fmt is None:
            if self._header:
                raise AudioError("stream ended inside the WAV header (no 'data' chunk)")
            return np.zeros(0, np.float32)
        return self._resample(np.zeros(0, np.float32), last=True)
