"""Stage 02's memorisation images leave the generation cache once each RD table is written, where
the profile says so (``models.keep_memorisation_images: false``, the paper profile's disk): the
table is the same, the cache holds none of them, and notebook 02's examples are drawn again."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import CAPTIONS, make_components


@pytest.fixture()
def memorisation_world(saved_pipeline, tmp_path, monkeypatch):
    """One base and one source (tiny pipelines) and a domain's source and held-out pairs."""
    from genlineage import layout
    from genlineage.data.imagefolder import write_imagefolder
    from genlineage.models.pipeline_io import save_pipeline

    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    profile = _profile(keep=True)
    shutil.copytree(saved_pipeline, layout.base_dir(profile, "v1"))
    save_pipeline(make_components(seed_offset=1), layout.source_dir(profile, "v1", "celeba"), {"role": "source"})
    rng = np.random.default_rng(0)
    for role, n in (("source", 3), ("heldout", 2)):
        write_imagefolder(layout.datasets_dir(profile) / f"celeba_{role}",
                          ((rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), CAPTIONS[i + 3 * (role == "heldout")],
                            {"id": f"{role}{i}"}) for i in range(n)))
    return profile


def _profile(keep: bool):
    from genlineage.config import load_profile

    return load_profile("smoke", {"memorisation": {"seeds": [0, 1]}, "models": {"keep_memorisation_images": keep}})


def _measure(keep: bool):
    from genlineage import layout
    from genlineage.experiments import memorisation

    profile = _profile(keep)
    summary = memorisation.measure_model(profile, "v1", "celeba", True)
    table = pd.read_csv(memorisation.measure_result(profile, "v1", "celeba", True).path)
    images = sorted(layout.generation_cache_dir(profile).rglob("*.png"))
    return summary, table, images


def test_released_memorisation_images_leave_the_same_table_and_are_drawn_again_on_demand(memorisation_world):
    from genlineage import layout
    from genlineage.experiments import memorisation

    profile = memorisation_world
    kept_summary, kept_table, kept_images = _measure(keep=True)
    assert len(kept_images) == (3 + 2) * 2, "every caption at every memorisation seed"
    shutil.rmtree(layout.generation_cache_dir(profile))
    memorisation.measure_result(profile, "v1", "celeba", True).path.unlink()

    summary, table, images = _measure(keep=False)
    assert images == [], "the cache holds none of the memorisation images"
    pd.testing.assert_frame_equal(table, kept_table)
    assert summary == kept_summary
    examples = memorisation.reconstruction_examples(_profile(keep=False), "v1", "celeba", n=2)
    assert examples["source"].shape == (2, 32, 32, 3)
