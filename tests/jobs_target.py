"""A job for test_jobs: spawned workers import it by name (tests/ is on their sys.path)."""
from __future__ import annotations

import hashlib

import numpy as np


def train_checksum(seed: int, work: str | None = None, die_at: int | None = None, marker: str | None = None) -> str:
    """A small fine-tune's weights, hashed. With ``die_at``, the first try (no ``marker`` file yet)
    checkpoints at that step and kills its own process, as a pre-empted node would; a retry
    resumes from the checkpoint in ``work``."""
    import os
    import signal
    import tempfile
    from pathlib import Path

    import torch

    from conftest import CAPTIONS, make_components
    from genlineage.training.encode import encode_dataset
    from genlineage.training.sd import TrainConfig, train_sd

    images = np.random.default_rng(seed).random((len(CAPTIONS), 32, 32, 3)).astype(np.float32)
    cfg = TrainConfig(steps=3, batch=4, lr=1e-3, seed=seed, checkpoint_every=1)
    work = work or tempfile.mkdtemp()
    comp = make_components()
    data = encode_dataset(comp, images, CAPTIONS)
    if die_at is not None and not Path(marker).exists():
        Path(marker).write_text("died once\n")
        train_sd(comp, data, cfg, work, stop_after=die_at, progress=False)
        os.kill(os.getpid(), signal.SIGKILL)
    train_sd(comp, data, cfg, work, progress=False)
    weights = torch.cat([p.detach().flatten() for p in comp.unet.parameters()]).numpy()
    return hashlib.sha256(weights.tobytes()).hexdigest()


def fail_once(marker: str) -> str:
    """Raises on the first try, returns on the next (a transient error)."""
    from pathlib import Path

    if not Path(marker).exists():
        Path(marker).write_text("failed once\n")
        raise RuntimeError("a transient failure")
    return "ok"


def fail_or_pass(name: str, fail: bool) -> str:
    if fail:
        raise ValueError(f"{name} cannot be done")
    return name
