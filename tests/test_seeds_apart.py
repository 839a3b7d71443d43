"""The seeds that make key references and the seeds that query suspects never meet.

A Strategy 2 reference is the source's generation at one of its seeds; a suspect queried at that
seed starts from the reference's own initial noise, and every model tuned from the same base then
gets part of its distance from shared noise instead of inherited memory. The profiles name two
disjoint lists (``attribution.key_seeds``, ``attribution.query_seeds``); these tests check that the
profiles keep them apart, that the helper refuses overlaps, and, by spying on every generation,
that stage 04 and ``genlineage verify`` make references only at key seeds and query only at query
seeds."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import CAPTIONS
from genlineage.config import Profile, check_seeds_apart, load_profile
from genlineage.data.imagefolder import write_imagefolder
from genlineage.errors import InputError
from genlineage.keys import profile_seeds, reference_seeds
from genlineage.key_sets import KeySet

SIZE = 32


def _image(model: str, prompt: str, seed: int) -> np.ndarray:
    """A deterministic picture per (model, prompt, seed): what a fake generator returns."""
    rng = np.random.default_rng([sum(map(ord, model)), sum(map(ord, prompt)), int(seed)])
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


class Spy:
    """Stands in for ``generate_cached`` and records which model was asked at which seed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, components, prompts, seeds, cfg, cache, progress=False) -> np.ndarray:
        name = str(components)
        self.calls += [(name, p, int(s)) for p, s in zip(prompts, seeds)]
        return np.stack([_image(name, p, s) for p, s in zip(prompts, seeds)])

    def seeds(self, *models: str) -> set[int]:
        return {s for m, _, s in self.calls if m in models}


# --- the profiles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smoke", "tiny", "paper"])
def test_profiles_keep_key_and_query_seeds_apart(name):
    att = load_profile(name)["attribution"]
    assert "seeds" not in att, "one list for both roles is what this replaced"
    key_seeds, query_seeds = set(att["key_seeds"]), set(att["query_seeds"])
    assert len(key_seeds) >= 2 and len(query_seeds) >= 1
    assert not key_seeds & query_seeds
    assert profile_seeds(load_profile(name)) == ([int(s) for s in att["key_seeds"]], [int(s) for s in att["query_seeds"]])


# --- the helper -------------------------------------------------------------------------------------

def _profile(**att) -> Profile:
    return Profile({"name": "probe", "attribution": att})


def test_overlapping_seeds_are_refused_with_the_profile_keys_named():
    with pytest.raises(InputError, match=r"share \[1\].*attribution.key_seeds and attribution.query_seeds"):
        profile_seeds(_profile(key_seeds=[1, 2], query_seeds=[0, 1]))
    with pytest.raises(InputError, match="share"):
        check_seeds_apart([5, 6], [6])
    check_seeds_apart([5, 6], [0, 1])  # apart: no error


def test_too_few_key_seeds_a_missing_list_or_the_old_key_are_refused():
    with pytest.raises(InputError, match="fewer than 2"):
        profile_seeds(_profile(key_seeds=[1000], query_seeds=[0]))
    with pytest.raises(InputError, match="query_seeds is empty"):
        profile_seeds(_profile(key_seeds=[1000, 1001], query_seeds=[]))
    with pytest.raises(InputError, match="attribution.query_seeds is missing"):
        profile_seeds(_profile(key_seeds=[1000, 1001]))
    with pytest.raises(InputError, match="attribution.seeds is gone"):
        profile_seeds(_profile(seeds=[0, 1]))
    assert profile_seeds(_profile(key_seeds=[1000, 1001], query_seeds=[0])) == ([1000, 1001], [0])


def _keyset(strategy: str = "generation", seeds=(1000, 1001), per_key: dict | None = None) -> KeySet:
    meta = {"strategy": strategy, "seeds": None if seeds is None else list(seeds)}
    if per_key:
        meta["per_key"] = per_key
    refs = np.stack([_image("source", CAPTIONS[i], 1000) for i in range(2)])
    return KeySet(strategy, CAPTIONS[:2], refs, [0, 1], [0.1, 0.2], meta)


def test_a_key_sets_reference_seeds_are_read_from_its_meta():
    from genlineage.verify.verdict import check_key_seeds

    assert reference_seeds(_keyset(per_key={"reference_seed": [1001, 1001]})) == [1000, 1001]
    assert reference_seeds(_keyset("random", seeds=None)) is None
    assert check_key_seeds(_keyset(), [0, 1]) == [1000, 1001]
    assert check_key_seeds(_keyset("random", seeds=None), [0, 1]) is None  # real images, no seed made them
    with pytest.raises(InputError, match="share"):  # a reference drawn at a query seed, recorded per key
        check_key_seeds(_keyset(seeds=None, per_key={"reference_seed": [1000, 1]}), [0, 1])
    with pytest.raises(InputError, match="records no seeds"):
        check_key_seeds(_keyset(seeds=None), [0, 1])


# --- stage 04 ---------------------------------------------------------------------------------------

def _stage04_world(P: Profile, monkeypatch, tmp_path) -> tuple[Spy, dict]:
    """Stage 04 on fakes: one source (its base too) and one suspect, folders holding only their
    stamp; candidates given; every generation answered by the spy."""
    from genlineage.study import queries as stage

    spy = Spy()
    monkeypatch.setattr("genlineage.keys.generate_cached", spy)
    monkeypatch.setattr("genlineage.reconstruction.generate_cached", spy)
    monkeypatch.setattr(stage, "load_model", lambda profile, path: Path(path).name)
    folders = {}
    for name in ("source", "suspect"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "genlineage.json").write_text(json.dumps({"stage_key": name}))
    monkeypatch.setattr(stage, "source_table", lambda profile: pd.DataFrame(
        {"source": ["src"], "path": [str(folders["source"])], "domain": ["d"], "base": ["v1"]}))
    images = np.stack([_image("data", c, 0) for c in CAPTIONS[:6]])
    monkeypatch.setattr(stage, "candidates", lambda profile, row: (list(CAPTIONS[:6]), images))
    monkeypatch.setattr(stage, "_watermark_conf", lambda profile, row, images: {})
    return spy, {"name": "suspect0", "path": str(folders["suspect"]), "source": "src"}


def test_stage04_makes_references_at_key_seeds_and_queries_at_query_seeds(smoke_profile, monkeypatch, tmp_path):
    from genlineage.study.queries import build_keys, keys_dir, load_keys, query_model

    P = smoke_profile
    key_seeds, query_seeds = P["attribution"]["key_seeds"], P["attribution"]["query_seeds"]
    spy, row = _stage04_world(P, monkeypatch, tmp_path)

    build_keys(dict(P), "src")
    assert spy.seeds("source", "base_v1") == set(key_seeds)
    assert spy.seeds("suspect") == set()
    keys = load_keys(P, "src")
    assert keys["generation"].meta["seeds"] == keys["detection"].meta["seeds"] == key_seeds
    assert set(keys["generation"].meta["per_key"]["reference_seed"]) <= set(key_seeds)
    assert json.loads((keys_dir(P, "src", "generation") / "_stamp.json").read_text())["inputs"]["key_seeds"] == key_seeds

    spy.calls.clear()
    per_sample = pd.read_csv(query_model(dict(P), row)["per_model"])
    assert spy.seeds("suspect") == set(query_seeds) and spy.seeds("source", "base_v1") == set()
    asked = {(p, s) for m, p, s in spy.calls}
    assert asked == {(p, s) for k in keys.values() for p in k.prompts for s in query_seeds}
    assert set(per_sample.best_seed) <= set(query_seeds)
    assert not set(per_sample.best_seed) & set(key_seeds)


def test_stage04_queries_again_when_the_query_seeds_change(smoke_profile, monkeypatch, tmp_path):
    from genlineage.study.queries import build_keys, query_model

    P = smoke_profile
    spy, row = _stage04_world(P, monkeypatch, tmp_path)
    build_keys(dict(P), "src")
    query_model(dict(P), row)
    spy.calls.clear()
    query_model(dict(P), row)
    assert spy.calls == [], "same seeds: the per-model table is reused"
    other = copy.deepcopy(dict(P))
    other["attribution"]["query_seeds"] = [7, 8, 9]
    query_model(other, row)
    assert spy.seeds("suspect") == {7, 8, 9}, "the per-model stamp must hold the query seeds"


# --- genlineage verify ------------------------------------------------------------------------------

def _callable(name: str, calls: list):
    def generate(prompt: str, seed: int) -> np.ndarray:
        calls.append((name, prompt, int(seed)))
        return _image(name, prompt, seed)

    generate.__qualname__ = f"fake {name}"  # verify caches a callable's images under this name
    return generate


def test_verify_selects_keys_at_key_seeds_and_queries_every_model_at_query_seeds(saved_pipeline, monkeypatch, tmp_path):
    from genlineage.verify import verify, write_report

    P = load_profile("smoke")
    key_seeds, query_seeds = P["attribution"]["key_seeds"], P["attribution"]["query_seeds"]
    spy = Spy()
    monkeypatch.setattr("genlineage.keys.generate_cached", spy)
    monkeypatch.setattr("genlineage.reconstruction.generate_cached", spy)
    write_imagefolder(tmp_path / "key_data", [(_image("data", c, 0), c, {}) for c in CAPTIONS[:6]])
    queried: list = []
    v = verify(saved_pipeline, _callable("suspect", queried), key_data=tmp_path / "key_data", strategy="generation",
               innocent_shadows=[_callable("shadow a", queried), _callable("shadow b", queried)], n_keys=4,
               profile=P, out=tmp_path / "out", target_fpr=0.5, delta0=0.1, progress=False)
    assert spy.calls and {s for _, _, s in spy.calls} == set(key_seeds), "the source drew references at key seeds"
    assert {m for m, _, _ in queried} == {"suspect", "shadow a", "shadow b"}
    assert {s for _, _, s in queried} == set(query_seeds), "suspect and shadows are asked at query seeds only"
    assert KeySet.load(tmp_path / "out" / "keys").meta["seeds"] == key_seeds
    assert set(v.keys.best_seed) <= set(query_seeds)
    write_report(v, tmp_path / "out")
    settings = json.loads((tmp_path / "out" / "verdict.json").read_text())["settings"]
    assert settings["key_seeds"] == key_seeds and settings["query_seeds"] == query_seeds


def test_verify_refuses_a_prebuilt_key_set_made_at_a_query_seed_before_any_query(saved_pipeline, tmp_path, capsys):
    from genlineage.cli import main
    from genlineage.verify import verify

    P = load_profile("smoke")
    made_at_query_seeds = _keyset(seeds=P["attribution"]["query_seeds"]).save(tmp_path / "keys")
    queried: list = []
    with pytest.raises(InputError, match=r"key set's key seeds \[0, 1\] and query seeds \[0, 1\] share"):
        verify(saved_pipeline, _callable("suspect", queried), keys=made_at_query_seeds,
               innocent_shadows=[_callable("shadow a", queried), _callable("shadow b", queried)],
               profile=P, out=tmp_path / "out", progress=False)
    assert queried == [], "refused before the suspect or a shadow is asked anything"

    api = tmp_path / "api.py"
    api.write_text("import numpy as np\n\ndef generate(prompt, seed):\n    return np.zeros((32, 32, 3), np.uint8)\n")
    (tmp_path / "controls").mkdir()  # exists (the CLI's pre-check passes); never read: the key set is refused first
    code = main(["verify", "--source", str(saved_pipeline), "--keys", str(made_at_query_seeds), "--profile", "smoke",
                 "--quiet", "--out", str(tmp_path / "cli"), "--controls", str(tmp_path / "controls"),
                 "--suspect-callable", f"{api}:generate"])
    assert code == 2 and "attribution.key_seeds and attribution.query_seeds disjoint" in capsys.readouterr().err
