"""Engine WAV (any rate) -> corpus WAV: vocal-tract shift, 16 kHz mono PCM16, level, padding.

One sox call per utterance. `pitch` shifts pitch and formants together (a vocal-tract-length
change); dither is off (-D) so output is deterministic. A derived voice's fixed transform
(voice_shift.py) is applied to the engine's audio first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from training.data.synth.engines import SynthesisError
from training.data.synth.voice_shift import VoiceShift, apply_shift
from training.data.synth.voices import Prosody

SAMPLE_RATE_HZ = 16_000
MIN_DURATION_S = 0.3
MIN_RMS = 1e-3  # below this the engine produced (near) silence


def postprocess(raw_wav: Path, out_wav: Path, prosody: Prosody,
                shift: VoiceShift | None = None) -> float:
    """Write the corpus WAV; returns its duration in seconds."""
    if shift is not None:
        x, rate = sf.read(str(raw_wav), dtype="float32", always_2d=True)
        shifted = raw_wav.with_name(raw_wav.stem + "-shifted.wav")
        sf.write(str(shifted), apply_shift(x.mean(axis=1), rate, shift), rate)
        raw_wav = shifted
    effects = ["remix", "-"] if sf.info(str(raw_wav)).channels > 1 else []
    if abs(prosody.vtl_cents) >= 1:
        effects += ["pitch", f"{prosody.vtl_cents:.0f}"]
    effects += ["rate", "-v", str(SAMPLE_RATE_HZ), "gain", "-n", f"{prosody.peak_db:.2f}",
                "pad", f"{prosody.pad_start_s:.3f}", f"{prosody.pad_end_s:.3f}"]
    cmd = ["sox", "-D", "-V1", str(raw_wav), "-r", str(SAMPLE_RATE_HZ), "-c", "1", "-b", "16",
           str(out_wav), *effects]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise SynthesisError(f"sox failed: {proc.stderr.decode(errors='replace')[-300:]}")
    audio, rate = sf.read(str(out_wav), dtype="float32")
    duration = audio.shape[0] / rate
    speech = audio[int(prosody.pad_start_s * rate) : audio.shape[0] - int(prosody.pad_end_s * rate)]
    if duration < MIN_DURATION_S or speech.size == 0 or float(np.sqrt(np.mean(speech**2))) < MIN_RMS:
        raise SynthesisError(f"engine produced silence or too little audio ({duration:.2f} s)")
    return duration
