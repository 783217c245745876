"""Shared test set-up: pin threads (busy OpenMP threads on a 2-core box make torch ~50x slower)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
