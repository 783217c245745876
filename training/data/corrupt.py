"""Seeded, deterministic corruptions of clean speech: room acoustics, additive noise at an exact
SNR, telephone channel; and `chorus data corrupt`, which writes corrupted copies of a manifest
(the noisy, far-field and telephone test sets).

- Rooms come from a real simulator, pyroomacoustics' image-source method (Allen and Berkley
  1979), rather than the decaying-noise impulse responses of training.data.augment: a shoebox
  room of random size, wall absorption set for a random RT60 by Sabine's formula, source and
  microphone at a random distance (0.5-5 m), so far-field speech has a real direct path, early
  reflections and a tail.
- Noise is scaled to the exact SNR asked (signal power / noise power over the utterance):
  white, pink or brown, or babble, a mix of other utterances of the corpus (other voices).
- The telephone channel is training.data.augment's (300-3400 Hz, 8 kHz, mu-law).
Every function takes a numpy Generator; `utterance_rng(seed, cut_id)` makes one per utterance,
so a test set is the same whatever order or subset it is written in.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.augment import colored_noise, shape_noise, telephone

RATE = 16_000
KINDS = ("white", "pink", "brown", "noise", "babble", "farfield", "telephone")
SPEED_OF_SOUND = 343.0


def utterance_rng(seed: int, cut_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(cut_id.encode())])


@dataclass(frozen=True)
class RoomConfig:
    size_min: tuple[float, float, float] = (3.0, 3.0, 2.5)  # metres
    size_max: tuple[float, float, float] = (10.0, 8.0, 4.0)
    rt60_s: tuple[float, float] = (0.2, 0.9)
    distance_m: tuple[float, float] = (0.5, 5.0)
    max_order: int = 30  # image-source reflection order (the tail beyond is modelled by none)


def room_impulse_response(rng: np.random.Generator, cfg: RoomConfig | None = None
                          ) -> tuple[np.ndarray, dict[str, Any]]:
    """A random shoebox room's impulse response (16 kHz) and what was drawn."""
    try:
        import pyroomacoustics as pra
    except ImportError as exc:
        raise ImportError("room simulation needs pyroomacoustics: pip install pyroomacoustics "
                          "(the train extra has it)") from exc
    cfg = cfg or RoomConfig()
    for _ in range(100):
        dims = rng.uniform(cfg.size_min, cfg.size_max)
        rt60 = float(rng.uniform(*cfg.rt60_s))
        dist = float(rng.uniform(*cfg.distance_m))
        mic = rng.uniform(0.5, dims - 0.5)
        direction = rng.standard_normal(3)
        direction[2] *= 0.2  # mostly horizontal
        src = mic + dist * direction / np.linalg.norm(direction)
        if np.all(src > 0.3) and np.all(src < dims - 0.3):
            break
    else:
        raise RuntimeError(f"no source position {dist:.1f} m from the microphone fits the room")
    try:
        absorption, _order = pra.inverse_sabine(rt60, dims)
    except ValueError:  # this room cannot be that live: its most reflective walls
        absorption = 0.01
    room = pra.ShoeBox(dims, fs=RATE, materials=pra.Material(absorption), max_order=cfg.max_order)
    room.add_source(src.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    ir = np.asarray(room.rir[0][0], dtype=np.float64)
    return ir, {"rt60_s": round(rt60, 3), "distance_m": round(dist, 3),
                "room_m": [round(float(d), 2) for d in dims]}


def apply_ir(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """x convolved with ir (FFT), aligned on the direct path, same length, same peak as x."""
    start = int(np.argmax(np.abs(ir)))  # the direct path: keep the words where they were
    ir = ir[start:]
    size = 1 << int(x.size + ir.size - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size]
    return (y / (np.max(np.abs(y)) + 1e-12) * np.max(np.abs(x))).astype(np.float32)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that power(x) / power(scaled noise) is exactly snr_db (noise is
    tiled or cut to x's length); the sum is scaled down only if it would clip."""
    if noise.size < x.size:
        noise = np.tile(noise, -(-x.size // noise.size))
    noise = noise[: x.size].astype(np.float64)
    p_sig = float(np.mean(x.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise**2))
    if p_sig <= 0 or p_noise <= 0:
        raise ValueError("mix_at_snr needs a signal and a noise with power > 0")
    y = x + noise * np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    peak = float(np.max(np.abs(y)))
    return (y / peak * 0.99 if peak > 0.99 else y).astype(np.float32)


def babble(n: int, sources: list[np.ndarray], rng: np.random.Generator,
           talkers: int = 4) -> np.ndarray:
    """`talkers` other utterances, each from a random offset, looped to n samples, each at
    the same power, summed."""
    if len(sources) < 1:
        raise ValueError("babble needs other utterances to mix")
    out = np.zeros(n)
    for i in rng.choice(len(sources), size=min(talkers, len(sources)), replace=False):
        s = sources[int(i)].astype(np.float64)
        s = np.roll(np.tile(s, -(-n // s.size) + 1), -int(rng.integers(s.size)))[:n]
        out += s / (np.sqrt(np.mean(s**2)) + 1e-12)
    return out


def corrupt(x: np.ndarray, kind: str, rng: np.random.Generator, *, snr_db: float = 10.0,
            sources: list[np.ndarray] | None = None, room: RoomConfig | None = None
            ) -> tuple[np.ndarray, dict[str, Any]]:
    """One corrupted view of x and what was done. `farfield`: a room's response, then pink
    noise at `snr_db` (a distant talker is heard over the room's own noise floor)."""
    if kind not in KINDS:
        raise ValueError(f"corruption kind must be one of {KINDS}, got {kind!r}")
    info: dict[str, Any] = {"kind": kind}
    if kind == "telephone":
        return telephone(x).astype(np.float32), info
    if kind == "farfield":
        ir, info_room = room_impulse_response(rng, room)
        y = apply_ir(x, ir)
        noise = colored_noise(x.size, rng)
        return mix_at_snr(y, noise, snr_db), {**info, **info_room, "snr_db": snr_db}
    if kind == "babble":
        noise = babble(x.size, sources or [], rng)
    else:
        noise = _colored(kind, x.size, rng)
        info["noise"] = kind if kind != "noise" else "mixed"
    return mix_at_snr(x, noise, snr_db), {**info, "snr_db": snr_db}


def _colored(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "noise":  # white, pink or brown, drawn (the draw above stays unused, so the
        return colored_noise(n, rng)  # test sets in docs/RESULTS.md come out the same)
    return shape_noise(white, kind)


def corrupt_manifest(manifest: str, out: str, kind: str, *, snr_db: float = 10.0, seed: int = 0,
                     limit: int | None = None, name: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Corrupted copies of a manifest's utterances: out/wavs/<name>/*.wav and
    out/cuts_<name>.jsonl.gz (supervisions keep their text, engine, domain and voice, plus
    custom field `corruption`)."""
    from dataclasses import replace
    from pathlib import Path

    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording
    from tqdm import tqdm

    cuts = CutSet.from_file(manifest)
    cut_list = list(cuts)[:limit] if limit else list(cuts)
    name = name or f"{Path(manifest).name.split('.')[0].removeprefix('cuts_')}-{kind}" + (
        f"{snr_db:g}" if kind not in ("telephone",) else "")
    wav_dir = Path(out) / "wavs" / name
    wav_dir.mkdir(parents=True, exist_ok=True)
    sources: list[np.ndarray] = []
    ids: list[str] = []
    if kind == "babble":  # other voices: a fixed pool drawn from the same manifest
        pool_rng = np.random.default_rng([seed, 7])
        pick = pool_rng.choice(len(cut_list), size=min(40, len(cut_list)), replace=False)
        sources = [cut_list[int(i)].load_audio()[0] for i in pick]
        ids = [cut_list[int(i)].id for i in pick]
    written = []
    for cut in tqdm(cut_list, desc=f"corrupt {name}", unit="utt", disable=not progress):
        x = cut.load_audio()[0].astype(np.float32)
        own = [s for s, i in zip(sources, ids, strict=True) if i != cut.id] if sources else None
        y, info = corrupt(x, kind, utterance_rng(seed, cut.id), snr_db=snr_db, sources=own)
        path = wav_dir / f"{cut.id}.wav"
        sf.write(path, y, RATE, subtype="PCM_16")
        rec = Recording.from_file(path.resolve(), recording_id=f"{cut.id}-{name}")
        sup = replace(cut.supervisions[0], id=rec.id, recording_id=rec.id, start=0.0,
                      duration=rec.duration,
                      custom={**(cut.supervisions[0].custom or {}), "corruption": info})
        written.append(MonoCut(id=rec.id, start=0.0, duration=rec.duration, channel=0,
                               recording=rec, supervisions=[sup],
                               custom={**(cut.custom or {}), "corruption": info}))
    path = Path(out) / f"cuts_{name}.jsonl.gz"
    CutSet.from_cuts(written).to_file(path)
    return {"manifest": str(path), "utterances": len(written), "kind": kind,
            "snr_db": snr_db if kind != "telephone" else None, "seed": seed}
