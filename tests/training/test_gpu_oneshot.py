"""The one-shot GPU script end to end on this CPU: pack a tiny corpus into a carry folder, train
from the packs in a process that cannot import Lhotse or the audio libraries (as on the lent
machine), bring the files back in parts and join them into a bundle that transcribes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.bundle import load
from models.streaming import transcribe
from tests.training.test_train import tiny_corpus  # noqa: F401 (fixture)
from training.data.packed import STEPS_PER_SIGMA, PackedCorpus
from training.gpu_oneshot import fetch, main

ROOT = Path(__file__).parents[2]
SMALL = ["model.d_model=64", "model.num_layers=2", "model.conv_channels=8", "model.heads=4",
         "head.subword_vocab=40", "data.max_duration_s=20", "data.num_buckets=2",
         "optim.val_every_steps=10", "optim.warmup_steps=5", "optim.lr=0.005", "threads=1"]
# the lent machine has neither Lhotse nor soundfile / soxr: the run must not need them
NO_AUDIO_LIBS = "import sys\nfor m in ('lhotse', 'soundfile', 'soxr', 'jiwer'):\n    sys.modules[m] = None\n"


def test_pack_run_fetch(tiny_corpus, tmp_path) -> None:  # noqa: F811
    carry = tmp_path / ".gpu"
    assert main(["prepare", "--corpus", str(tiny_corpus), "--carry", str(carry),
                 "--budget-mib", "0.5", "--dev-utts", "4", "--no-progress",
                 *sum((["--override", o] for o in SMALL), [])]) == 0
    job = json.loads((carry / "job.json").read_text())
    assert job["train"]["bytes"] + job["dev"]["bytes"] <= 0.5 * 2**20
    packed = PackedCorpus(carry / "train.npz")
    assert len(packed) == job["train"]["utterances"] > 0 and packed.frames.dtype == np.int8
    # dequantised features stay within half a quantisation step of the real ones
    from lhotse import CutSet

    from models.features import Fbank

    cut = next(c for c in CutSet.from_file(tiny_corpus / "cuts_train.jsonl.gz") if c.id == packed.ids[0])
    real = Fbank(packed.features)(__import__("torch").from_numpy(cut.load_audio()[0]))
    err = (packed.features_of(0) - real).abs() / packed.std
    assert float(err.max()) <= 0.5 / STEPS_PER_SIGMA + 1e-4

    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(NO_AUDIO_LIBS)
    out = tmp_path / "OUT"
    env = {**os.environ, "PYTHONPATH": f"{shim}:{ROOT}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "training.gpu_oneshot", "run", "--carry",
                           str(carry), "--out", str(out), "--accelerator", "cpu",
                           "--max-steps", "30", "--workers", "0", "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    back = sorted(p.name for p in out.iterdir() if p.is_file())
    assert len(back) <= 8 and "model.safetensors.part0" in back and "metrics.csv" in back, back
    assert all((out / n).stat().st_size < 16 * 2**20 for n in back)
    bundle = load(fetch(out, tmp_path / "bundle"))
    assert bundle.model.cfg.encoder.arch == "conformer" and bundle.tokenizer.vocab_size == 40
    assert json.loads((out / "summary.json").read_text())["steps"] == 30
    hyp = transcribe(bundle, cut.load_audio()[0].astype(np.float32))
    assert isinstance(hyp.text, str)


def test_bf16_autocast_path_runs_on_cpu(tiny_corpus, tmp_path) -> None:  # noqa: F811
    """The GPU recipe's precision (bf16-mixed autocast) through the same training code, on the
    CPU: the code path, not the speed (this CPU has no fast bf16)."""
    from tests.training.test_train import overrides
    from training.config import load_config
    from training.train import train

    cfg = load_config(None, [*overrides(tiny_corpus, tmp_path / "bf16", 6), "precision=bf16-mixed",
                             "accelerator=cpu", "optim.warmup_steps=2"])
    bundle = load(train(cfg, progress=False))
    summary = json.loads((tmp_path / "bf16/summary.json").read_text())
    assert summary["steps"] == 6 and summary["config"]["precision"] == "bf16-mixed"
    assert all(p.dtype.is_floating_point and p.dtype != __import__("torch").bfloat16
               for p in bundle.model.parameters())  # weights stay fp32; autocast computes bf16
