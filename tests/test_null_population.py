"""How the innocent null was made beside the suspect (``genlineage.verify.population``): the
suspect's base measured from its UNet weights (never from its own files' claims), the owner's
shadows' bases read from genlineage's records, and a null of another base or method refused with
the ``genlineage shadows`` command that makes a matching one.

Two smoke bases of one architecture built here (``base_a``, ``base_b``: the same configs, other
seeds), full "fine-tunes" of each (the base's UNet moved 1% at random, saved with the record a
genlineage fine-tune writes; one a real fine-tune), LoRA fine-tunes of ``base_a`` (real, one step),
and a base of another architecture."""
from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import CAPTIONS, make_components
from genlineage.cli import main
from genlineage.config import load_profile
from genlineage.data.imagefolder import write_imagefolder
from genlineage.errors import InputError
from genlineage.models.lora import LORA_WEIGHTS, LoraModel
from genlineage.models.pipeline_io import load_pipeline, save_pipeline
from genlineage.models.tiny import build_base, build_vae
from genlineage.training.finetune import finetune_folder
from genlineage.training.sd import TrainConfig
from genlineage.verify import population
from genlineage.verify.population import (BASE_MIN_CORRELATION, Make, NullPopulation, compare_unets, describe_model,
                                          describe_null, unet_distances)
from genlineage.verify.shadows import write_manifest

P = load_profile("smoke")


def _moved(base: Path, out: Path, seed: int, record: Path | None, scale: float = 0.01) -> Path:
    """``base`` with every UNet weight moved by ``scale`` of its tensor's spread, saved with the
    record a genlineage full fine-tune writes (``base_dir``) when ``record`` is given."""
    components = load_pipeline(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in components.unet.parameters():
            spread = float(weight.std()) if weight.numel() > 1 else 0.0  # constants (norms, zero biases) stay
            weight.add_(torch.randn(weight.shape, generator=generator) * scale * spread)
    return save_pipeline(components, out, {"base_dir": str(record)} if record is not None else {"role": "test"})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("population")
    models: dict = {"root": root}
    models["base_a"] = save_pipeline(make_components(0), root / "base_a", {"role": "test"})
    models["base_b"] = save_pipeline(make_components(1), root / "base_b", {"role": "test"})
    other = P.models.bases["v2"]  # another text encoder width: another UNet cross-attention size
    models["base_v2"] = save_pipeline(build_base(other, build_vae(P.models.vae, 32, 3), CAPTIONS, 32,
                                                 P.training.noise_scheduler), root / "base_v2", {"role": "test"})
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    pairs = write_imagefolder(root / "pairs", [(img, CAPTIONS[i], {}) for i, img in enumerate(images)]).root
    full = TrainConfig.from_mapping({"steps": 1, "batch": 6, "lr": 1e-3}, seed=1)
    models["shadow_a0"] = finetune_folder(models["base_a"], pairs, root / "shadow_a0", full, 32, root / "work",
                                          progress=False)  # a real fine-tune: its genlineage.json as written
    models["shadow_a1"] = _moved(models["base_a"], root / "shadow_a1", 11, models["base_a"])
    models["shadow_b0"] = _moved(models["base_b"], root / "shadow_b0", 20, models["base_b"])
    models["shadow_b1"] = _moved(models["base_b"], root / "shadow_b1", 21, models["base_b"])
    for i in range(2):
        lora = TrainConfig.from_mapping({"steps": 1, "batch": 6, "lr": 1e-2, "finetune": "lora", "lora_rank": 4},
                                        seed=30 + i)
        models[f"lora_a{i}"] = finetune_folder(models["base_a"], pairs, root / f"lora_a{i}", lora, 32, root / "work",
                                               progress=False)
    # the suspect: made from base_a, its genlineage.json claiming base_b (a suspect's files may say anything)
    models["suspect_a"] = _moved(models["base_a"], root / "suspect_a", 40, models["base_b"])
    return models


def _refusal(call) -> str:
    with pytest.raises(InputError) as refused:
        call()
    return str(refused.value)


# --- one model ---------------------------------------------------------------------------------------

def test_a_full_suspect_is_measured_nearest_its_own_base_whatever_its_files_claim(world):
    a, b = world["base_a"], world["base_b"]
    made = describe_model(world["suspect_a"], "suspect", [b, a])
    assert made.base == os.path.realpath(a) and made.method == "full" and not made.apart
    assert made.evidence.startswith("nearest base by UNet weights (relative distance") and "base_a" in made.evidence
    compared = compare_unets(world["suspect_a"], [a, b])
    assert compared[a].distance < 0.05 < 0.9 < compared[b].distance, "1% moves vs an unrelated initialisation"
    assert compared[a].correlation > 0.99 and abs(compared[b].correlation) < 0.05
    assert compare_unets(a, [a])[a] == population.UNetComparison(0.0, 1.0)
    trusted = describe_model(world["suspect_a"], "innocent shadow suspect_a", [a, b])
    assert trusted.base == os.path.realpath(b) and "genlineage.json" in trusted.evidence, \
        "the owner's own record is believed; the suspect's never"


def test_a_suspect_moved_as_far_as_an_unrelated_model_still_keeps_its_base(world, tmp_path):
    """The base is told by correlation, not by how far the suspect moved: a move as large as the
    weights themselves (0.7 of the way base_b lies from base_a, where a distance threshold set
    between fine-tunes and unrelated bases would fall) keeps r near 0.7 with base_a."""
    a, b = world["base_a"], world["base_b"]
    heavy = _moved(a, tmp_path / "heavy", 60, None, scale=1.0)
    compared = compare_unets(heavy, [a, b])
    assert compared[a].distance > 0.6 and 0.6 < compared[a].correlation < 0.8 and abs(compared[b].correlation) < 0.05
    assert describe_model(heavy, "suspect", [b, a]).base == os.path.realpath(a)


def test_the_distance_is_the_same_streamed_in_small_chunks(world, monkeypatch):
    bases = [world["base_a"], world["base_b"]]
    whole = compare_unets(world["suspect_a"], bases)
    monkeypatch.setattr(population, "CHUNK_ELEMENTS", 1000)  # most tensors then come in several chunks
    chunked = compare_unets(world["suspect_a"], bases)
    for base in bases:
        assert (chunked[base].distance, chunked[base].correlation) == pytest.approx(
            (whole[base].distance, whole[base].correlation), rel=1e-9)


def test_a_suspect_of_another_architecture_or_far_from_every_base_is_none_of_them(world):
    other = describe_model(world["suspect_a"], "suspect", [world["base_v2"]])
    assert other.base is None and other.apart and "matches none of the shadows' bases (base_v2)" in other.evidence
    assert unet_distances(world["suspect_a"], [world["base_v2"]]) == {world["base_v2"]: None}
    far = describe_model(world["suspect_a"], "suspect", [world["base_b"]])
    assert far.base is None and far.apart and far.evidence.startswith("nearest base by UNet weights")
    assert "do not correlate with that base's" in far.evidence and f"above {BASE_MIN_CORRELATION:g}" in far.evidence
    alone = describe_model(world["suspect_a"], "suspect", [])
    assert alone.base is None and not alone.apart and "no candidate base" in alone.evidence


def test_lora_models_carry_their_base_and_a_callable_cannot_be_told(world):
    folder = describe_model(world["lora_a0"], "innocent shadow lora_a0")
    assert (folder.base, folder.method) == (os.path.realpath(world["base_a"]), "lora") and "lora_base" in folder.evidence
    file = describe_model(LoraModel(world["lora_a0"] / LORA_WEIGHTS, world["base_a"]), "suspect")
    assert (file.base, file.method, file.evidence) == (os.path.realpath(world["base_a"]), "lora",
                                                       "LoRA file's declared base")
    assert describe_model(lambda prompt, seed: None, "suspect") == Make("suspect", None, "unknown",
                                                                        "a callable: cannot tell")


def test_an_owners_shadow_is_read_from_shadows_json_or_the_stage_manifest(world, tmp_path):
    a = world["base_a"]
    shadow = _moved(a, tmp_path / "set" / "innocent_00", 50, None)  # no base_dir in its genlineage.json
    unrecorded = describe_model(shadow, "innocent shadow innocent_00", [world["base_b"], a])
    assert unrecorded.base == os.path.realpath(a) and unrecorded.evidence.startswith("nearest base by UNet weights")
    table = pd.DataFrame([{"name": "innocent_00", "role": "innocent", "path": str(shadow), "method": "full",
                           "base": str(a)}])
    write_manifest(tmp_path / "set", table, {"base": str(a)})
    recorded = describe_model(shadow, "innocent shadow innocent_00")
    assert recorded.base == os.path.realpath(a) and recorded.evidence == "shadows.json"
    assert describe_model(shadow, "suspect", []).base is None, "a suspect's shadows.json is not believed"
    stage = _moved(a, tmp_path / "data" / "models" / "suspicious" / "m0", 51, None)
    pd.DataFrame([{"name": "m0", "base": "a", "base_path": str(a), "path": str(stage)}]).to_csv(
        tmp_path / "data" / "manifest.csv", index=False)
    staged = describe_model(stage, "innocent shadow m0")
    assert staged.base == os.path.realpath(a) and staged.evidence == "the stage-03 manifest"


def test_a_base_is_labelled_by_its_folder_or_its_hugging_face_repository(tmp_path):
    snapshot = tmp_path / "hub" / "models--org--sd" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--sd" / "blobs").mkdir()
    twins = [str(tmp_path / "x" / "base"), str(tmp_path / "y" / "base")]
    labels = population.base_labels([str(snapshot), *twins, None])
    assert labels == {str(snapshot): "models--org--sd", twins[0]: twins[0], twins[1]: twins[1]}


# --- the null beside the suspect ------------------------------------------------------------------------

def test_a_matched_null_passes_with_no_mismatch(world):
    found = describe_null(world["suspect_a"], [world["shadow_a0"], world["shadow_a1"]], False)
    assert found.mismatch == "" and isinstance(found, NullPopulation)
    summary = found.summary()
    assert summary == {"count": 2, "bases": {"base_a": 2}, "methods": {"full": 2}, "suspect_base": "base_a",
                       "suspect_method": "full", "suspect_evidence": found.suspect.evidence, "mismatch": "",
                       "allowed": False}
    assert [m.evidence for m in found.shadows] == ["genlineage.json of a model genlineage made"] * 2
    json.dumps(summary)  # the report stores it in verdict.json


def test_a_lora_suspect_on_its_base_through_a_link_matches_lora_shadows_of_that_base(world, tmp_path):
    os.symlink(world["base_a"], tmp_path / "sd_base")  # one base however it is reached
    suspect = LoraModel(world["lora_a0"] / LORA_WEIGHTS, tmp_path / "sd_base")
    found = describe_null(suspect, [world["lora_a1"]], False)
    assert found.mismatch == "" and found.summary()["methods"] == {"lora": 1}


def test_shadows_of_another_base_are_refused_naming_both_bases_and_the_fix(world):
    a, shadows = world["base_a"], [world["shadow_b0"], world["shadow_b1"]]
    message = _refusal(lambda: describe_null(world["suspect_a"], shadows, False, candidate_bases=[a]))
    assert "2 innocent shadows (shadow_b0, shadow_b1) were made from base_b, the suspect from base_a" in message
    assert f"genlineage shadows --base {os.path.realpath(a)} --finetune full" in message
    assert "--innocent 19" in message and "--allow-mismatched-null" in message
    # with only the shadows' base to measure against, the suspect is told to be none of theirs
    message = _refusal(lambda: describe_null(world["suspect_a"], shadows, False))
    assert "the suspect's base is none of the innocent shadows' bases" in message and "base_b" in message
    assert "genlineage shadows --base SUSPECT_BASE_DIR --finetune full" in message


def test_a_mismatch_is_allowed_knowingly_and_said(world):
    found = describe_null(world["suspect_a"], [world["shadow_b0"], world["shadow_b1"]], True,
                          candidate_bases=[world["base_a"]])
    summary = found.summary()
    assert found.allowed and summary["allowed"] and summary["mismatch"] == found.mismatch != ""
    assert summary["bases"] == {"base_b": 2} and summary["suspect_base"] == "base_a"


def test_lora_shadows_for_a_full_suspect_and_full_shadows_for_a_lora_one_are_refused(world):
    shadows = [world["lora_a0"], world["lora_a1"]]
    message = _refusal(lambda: describe_null(world["suspect_a"], shadows, False))
    assert "--finetune full" in message
    assert describe_null(world["suspect_a"], shadows, True).mismatch == \
        "2 innocent shadows (lora_a0, lora_a1) were made by lora fine-tuning, the suspect by full fine-tuning", \
        "the bases agree (the LoRA shadows' base is the one the suspect is measured nearest): only the method differs"
    lora_suspect = LoraModel(world["lora_a0"] / LORA_WEIGHTS, world["base_a"])
    message = _refusal(lambda: describe_null(lora_suspect, [world["shadow_a0"], world["shadow_a1"]], False))
    assert "the suspect by lora fine-tuning" in message and "--finetune lora" in message


def test_a_null_of_mixed_bases_or_methods_is_refused(world):
    message = _refusal(lambda: describe_null(world["suspect_a"], [world["shadow_a0"], world["shadow_b0"]], False))
    assert "the innocent shadows were made from 2 bases (base_a: 1, base_b: 1)" in message
    assert "1 innocent shadow (shadow_b0) was made from base_b, the suspect from base_a" in message
    mixed = describe_null(world["suspect_a"], [world["shadow_a0"], world["lora_a0"]], True)
    assert "made by 2 methods (full: 1, lora: 1)" in mixed.mismatch
    assert mixed.summary()["methods"] == {"full": 1, "lora": 1}


def test_a_callable_suspect_is_unknown_and_never_refused(world):
    def api(prompt, seed):
        return None

    matched = describe_null(api, [world["shadow_a0"], world["shadow_a1"]], False)
    summary = matched.summary()
    assert (summary["suspect_base"], summary["suspect_method"]) == ("unknown", "unknown") and summary["mismatch"] == ""
    mixed = describe_null(api, [world["shadow_a0"], world["shadow_b0"]], False)
    assert "2 bases" in mixed.mismatch and not mixed.allowed, "said, not refused: the suspect's base cannot be told"


# --- the command line ------------------------------------------------------------------------------

def test_cli_passes_allow_mismatched_null_and_names_report_html(monkeypatch, tmp_path, capsys):
    import genlineage.verify as verify_package

    calls: list[dict] = []

    def fake_verify(*args, **kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(verdict="not shown", p_value=0.5, conf=0.0, discriminator_score=None, queries=4,
                                     warning="")

    monkeypatch.setattr(verify_package, "verify", fake_verify)
    monkeypatch.setattr(verify_package, "write_report", lambda verdict, out: Path(out) / "report.md")
    for name in ("src", "keys", "sus"):  # they exist: the command's pre-check looks before the (faked) library does
        (tmp_path / name).mkdir()
    args = ["verify", "--source", str(tmp_path / "src"), "--keys", str(tmp_path / "keys"), "--suspect", str(tmp_path / "sus"),
            "--quiet", "--out", str(tmp_path / "r")]
    assert main(args) == 0 and main(args + ["--allow-mismatched-null"]) == 0
    assert [c["allow_mismatched_null"] for c in calls] == [False, True]
    out = capsys.readouterr().out
    last = json.loads(out[out.rindex("{"):])
    assert last["report"] == str(tmp_path / "r" / "report.html")
    assert '"report"' in out.strip().splitlines()[-2], "the report is the last thing printed"
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "--allow-mismatched-null" in capsys.readouterr().out
