"""A cached unit of work is one declared object, and its key is derived from its fields
(``genlineage.cached_job``): the key follows every input and nothing else, a path cannot slip in by
value, and no stage writes a cache key by hand."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from genlineage.cached_job import CachedJob, code_of, content, hashed, in_memory, not_an_input, output

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "genlineage"


@dataclasses.dataclass(frozen=True)
class ToyJob(CachedJob):
    out: Path = output()
    data: Path = content()
    steps: int = 1
    rows: tuple[str, ...] = hashed(default=("a", "b"))
    note: str | None = None
    device: str = not_an_input(default="cpu")


def _data(folder: Path, text: str = "x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "f.txt").write_text(text)
    return folder


def test_the_key_follows_every_declared_input_and_nothing_else(tmp_path):
    job = ToyJob(tmp_path / "out.csv", _data(tmp_path / "d"))
    key = job.inputs()
    assert set(key) == {"data", "steps", "rows"}, "out, device and a None input are not in the key"
    assert dataclasses.replace(job, device="cuda").inputs() == key
    assert dataclasses.replace(job, out=tmp_path / "elsewhere.csv").inputs() == key
    assert dataclasses.replace(job, steps=2).inputs() != key
    assert dataclasses.replace(job, rows=("a", "c")).inputs() != key
    assert dataclasses.replace(job, note="n").inputs() == {**key, "note": "n"}
    moved = dataclasses.replace(job, data=_data(tmp_path / "copy"))
    assert moved.inputs() == key, "a folder is named by its bytes, not where it lies"
    _data(tmp_path / "copy", "y")
    assert dataclasses.replace(job, data=tmp_path / "copy").inputs() != key


def test_a_result_written_under_the_job_stays_fresh_until_an_input_changes(tmp_path):
    job = ToyJob(tmp_path / "out.csv", _data(tmp_path / "d"))
    job.result().write(lambda tmp: tmp.write_text("table"))
    assert job.result().fresh()
    assert not dataclasses.replace(job, steps=3).result().fresh()
    _data(tmp_path / "d", "changed")
    assert not job.result().fresh()


def test_a_path_declared_by_value_is_refused(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class PathByValue(CachedJob):
        out: Path = output()
        data: Path = tmp_path

    with pytest.raises(TypeError, match="declare it with content"):
        PathByValue(tmp_path / "o").result()


def test_a_job_must_declare_exactly_one_output(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class NoOutput(CachedJob):
        steps: int = 1

    with pytest.raises(TypeError, match="output"):
        NoOutput().result()


def test_mappings_of_folders_code_and_memory_are_keyed_by_content(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Mixed(CachedJob):
        out: Path = output()
        keys: dict = content()
        code: tuple = code_of()
        pairs: tuple = in_memory()

    a, b = _data(tmp_path / "a", "1"), _data(tmp_path / "b", "2")
    job = Mixed(tmp_path / "o", {"s1": a, "s2": b}, ("genlineage.cached_job",), (["p"], [1, 2]))
    key = job.inputs()
    assert set(key["keys"]) == {"s1", "s2"} and key["keys"]["s1"] != key["keys"]["s2"]
    assert dataclasses.replace(job, code=("genlineage.cache",)).inputs()["code"] != key["code"]
    assert dataclasses.replace(job, pairs=(["p"], [1, 3])).inputs()["pairs"] != key["pairs"]


def test_no_module_writes_a_cache_key_by_hand():
    """Every cached result is made by a declared job: ``Result(...)`` is built only by the cache
    itself and by ``CachedJob.result``."""
    allowed = {PACKAGE / "cache.py", PACKAGE / "cached_job.py"}
    by_hand = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Result":
                by_hand.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert by_hand == []
