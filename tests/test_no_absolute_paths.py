"""What the committed notebooks print holds no absolute path: a path says where one machine keeps
the checkout, changes on every other machine (so nbval would flag it) and helps no reader."""
from __future__ import annotations

from pathlib import Path

import pytest

from genlineage.config import load_profile
from genlineage.data import build_datasets
from genlineage.experiments.datasets import dataset_table
from genlineage import layout


def _no_absolute_cell(table) -> None:
    cells = [str(v) for v in table.to_numpy().ravel()]
    assert not [c for c in cells if c.startswith("/") or ":\\" in c], "a cell holds an absolute path"


def test_the_dataset_table_shows_paths_under_the_data_root(smoke_profile):
    folders = build_datasets(smoke_profile, progress=False)
    table = dataset_table(smoke_profile, folders)
    _no_absolute_cell(table)
    assert set(table.path) == {f"<data root>/datasets/{name}" for name in folders}


def test_the_dataset_table_shows_paths_relative_to_the_checkout(tmp_path, monkeypatch):
    """The committed (tiny) run keeps its data in the checkout's data/<profile>/."""
    monkeypatch.setattr(layout, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    profile = load_profile("smoke")
    folders = build_datasets(profile, progress=False)
    table = dataset_table(profile, folders)
    _no_absolute_cell(table)
    assert set(table.path) == {f"data/smoke/datasets/{name}" for name in folders}


@pytest.mark.parametrize("where, expected", [("inside", "data/tiny/models/v1"), ("data", "<data root>/models/v1"),
                                             ("elsewhere", "v1")])
def test_shown_path_is_never_absolute(tmp_path, monkeypatch, where, expected):
    monkeypatch.setattr(layout, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "ext"))
    profile = load_profile("tiny")
    path = {"inside": tmp_path / "repo" / "data" / "tiny" / "models" / "v1",
            "data": tmp_path / "ext" / "tiny" / "models" / "v1",
            "elsewhere": Path("/somewhere/else/v1")}[where]
    assert layout.shown_path(path, profile) == expected
