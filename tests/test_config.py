"""Profiles: the three exist, inherit, and carry the paper's numbers."""
from __future__ import annotations

import pytest

from genlineage.config import available_profiles, load_profile
from genlineage.errors import InputError


def test_three_profiles_share_one_schema():
    assert {"smoke", "tiny", "paper"} <= set(available_profiles())
    keys = None
    for name in ("smoke", "tiny", "paper"):
        p = load_profile(name)
        assert p.name == name
        top = set(p)
        keys = top if keys is None else keys
        assert {"data", "models", "training", "generation", "memorisation"} <= top


def test_paper_profile_has_the_papers_numbers():
    p = load_profile("paper")
    ft = p["training"]["finetune"]
    assert (ft["steps"], ft["batch"], ft["lr"], ft["lr_scheduler"]) == (3000, 2, 2e-6, "constant")
    assert p["data"]["image_size"] == 512
    assert p["data"]["domains"]["celeba"]["source"] == 3000
    assert p["data"]["domains"]["celeba"]["kind"] == "celeba_dialog"
    assert all("path" in b for b in p["models"]["bases"].values())


def test_overrides_and_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path))
    p = load_profile("tiny", {"training": {"finetune": {"steps": 7}}})
    assert p.get_path("training.finetune.steps") == 7
    assert p.get_path("training.finetune.batch") == load_profile("tiny").get_path("training.finetune.batch")
    assert p.data_root == tmp_path / "tiny"


def test_unknown_profile_is_named():
    with pytest.raises(InputError, match="'nope'.*choose one of"):
        load_profile("nope")
