"""Key-sample selection: the pure rules on constructed cases, persistence, and the three
strategies end to end on the tiny test pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genlineage.errors import InputError
from genlineage.generation import GenerationCache, GenerationConfig
from genlineage.keys import (detection_keys, generation_keys, generation_scores, medoid, random_keys, select_lowest,
                             select_random, self_consistency)
from genlineage.key_sets import KEYS_FILE, KeySet
from genlineage.models.pipeline_io import load_pipeline

from conftest import CAPTIONS, make_components

CFG = GenerationConfig(steps=2, batch=8)
SEEDS = [0, 1]


def _flat(value: float, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.float32)


def test_select_lowest_picks_the_planted_memorised_sample_first_and_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.1, 0.2, 50)
    scores[37] = 0.01  # the memorised one
    scores[[5, 12]] = 0.05  # a tie: the lower index first
    assert select_lowest(scores, 3).tolist() == [37, 5, 12]
    assert select_lowest(np.array([0.3, np.nan, 0.1]), 3).tolist() == [2, 0, 1]  # NaN last
    with pytest.raises(ValueError, match="candidates"):
        select_lowest(scores, 51)


def test_self_consistency_ranks_a_prompt_with_identical_generations_first():
    rng = np.random.default_rng(1)
    images = rng.random((3, 4, 8, 8, 3)).astype(np.float32)
    images[2] = images[2, 0]  # prompt 2: every seed draws the same image
    cons = self_consistency(images)
    assert cons.shape == (3,) and np.isclose(cons[2], 0.0)
    assert select_lowest(cons, 1).tolist() == [2]
    # mean over the S(S-1)/2 pairs
    a, b, c = _flat(0.0), _flat(0.3), _flat(0.6)
    assert np.isclose(self_consistency(np.stack([a, b, c])[None])[0], (0.3 + 0.6 + 0.3) / 3)


def test_medoid_is_one_of_the_close_images():
    a = _flat(0.2)
    images = np.stack([_flat(0.9), a, a + 0.01])
    assert medoid(images) in (1, 2)
    assert medoid(images, "tiled_l2") in (1, 2)


def test_relative_to_base_demotes_a_prompt_every_model_draws_alike():
    rng = np.random.default_rng(2)
    same = np.repeat(_flat(0.5)[None], 3, axis=0)            # identical over seeds
    varied = rng.random((3, 8, 8, 3)).astype(np.float32)      # different over seeds
    source = np.stack([same, same])        # S draws both prompts consistently
    base = np.stack([same, varied])        # the base only prompt 0
    plain, _, _ = generation_scores(source)
    assert select_lowest(plain, 1).tolist() == [0]  # a tie, resolved by index
    relative, cons_s, cons_b = generation_scores(source, "l2", base)
    assert np.allclose(cons_s, 0) and cons_b[1] > 0.1
    assert select_lowest(relative, 2).tolist() == [1, 0]


def test_random_selection_is_seeded_and_without_replacement():
    a = select_random(100, 30, seed=7)
    assert a.tolist() == select_random(100, 30, seed=7).tolist()
    assert len(set(a.tolist())) == 30 and a.min() >= 0 and a.max() < 100
    assert a.tolist() != select_random(100, 30, seed=8).tolist()
    assert select_random(100, 20, seed=7).tolist() == a[:20].tolist()  # N = 20 nests in N = 30
    with pytest.raises(ValueError):
        select_random(5, 6, seed=0)


def _keyset(n: int = 5) -> KeySet:
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    meta = {"strategy": "detection", "n": n, "seeds": [0, 1], "distance": "l2",
            "per_key": {"best_seed": list(range(n))}}
    return KeySet("detection", [f"prompt {i}" for i in range(n)], refs, [9, 4, 7, 1, 0][:n],
                  np.array([0.01, 0.02, np.nan, 0.04, 0.05][:n]), meta)


def test_keyset_round_trips_through_an_image_folder(tmp_path):
    keys = _keyset()
    keys.save(tmp_path / "keys")
    rows = [json.loads(line) for line in (tmp_path / "keys" / "metadata.jsonl").read_text().splitlines()]
    assert {"file_name", "text", "strategy", "index", "score", "best_seed"} <= set(rows[0])
    assert rows[2]["score"] is None  # NaN stored as null: strict JSON
    assert (tmp_path / "keys" / KEYS_FILE).is_file()
    back = KeySet.load(tmp_path / "keys")
    assert back.strategy == "detection" and back.prompts == keys.prompts and back.indices == keys.indices
    assert np.array_equal(back.references, keys.references) and back.references.dtype == np.uint8
    assert np.allclose(back.scores, keys.scores, equal_nan=True)
    assert back.meta == keys.meta


def test_keyset_records_its_reference_size_and_still_reads_key_sets_saved_before_it_did(tmp_path):
    refs = np.random.default_rng(6).integers(0, 256, (2, 12, 20, 3), dtype=np.uint8)  # not square: H != W
    keys = KeySet("random", ["a", "b"], refs, [1, 0], [np.nan, np.nan], {"seed": 0})
    keys.save(tmp_path / "keys")
    stamp_path = tmp_path / "keys" / KEYS_FILE
    stamp = json.loads(stamp_path.read_text())
    assert stamp["image_size"] == [12, 20]  # [height, width]
    assert np.array_equal(KeySet.load(tmp_path / "keys").references, refs)
    del stamp["image_size"]  # as KeySet.save wrote it before the size was recorded
    stamp_path.write_text(json.dumps(stamp))
    assert np.array_equal(KeySet.load(tmp_path / "keys").references, refs)


def test_loading_a_plain_image_folder_as_keys_names_it(tmp_path):
    from genlineage.data.imagefolder import write_imagefolder

    write_imagefolder(tmp_path / "plain", [(np.zeros((8, 8, 3), np.uint8), "a caption", {})])
    with pytest.raises(InputError, match="plain"):
        KeySet.load(tmp_path / "plain")


def test_subsets_nest():
    keys = _keyset()
    three, two = keys.subset(3), keys.subset(2)
    assert three.prompts == keys.prompts[:3] and three.indices == keys.indices[:3]
    assert np.array_equal(two.references, three.references[:2])
    assert three.meta["per_key"]["best_seed"] == [0, 1, 2] and three.meta["n"] == 3
    assert keys.meta["n"] == 5  # the original is untouched
    with pytest.raises(ValueError):
        keys.subset(6)


def _ordered(scores: np.ndarray) -> bool:
    return bool(np.all(np.diff(scores) >= 0))


def test_detection_keys_on_the_tiny_pipeline(saved_pipeline, tmp_path):
    comp = load_pipeline(saved_pipeline)
    prompts = CAPTIONS[:4]
    images = np.random.default_rng(4).random((4, 32, 32, 3)).astype(np.float32)
    keys = detection_keys(comp, prompts, images, 3, SEEDS, CFG, GenerationCache(tmp_path / "cache"), chunk=3)
    assert len(keys) == 3 and keys.references.shape == (3, 32, 32, 3) and keys.references.dtype == np.uint8
    assert _ordered(keys.scores) and len(set(keys.indices)) == 3
    k = keys.indices[0]
    assert keys.prompts[0] == prompts[k]
    assert np.abs(keys.references[0].astype(int) - np.rint(images[k] * 255).astype(int)).max() == 0
    assert keys.meta["strategy"] == "detection" and keys.meta["seeds"] == SEEDS and keys.meta["distance"] == "l2"
    assert set(keys.meta["per_key"]["best_seed"]) <= set(SEEDS)


def test_generation_keys_on_the_tiny_pipeline(saved_pipeline):
    comp = load_pipeline(saved_pipeline)
    prompts = CAPTIONS[:4]
    keys = generation_keys(comp, prompts, 3, SEEDS, CFG, None, chunk=3)  # chunk < P: exercises the merge
    assert len(keys) == 3 and keys.references.shape == (3, 32, 32, 3)
    assert _ordered(keys.scores) and keys.meta["relative_to_base"] is False
    everything = generation_keys(comp, prompts, 4, SEEDS, CFG, None)
    assert everything.indices[:3] == keys.indices and np.allclose(everything.scores[:3], keys.scores)

    relative = generation_keys(comp, prompts, 3, SEEDS, CFG, None, base=make_components(1))
    assert relative.meta["relative_to_base"] is True and _ordered(relative.scores)
    pk = relative.meta["per_key"]
    assert np.allclose(relative.scores, np.array(pk["consistency_source"]) - np.array(pk["consistency_base"]))
    with pytest.raises(ValueError, match="base"):
        generation_keys(comp, prompts, 3, SEEDS, CFG, None, relative_to_base=True)


def test_random_keys_use_the_real_images():
    images = np.random.default_rng(5).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    keys = random_keys(CAPTIONS[:6], images, 4, seed=1)
    assert keys.indices == select_random(6, 4, seed=1).tolist()
    assert np.array_equal(keys.references, images[keys.indices])
    assert keys.prompts == [CAPTIONS[i] for i in keys.indices]
    assert np.isnan(keys.scores).all() and keys.meta["seed"] == 1
