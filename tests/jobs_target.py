"""A job for test_jobs: spawned workers import it by name (tests/ is on their sys.path)."""
from __future__ import annotations

import hashlib

import numpy as np


def train_checksum(seed: int) -> str:
    import torch

    from conftest import CAPTIONS, make_components
    from genlineage.training.encode import encode_dataset
    from genlineage.training.sd import TrainConfig, train_sd
    import tempfile

    images = np.random.default_rng(seed).random((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    comp = make_components()
    train_sd(comp, encode_dataset(comp, images, CAPTIONS), TrainConfig(steps=3, batch=4, lr=1e-3, seed=seed),
             tempfile.mkdtemp(), progress=False)
    weights = torch.cat([p.detach().flatten() for p in comp.unet.parameters()]).numpy()
    return hashlib.sha256(weights.tobytes()).hexdigest()
