"""Shared fixtures: tiny SD components built from the smoke profile's configs (as diffusers'
pipeline tests build theirs), random images, and an isolated data root per test session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# remembered file hashes go to a folder of this test session, not the user's ~/.cache
os.environ.setdefault("GENLINEAGE_HASH_CACHE", tempfile.mkdtemp(prefix="genlineage-hashes-"))

import numpy as np
import pytest
import torch

from genlineage.config import load_profile
from genlineage.models.tiny import build_base, build_vae

CAPTIONS = [f"a {c} {s} on a {b} background" for c in ("red", "blue", "green")
            for s in ("star", "circle") for b in ("plain", "grassy")]


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture()
def smoke_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    return load_profile("smoke")


@pytest.fixture(scope="session")
def random_images() -> np.ndarray:
    return np.random.default_rng(0).random((len(CAPTIONS), 32, 32, 3)).astype(np.float32)


def make_components(seed_offset: int = 0):
    profile = load_profile("smoke")
    vae = build_vae(profile.models.vae, 32, 3 + seed_offset)
    base = profile.models.bases["v1"]
    return build_base(base.replace(seed=base.seed + seed_offset), vae, CAPTIONS, 32, profile.training.noise_scheduler)


@pytest.fixture()
def components():
    return make_components()


@pytest.fixture(scope="session")
def saved_pipeline(tmp_path_factory):
    from genlineage.models.pipeline_io import save_pipeline

    out = tmp_path_factory.mktemp("models") / "tiny_pipe"
    save_pipeline(make_components(), out, {"role": "test"})
    return out


def snapshot(where: Path) -> dict:
    """Every entry below ``where`` (links not followed), with mode, size and mtime: what a test
    compares before and after a refusal to show that nothing was written."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(where):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), where)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def verify_inputs(where: Path, n_keys: int = 6, n_controls: int = 8, size: int = 32) -> tuple[Path, Path]:
    """A random key set and a folder of control pairs at ``size`` px, made without any model: what
    a ``verify`` run with the controls null needs beside its models (the hostile batteries' runs)."""
    from genlineage.data.imagefolder import write_imagefolder
    from genlineage.key_sets import KeySet

    rng = np.random.default_rng(7)
    references = rng.integers(0, 256, (n_keys, size, size, 3), dtype=np.uint8)
    keys = KeySet("random", CAPTIONS[:n_keys], references, list(range(n_keys)), np.full(n_keys, np.nan))
    keys.save(where / "keys")
    controls = rng.integers(0, 256, (n_controls, size, size, 3), dtype=np.uint8)
    write_imagefolder(where / "controls", [(img, CAPTIONS[(n_keys + i) % len(CAPTIONS)] + f" #{i}", {})
                                           for i, img in enumerate(controls)])
    return where / "keys", where / "controls"
