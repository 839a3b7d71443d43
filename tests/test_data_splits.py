"""Splits: roles disjoint by id and by image content, duplication as configured, cached builds."""
from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest

from genlineage.config import load_profile
from genlineage.data import (build_datasets, check_disjoint, load_pretrain_folder, load_split_folder, make_splits,
                             pretrain_subset, read_imagefolder, role_entries, splits_path)
from genlineage.data.splits import PRETRAIN_OFFSET, ROLES
from genlineage.errors import InputError

SMALL_DOMAIN = {"source": 6, "heldout": 3, "suspicious_pool": 5, "shadow_pool": 5}


def small_profile(**extra):
    overrides = {
        "data": {
            "image_size": 16,
            "domains": {
                "celeba": {**SMALL_DOMAIN, "duplication": {"rate": 0.5, "copies": 3}},
                "cc3m": dict(SMALL_DOMAIN),
            },
            "pretrain": {"n": 12, "mix": {"faces": 0.5, "scenes": 0.5}},
        }
    }
    overrides.update(extra)
    return load_profile("tiny", overrides=overrides)


def test_make_splits_counts_and_determinism():
    p = small_profile()
    a, b = make_splits(p), make_splits(p)
    assert a == b
    json.dumps(a)  # serialisable
    for dom in ("celeba", "cc3m"):
        for role in ROLES:
            assert len(a["domains"][dom]["roles"][role]) == SMALL_DOMAIN[role]
    assert a["domains"]["celeba"]["roles"]["source"][0].startswith("faces:")
    assert a["domains"]["cc3m"]["roles"]["source"][0].startswith("scenes:")
    assert a["pretrain"]["n"] == 12 and a["pretrain"]["mix"] == {"faces": 6, "scenes": 6}
    assert all(int(i.split(":")[1]) >= PRETRAIN_OFFSET for i in a["pretrain"]["ids"])
    assert pretrain_subset(a, "v1") == (0, 9) and pretrain_subset(a, "v2") == (3, 12)
    check_disjoint(a)
    # a different seed changes the seeded choices (duplication, pre-training order)
    c = make_splits(load_profile("tiny", overrides={**p, "seed": 5}))
    assert c["pretrain"]["ids"] != a["pretrain"]["ids"]


def test_duplication():
    s = make_splits(small_profile())
    dup = s["domains"]["celeba"]["duplication"]
    assert dup["copies"] == 3 and len(dup["ids"]) == 3
    assert set(dup["ids"]) <= set(s["domains"]["celeba"]["roles"]["source"])
    entries = role_entries(s, "celeba", "source")
    assert len(entries) == 6 + 3 * 2
    assert all(entries.count(i) == 3 for i in dup["ids"])
    assert s["domains"]["cc3m"]["duplication"]["ids"] == []
    assert role_entries(s, "celeba", "heldout") == s["domains"]["celeba"]["roles"]["heldout"]


def test_check_disjoint_raises_on_overlap():
    s = make_splits(small_profile())
    bad = copy.deepcopy(s)
    stolen = bad["domains"]["celeba"]["roles"]["source"][0]
    bad["domains"]["celeba"]["roles"]["shadow_pool"].append(stolen)
    with pytest.raises(InputError, match="celeba/source") as info:
        check_disjoint(bad)
    assert stolen in str(info.value) and "celeba/shadow_pool" in str(info.value)
    bad = copy.deepcopy(s)
    bad["pretrain"]["ids"].append(s["domains"]["cc3m"]["roles"]["heldout"][0])
    with pytest.raises(InputError, match="pretrain"):
        check_disjoint(bad)


@pytest.mark.parametrize("override, needle", [
    ({"data": {"domains": {"celeba": {"kind": "nonsense"}}}}, "kind"),
    ({"data": {"domains": {"celeba": {"source": -1}}}}, "celeba.source"),
    ({"data": {"domains": {"celeba": {"duplication": {"rate": 2.0, "copies": 2}}}}}, "duplication"),
    ({"data": {"pretrain": {"mix": {"faces": 1.0, "cats": 1.0}}}}, "mix"),
    ({"models": {"bases": {"v1": {"pretrain_subset": [0.8, 0.2]}}}}, "pretrain_subset"),
    ({"data": {"domains": {"celeba": {"kind": "celeba_dialog"}}}}, "build_datasets"),
])
def test_bad_profiles(override, needle):
    p = small_profile()
    from genlineage.config import _merge

    with pytest.raises(InputError, match=needle):
        make_splits(_merge(dict(p), override))


def _hash(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def test_build_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path))
    p = small_profile()
    folders = build_datasets(p, progress=False)
    root = tmp_path / "tiny" / "datasets"
    expected = {f"{d}_{r}" for d in ("celeba", "cc3m") for r in ROLES} | {"pretrain"}
    assert set(folders) == expected
    assert all(folders[k] == root / k for k in expected)
    splits = json.loads(splits_path(p).read_text())
    assert splits_path(p) == tmp_path / "tiny" / "splits.json"
    check_disjoint(splits)

    owner: dict[str, str] = {}
    for name in sorted(expected):
        folder = read_imagefolder(folders[name], size=16)
        domain, _, role = name.partition("_")
        want = role_entries(splits, "pretrain" if name == "pretrain" else domain, role or None)
        assert [r["id"] for r in folder.records] == want
        assert all("attributes" in r and "domain" in r for r in folder.records)
        images = folder.load_images()
        by_id = {}
        for rec, img in zip(folder.records, images):
            h = _hash(np.rint(img * 255).astype(np.uint8))
            by_id.setdefault(rec["id"], set()).add(h)
            assert owner.setdefault(h, name) == name, f"the same image is in {owner[h]} and {name}"
        assert all(len(hs) == 1 for hs in by_id.values())  # duplicated copies are identical images
    assert len(load_split_folder(p, "celeba", "source")) == 12
    assert len(load_pretrain_folder(p)) == 12 and len(load_pretrain_folder(p, "v2")) == 9
    cap = read_imagefolder(folders["celeba_source"]).records[0]
    assert cap["domain"] == "celeba" and "hidden" in cap["attributes"]

    # cached: the second build rewrites nothing
    before = {k: (v / "_stamp.json").stat().st_mtime_ns for k, v in folders.items()}
    inode = (folders["pretrain"] / "000000.png").stat().st_ino
    build_datasets(p, progress=False)
    assert before == {k: (v / "_stamp.json").stat().st_mtime_ns for k, v in folders.items()}
    assert (folders["pretrain"] / "000000.png").stat().st_ino == inode

    # changing the image size rebuilds
    p2 = small_profile()
    p2["data"]["image_size"] = 20
    build_datasets(p2, progress=False)
    assert read_imagefolder(folders["cc3m_heldout"], size=20)


def test_load_split_folder_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path))
    with pytest.raises(InputError, match="build_datasets"):
        load_split_folder(small_profile(), "celeba", "source")
