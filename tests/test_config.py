"""Profiles: the three exist, inherit, and carry the paper's numbers."""
from __future__ import annotations

import pytest

from genlineage.config import available_profiles, load_profile
from genlineage.errors import InputError


def schema(node, prefix: str = "") -> dict[str, str]:
    """Every leaf of a profile as dotted path -> kind (number, text, flag, list, none): what two
    profiles must share for one code path to serve both."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in schema(value, f"{prefix}{key}.").items()}
    kind = ("flag" if isinstance(node, bool) else "number" if isinstance(node, (int, float)) else "text"
            if isinstance(node, str) else "list" if isinstance(node, list) else "none")
    return {prefix[:-1]: kind}


# What a profile may have beyond the tiny profile's schema: the paper's local folders, and the
# training settings its suspicious models override (``suspicious.train`` overrides
# ``training.finetune`` key by key), the size SD-2.1 must generate at.
EXTRA = {"smoke": {"about"}, "tiny_full": set(), "tyres": {"about"},
         "paper": {"data.domains.celeba.root", "data.domains.cc3m.root", "models.bases.v1.path", "models.bases.v2.path",
                   "suspicious.train.mixed_precision", "suspicious.train.gradient_checkpointing",
                   "generation.image_size", "training.finetune.frozen_dtype", "training.finetune.encode_batch",
                   "suspicious.train.frozen_dtype", "suspicious.train.encode_batch", "suspicious.lora.lr",
                   "models.keep_finetuned", "models.keep_memorisation_images"}}
EXTRA["paper_full"] = EXTRA["paper"]  # the paper's full grid: the paper profile with larger counts
# What a profile drops with a null (a base, a domain): every key below it may be absent.
DROPPED = {"tyres": ("models.bases.v1.", "data.domains.celeba.")}
# Leaves whose kind may differ: where a profile turns a setting off with null.
KIND_MAY_DIFFER = {"figures_dir", "tables_dir", "parallel_jobs"}  # parallel_jobs: a count or "auto"


def test_every_profile_has_the_tiny_profiles_schema():
    """Whole schemas: every key of the tiny profile in every profile, with the same kind of value,
    and nothing more than the stated extras (a misspelled key in a profile fails here)."""
    assert {"smoke", "tiny", "paper", "paper_full", "tiny_full", "tyres"} == set(available_profiles())
    tiny = schema(dict(load_profile("tiny")))
    for name, extra in EXTRA.items():
        other = schema(dict(load_profile(name)))
        assert set(other) - set(tiny) == extra, name
        missing = {k for k in set(tiny) - set(other) if not k.startswith(DROPPED.get(name, ()))}
        assert missing == set(), name
        differ = {k for k in tiny if k in other and tiny[k] != other[k] and other[k] != "none"} - KIND_MAY_DIFFER
        assert differ == set(), f"{name}: {sorted(differ)} hold another kind of value than in tiny"


def test_a_misspelled_or_unknown_key_is_refused_with_the_nearest_valid_one():
    from genlineage.errors import InputError

    with pytest.raises(InputError, match=r"attribution\.nkeys is not a setting.*did you mean 'n_keys'"):
        load_profile("tiny", {"attribution": {"nkeys": 30}})
    with pytest.raises(InputError, match=r"training\.finetune\.stpes is not a setting.*did you mean 'steps'"):
        load_profile("tiny", {"training": {"finetune": {"stpes": 3}}})
    with pytest.raises(InputError, match=r"prediction_type is 'x_prediction'; choose one of epsilon, v_prediction"):
        load_profile("tiny", {"models": {"bases": {"v1": {"prediction_type": "x_prediction"}}}})
    with pytest.raises(InputError, match=r"profile key paralel_jobs is not a setting.*did you mean 'parallel_jobs'"):
        load_profile("tiny", {"paralel_jobs": 2})
    with pytest.raises(InputError, match=r"suspicious\.n_samples must be an integer"):
        load_profile("tiny", {"suspicious": {"n_samples": "thirty"}})
    assert schema({"a": {"b": 1, "c": [1]}, "d": None}) == {"a.b": "number", "a.c": "list", "d": "none"}


def test_sections_own_their_defaults_and_stamps_see_them():
    p = load_profile("smoke")
    assert p.generation.eta == 0.0 and "eta" not in p["generation"]
    assert p.generation.as_dict()["eta"] == 0.0, "a stamp records the default too: changing it redoes the work"
    assert p.run.parallel_jobs == 1 and p.suspicious.replicates == (0, 1)


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


def test_a_profile_extending_another_gets_its_own_name_and_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    (tmp_path / "mine.yaml").write_text("extends: smoke\nseed: 3\n")
    p = load_profile(tmp_path / "mine.yaml")
    assert p.name == "mine" and p.data_root == tmp_path / "data" / "mine"
    assert load_profile("smoke").name == "smoke"


def test_a_profile_drops_a_base_or_a_domain_with_null_and_keeps_null_values(tmp_path):
    """tyres extends tiny without one base and one domain; a null over a plain value stays a value."""
    tyres = load_profile("tyres")
    assert sorted(tyres.models.bases) == ["v2"] and sorted(tyres.data.domains) == ["cc3m"]
    assert tyres.run.figures_dir is None and "not the reproduction" in tyres.run.about
    assert sorted(load_profile("tiny").models.bases) == ["v1", "v2"], "the parent is untouched"
    assert "tests only" in load_profile("smoke").run.about and load_profile("tiny").run.about is None


def test_a_misspelt_fine_tune_key_is_refused_when_the_profile_loads():
    """suspicious.train and suspicious.lora are merged over training.finetune late; load_profile
    builds the merged configs, so a typo stops the run before any stage, naming the key."""
    with pytest.raises(InputError, match="lrr"):
        load_profile("smoke", {"suspicious": {"train": {"lrr": 1e-3}}})
    with pytest.raises(InputError, match="lora_rnk"):
        load_profile("smoke", {"suspicious": {"lora": {"lora_rnk": 8}}})


def test_fp16_storage_is_refused_where_the_profile_draws_in_float32():
    """fp16 copies draw the same images only when inference is in float16: refused at load otherwise."""
    with pytest.raises(InputError, match="keep_finetuned|fp16|float16"):
        load_profile("smoke", {"models": {"keep_finetuned": "fp16"}})
    assert load_profile("paper").models.keep_finetuned == "none"
