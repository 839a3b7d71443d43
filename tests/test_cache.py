"""The one cache rule (genlineage.cache) on constructed cases: what is fresh, what is stale and
why, and that a result and its stamp never disagree after an interruption."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from genlineage.cache import MISSING, STAMP, Result, StaleResult, array_id, content_id, listing_id, stale


def _folder(root, files: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_content_id_follows_bytes_not_place_or_stamps(tmp_path):
    a = _folder(tmp_path / "a", {"w.safetensors": b"1234", "sub/c.json": b"{}"})
    b = _folder(tmp_path / "b", {"w.safetensors": b"1234", "sub/c.json": b"{}"})
    assert content_id(a) == content_id(b), "same files elsewhere: same id"
    (b / STAMP).write_text("{}")
    (b / ".w.safetensors.x.part").write_bytes(b"leftover")
    assert content_id(a) == content_id(b), "stamps and hidden leftovers are not content"
    (b / "w.safetensors").write_bytes(b"1235")
    assert content_id(a) != content_id(b), "one changed byte changes the id"
    (tmp_path / "c").mkdir()
    assert content_id(tmp_path / "c") != content_id(a)
    (a / "extra").write_bytes(b"")
    assert content_id(a) != content_id(_folder(tmp_path / "d", {"w.safetensors": b"1234", "sub/c.json": b"{}"}))
    assert content_id(tmp_path / "nowhere") == MISSING
    assert content_id(a, parts=["sub"]) == content_id(b, parts=["sub"]), "parts: only those sub-folders count"


def test_listing_and_array_ids_see_changes(tmp_path):
    root = _folder(tmp_path / "release", {"img/1.jpg": b"x"})
    before = listing_id(root)
    (root / "img" / "2.jpg").write_bytes(b"y")
    assert listing_id(root) != before
    x = np.zeros((2, 3), dtype=np.uint8)
    assert array_id(["p"], x) == array_id(["p"], x.copy())
    assert array_id(["p"], x) != array_id(["q"], x)
    assert array_id(["p"], x) != array_id(["p"], x.astype(np.float32)), "dtype is part of the content"
    y = x.copy()
    y[1, 2] = 1
    assert array_id(["p"], x) != array_id(["p"], y)


def test_a_file_result_is_fresh_only_for_its_inputs_and_names_what_changed(tmp_path):
    r = Result(tmp_path / "t.csv", {"data": "abc", "seed": 1})
    assert not r.fresh() and r.changed_inputs() == ["(missing)"]
    r.write(lambda tmp: tmp.write_text("a,b\n1,2\n"), note="kept")
    assert r.fresh() and r.extra() == {"note": "kept"}
    assert Result(tmp_path / "t.csv", {"seed": 1, "data": "abc"}).fresh(), "order of inputs does not matter"
    assert Result(tmp_path / "t.csv", {"data": "abc", "seed": 2}).changed_inputs() == ["seed"]
    assert Result(tmp_path / "t.csv", {"data": "abc", "seed": 1, "new": 0}).changed_inputs() == ["new"]
    assert Result(tmp_path / "t.csv", {"data": "abc", "seed": (1,)}).changed_inputs() == ["seed"]
    assert stale([r, Result(tmp_path / "t.csv", {"data": "x", "seed": 1})]) == [tmp_path / "t.csv"]


def test_a_file_rewritten_without_its_stamp_reads_as_stale(tmp_path):
    """A run killed after renaming the new file but before its stamp: the old stamp's hash no
    longer matches, so the pair is redone rather than trusted."""
    r = Result(tmp_path / "t.csv", {"k": 1})
    r.write(lambda tmp: tmp.write_text("old\n"))
    (tmp_path / "t.csv").write_text("new\n")
    assert r.changed_inputs() == ["(content)"]
    with pytest.raises(StaleResult, match=r"t\.csv.*\(content\) changed"):
        r.require()


def test_a_damaged_stamp_means_redo(tmp_path):
    r = Result(tmp_path / "t.csv", {"k": 1})
    r.write(lambda tmp: tmp.write_text("x\n"))
    r.stamp_path.write_text("{not json")
    assert not r.fresh()
    r.stamp_path.write_text("[1, 2]")
    assert not r.fresh()


def test_a_folder_result_appears_with_its_stamp_or_not_at_all(tmp_path):
    r = Result(tmp_path / "model", {"base": "b1"}, folder=True)
    with pytest.raises(RuntimeError):
        with r.building() as tmp:
            (tmp / "w").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not (tmp_path / "model").exists() and list(tmp_path.iterdir()) == []
    with r.building() as tmp:
        (tmp / "w").write_bytes(b"whole")
    assert r.fresh() and json.loads((tmp_path / "model" / STAMP).read_text())["inputs"] == {"base": "b1"}
    assert not Result(tmp_path / "model", {"base": "b2"}, folder=True).fresh()
    shutil.rmtree(tmp_path / "model")
    assert not r.fresh()


def test_require_names_the_missing_table_and_who_makes_it(tmp_path):
    r = Result(tmp_path / "table1.csv", {"k": 1}, made_by="notebook 05_statistical_attribution")
    with pytest.raises(StaleResult, match=r"table1\.csv is missing.*re-run notebook 05_statistical_attribution"):
        r.require()
    r.write(lambda tmp: tmp.write_text("x\n"))
    assert r.require() == tmp_path / "table1.csv"
    with pytest.raises(StaleResult, match=r"\(k changed\); re-run notebook 05"):
        Result(tmp_path / "table1.csv", {"k": 2}, made_by="notebook 05_statistical_attribution").require()


def test_wrong_kind_of_write_is_refused(tmp_path):
    with pytest.raises(TypeError):
        Result(tmp_path / "f", {}, folder=True).write(lambda tmp: None)
    with pytest.raises(TypeError):
        with Result(tmp_path / "f", {}).building():
            pass


def test_a_large_files_hash_is_remembered_across_processes_and_forgotten_when_it_changes(tmp_path, monkeypatch):
    """A new process (an empty per-process memo) reads the remembered hash instead of the weights;
    a rewrite of the file (same size, even with its mtime set back) is hashed again."""
    import os

    from genlineage import cache

    monkeypatch.setenv(cache.HASH_MEMO_ENV, str(tmp_path / "memo"))
    weights = tmp_path / "model" / "unet.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"a" * cache.REMEMBERED_MIN_BYTES)
    first = cache.content_id(weights.parent)
    assert len(list((tmp_path / "memo").iterdir())) == 1

    cache._CONTENT.clear()  # what a new process starts with
    monkeypatch.setattr(cache, "file_sha256", lambda path: (_ for _ in ()).throw(AssertionError(f"re-read {path}")))
    assert cache.content_id(weights.parent) == first

    monkeypatch.undo()
    monkeypatch.setenv(cache.HASH_MEMO_ENV, str(tmp_path / "memo"))
    st = weights.stat()
    weights.write_bytes(b"b" * cache.REMEMBERED_MIN_BYTES)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: ctime still moves
    cache._CONTENT.clear()
    assert cache.content_id(weights.parent) != first


def test_hashes_are_not_remembered_when_switched_off(tmp_path, monkeypatch):
    from genlineage import cache

    monkeypatch.setenv(cache.HASH_MEMO_ENV, "off")
    big = tmp_path / "w.safetensors"
    big.write_bytes(b"a" * cache.REMEMBERED_MIN_BYTES)
    assert cache.remembered_sha256(big) == cache.file_sha256(big) and cache.hash_memo_dir() is None


def _package(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def test_code_id_follows_the_code_a_result_is_computed_by_not_where_it_lies(tmp_path, monkeypatch):
    """Issue 25.1: a result's key names the modules that compute it, so an edit to them makes it
    stale without anyone bumping a version; a clone elsewhere keeps the key."""
    from genlineage.cache import code_id

    files = {"__init__.py": "", "rule.py": "THRESHOLD = 0.05\n"}
    here, there = _package(tmp_path / "a", "planted_rule", files), _package(tmp_path / "b", "planted_rule", files)
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    first = code_id("planted_rule")
    assert first == code_id("planted_rule") and code_id("planted_rule") != code_id("planted_rule.rule")
    (here / "rule.py").write_text("THRESHOLD = 0.01\n")
    assert code_id("planted_rule") != first, "an edit to the code changes the key"
    (here / "rule.py").write_text(files["rule.py"])
    (here / "extra.py").write_text("")
    assert code_id("planted_rule") != first, "a module added to the package changes the key"
    (here / "extra.py").unlink()
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    for name in [n for n in sys.modules if n.startswith("planted_rule")]:
        monkeypatch.delitem(sys.modules, name)
    assert code_id("planted_rule") == first and there.exists(), "the same code elsewhere has the same key"
    with pytest.raises(ValueError, match="no module named"):
        code_id("planted_rule_missing")


def test_no_stage_result_carries_a_version_bumped_by_hand():
    """Every stage result that used a hand-bumped ``format`` names its code instead."""
    import re

    stages = Path(__file__).resolve().parents[1] / "lib" / "genlineage" / "experiments"
    bumped = [f"{f.name}:{i}" for f in sorted(stages.glob("*.py"))
              for i, line in enumerate(f.read_text().splitlines(), 1) if re.search(r'"format":\s*\d', line)]
    assert not bumped, f"hand-bumped cache versions: {bumped}"
