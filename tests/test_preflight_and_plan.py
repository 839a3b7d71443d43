"""Before a run: the preflight's checks (each failing one names its fix) and the cost plan (counts
from the same functions the stages use; accelerator hours from stated or measured figures)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from genlineage.config import REPO_ROOT, load_profile
from genlineage import cost_plan, preflight
from genlineage.study.manifest import plan_manifest, plan_null_shadows
from genlineage.study.sources import source_table
from genlineage.runner import main as run_all


def test_the_plan_counts_what_the_stages_will_do(smoke_profile):
    jobs = cost_plan.plan_jobs(smoke_profile).set_index("kind")
    manifest = plan_manifest(smoke_profile)
    att, sus = smoke_profile.attribution, smoke_profile.suspicious
    per_cell = len(sus.rhos) * sus.evaluated.infringing + sus.evaluated.innocent + sus.shadow.infringing + sus.shadow.innocent
    n_models = 6 * len(sus.lineages) * len(sus.replicates) * per_cell  # 6 sources
    assert jobs.loc["suspicious and shadow fine-tunes", "jobs"] == len(manifest) == n_models == 60
    assert jobs.loc["suspicious and shadow fine-tunes", "steps"] == n_models * sus.train["steps"]
    assert jobs.loc["queries (3 strategies)", "images"] == n_models * 3 * max(att.n_keys_grid) * len(att.query_seeds)
    assert jobs.loc["infringing training sets (source generations)", "images"] == round(
        float((manifest.rho * manifest.n_samples).round().sum()))
    assert jobs.loc["key selection", "jobs"] == len(source_table(smoke_profile))
    # 6 candidates x 2 key seeds per source, twice (by the base too) for the 4 fine-tuned sources
    assert jobs.loc["key selection", "images"] == 4 * 6 * 2 * 2 + 2 * 6 * 2


def test_the_paper_profile_fits_one_night_on_8_gpus_says_so_truly_and_the_full_grid_is_larger():
    """The overnight budget as paper.yaml states it: one night (8 h) on 8 GPUs; the figure it
    states is the plan's, stage 08's own images included."""
    paper, full = (cost_plan.cost_plan(load_profile(name))[0] for name in ("paper", "paper_full"))
    total = paper.gpu_hours.sum()
    assert total <= 8 * 8, paper
    assert full.gpu_hours.sum() > 3 * total
    stated = (REPO_ROOT / "lib/genlineage/profiles/paper.yaml").read_text()
    assert "one night (8 h) on 8 GPUs" in stated and f"about {round(total)} GPU-hours" in stated


def test_the_disk_plan_reads_the_unet_size_from_the_bases_headers(smoke_profile, saved_pipeline):
    profile = load_profile("smoke", {"models": {"bases": {"v1": {"path": str(saved_pipeline)},
                                                          "v2": {"path": str(saved_pipeline)}}}})
    unet = load_pipeline_unet_params(saved_pipeline)
    disk = cost_plan.plan_disk(profile, cost_plan.plan_jobs(profile)).set_index("kind")
    from genlineage.experiments.world_grid import plan_grid

    # sources, suspicious, null shadows, and the world grid's shadows (kept: their measurements are cached on them)
    n_models = 4 + len(plan_manifest(profile)) + len(plan_null_shadows(profile)) + len(plan_grid(profile))
    assert disk.loc["fine-tuned models (UNet fp32)", "gb"] == pytest.approx(n_models * 4 * unet / 1e9)


def load_pipeline_unet_params(folder: Path) -> int:
    from genlineage.models.pipeline_io import load_pipeline

    return sum(p.numel() for p in load_pipeline(folder).unet.parameters())


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_a_probe_measures_both_units_on_this_machine(smoke_profile, saved_pipeline, monkeypatch, finetune):
    from genlineage import layout
    from genlineage.config import load_profile

    for base in ("v1", "v2"):
        target = layout.base_dir(smoke_profile, base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(saved_pipeline, target)
    profile = load_profile("smoke", {"suspicious": {"finetune": finetune}})  # a LoRA step trains the adapter only
    costs = cost_plan.measure_unit_costs(profile, train_steps=3)
    assert costs.step_s > 0 and costs.image_s > 0 and costs.source.startswith("measured: base v1 on cpu")


def test_a_probe_without_bases_on_disk_says_which_stage_to_run(smoke_profile):
    from genlineage.errors import InputError

    with pytest.raises(InputError, match=r"not at .*base_v1 yet: run stage 02 first"):
        cost_plan.measure_unit_costs(smoke_profile)


def test_a_cuda_profile_on_a_cpu_build_of_torch_fails_with_the_install_fix():
    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build: the CPU-build refusal cannot be shown here")
    check = preflight.check_device(load_profile("smoke", {"device": "cuda", "dtype": "float16"}))
    assert not check.ok and "built without CUDA" in check.detail and "TORCH_INDEX_URL=" in check.fix


def test_the_cpu_device_passes():
    check = preflight.check_device(load_profile("smoke"))
    assert check.ok and check.detail.startswith("torch ")


def test_a_base_folder_is_checked_and_described_without_loading_weights(saved_pipeline, tmp_path):
    profile = load_profile("smoke", {"models": {"bases": {"v1": {"path": str(saved_pipeline)}}}})
    check = preflight.check_base(profile, "v1")
    assert check.ok and "native 32 px, generates at 32 px" in check.detail and "'unet': 'plain'" in check.detail
    missing = load_profile("smoke", {"models": {"bases": {"v1": {"path": str(tmp_path / "nope")}}}})
    check = preflight.check_base(missing, "v1")
    assert not check.ok and "does not exist" in check.detail and "--local-dir" in check.fix


def test_a_base_generating_at_another_size_than_the_references_fails(saved_pipeline):
    profile = load_profile("smoke", {"models": {"bases": {"v1": {"path": str(saved_pipeline)}}},
                                     "generation": {"image_size": 64}})
    check = preflight.check_base(profile, "v1")
    assert not check.ok and "generation.image_size: 32" in check.fix


def _celeba(root: Path, n_images: int, n_captions: int) -> Path:
    (root / "image").mkdir(parents=True)
    (root / "text").mkdir()
    for i in range(n_images):
        (root / "image" / f"{i}.jpg").write_bytes(b"")  # counted by name, never opened
    (root / "text" / "captions_hq.json").write_text(json.dumps({f"{i}.jpg": {"overall_caption": "x"}
                                                                  for i in range(n_captions)}))
    return root


def test_a_release_with_too_few_captioned_images_fails_naming_the_pools(tmp_path):
    root = _celeba(tmp_path / "celeba", n_images=12, n_captions=10)  # two images have no caption
    counts = {"kind": "celeba_dialog", "root": str(root), "source": 4, "heldout": 2, "suspicious_pool": 3,
              "shadow_pool": 2}
    check = preflight.check_data(load_profile("smoke", {"data": {"domains": {"celeba": counts}}}), "celeba")
    assert not check.ok and "10 captioned images for 11" in check.detail and "suspicious_pool/shadow_pool" in check.fix
    counts["shadow_pool"] = 1
    assert preflight.check_data(load_profile("smoke", {"data": {"domains": {"celeba": counts}}}), "celeba").ok


def test_a_cc3m_split_counts_only_rows_whose_image_was_downloaded(tmp_path):
    root = tmp_path / "cc3m"
    (root / "images").mkdir(parents=True)
    (root / "val.tsv").write_text("".join(f"caption {i}\thttp://x/{i}\n" for i in range(6)))
    for row in (0, 2, 5):
        (root / "images" / f"{row}.jpg").write_bytes(b"")
    assert preflight.usable_images("cc3m", root) == 3


def test_a_plan_larger_than_the_free_disk_fails(smoke_profile):
    assert not preflight.check_disk(smoke_profile, need_gb=1e9).ok
    assert preflight.check_disk(smoke_profile, need_gb=0.0).ok


def test_run_all_stops_before_any_stage_when_the_preflight_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    profile = tmp_path / "gpu.yaml"
    profile.write_text("extends: smoke\nname: gpu\ndevice: cuda\n")
    monkeypatch.setattr(preflight, "check_device", lambda p: preflight.Check("device cuda", False, "no GPU", "a fix"))
    assert run_all([str(profile)]) == 2
    err = capsys.readouterr().err
    assert "preflight of profile 'gpu' failed; nothing has run" in err and "fix: a fix" in err
    assert not (tmp_path / "data").exists(), "nothing was written"


def test_a_dry_run_prints_the_checks_and_the_plan_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    assert run_all(["smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[ok] device cpu" in out and "suspicious and shadow fine-tunes" in out and "accelerator hours" in out
    assert not (tmp_path / "data").exists(), "nothing was written"


def test_the_executor_check_names_the_engine_and_where_it_runs(monkeypatch):
    assert preflight.check_executor(load_profile("smoke")).detail == "1 process(es) of 1 thread(s)"
    pytest.importorskip("ray")
    monkeypatch.setenv("GENLINEAGE_EXECUTOR", "ray")
    monkeypatch.setenv("GENLINEAGE_RAY_ADDRESS", "head:6379")
    check = preflight.check_executor(load_profile("paper"))
    assert check.ok and "at head:6379; 1 GPU(s) a job, 2 retries" in check.detail


def test_the_paper_plan_keeps_recipes_and_states_the_disk_without_the_saving():
    """models.keep_finetuned: none: each of the 264 evaluated and shadow models keeps its recipe
    once queried (one at a time in flight), the sources their fp16 weights."""
    paper = load_profile("paper")
    jobs, disk = cost_plan.cost_plan(paper)
    models = cost_plan.finetuned_disk(paper, jobs)
    assert models.policy == "none" and models.in_flight == 1
    assert disk.gb.sum() < disk.gb.sum() - models.kept_gb + models.full_gb
    assert disk.set_index("kind").loc["fine-tuned models (keep_finetuned: none)", "gb"] == models.kept_gb
    plan = cost_plan.format_plan(paper)
    assert models.sentence() in plan and f"{models.full_gb:,.1f} GB if every model were kept in fp32" in plan
    assert f"disk with every fine-tuned model kept in fp32: {disk.gb.sum() - models.kept_gb + models.full_gb:,.1f} GB" in plan


def test_the_paper_plan_fits_200_gb():
    """27.5: with the fine-tunes pruned to their recipes, their training sets released with them and
    stage 02's memorisation images released once read, the default paper plan fits 200 GB."""
    assert cost_plan.cost_plan(load_profile("paper"))[1].gb.sum() <= 200


def test_the_dry_run_states_the_disk_with_and_without_each_release():
    paper = load_profile("paper")
    jobs, disk = cost_plan.cost_plan(paper)
    sets = cost_plan.training_set_counts(paper, jobs)
    assert sets.all == 264 and sets.kept == 1, "one set in flight; each released model's set goes with it"
    png = cost_plan.png_bytes(paper)
    released = (sets.all - sets.kept) * paper.suspicious.n_samples * png / 1e9
    memorisation = cost_plan.released_memorisation_images(paper, jobs) * png / 1e9
    assert memorisation > 0
    plan = cost_plan.format_plan(paper)
    assert f"disk: {disk.gb.sum():,.1f} GB in all" in plan
    kept_all = disk.gb.sum() + released + memorisation
    assert f"disk if every training set and memorisation image were kept: {kept_all:,.1f} GB" in plan
    assert f"{memorisation:,.1f} GB of stage 02's memorisation images released" in plan
    kept = load_profile("paper", {"models": {"keep_memorisation_images": True}})
    assert cost_plan.released_memorisation_images(kept, cost_plan.plan_jobs(kept)) == 0


def test_stage_08_is_planned_by_the_rule_stage_03_asks_with(smoke_profile):
    """The plan's stage-08 row counts what study.owner_prompts asks: an innocent shadow is asked
    the keys of every source with an evaluated model of its base and domain, a model of the
    manifest not its own source's keys again (stage 04 asked them), every model its controls."""
    from genlineage.study.manifest import plan_manifest, plan_null_shadows
    from genlineage.study.owner_prompts import control_count, judged_with_keys_of

    manifest = plan_manifest(smoke_profile)
    innocent_shadow = manifest[(manifest.role == "shadow") & (manifest.label == 0)].iloc[0].to_dict()
    evaluated = manifest[manifest.role == "evaluated"].iloc[0].to_dict()
    alike = manifest[(manifest.role == "evaluated") & (manifest.base == innocent_shadow["base"])
                     & (manifest.domain == innocent_shadow["domain"])]
    assert judged_with_keys_of(innocent_shadow, manifest) == set(alike.source) | {innocent_shadow["source"]}
    assert judged_with_keys_of(evaluated, manifest) == {evaluated["source"]}
    assert control_count(smoke_profile, innocent_shadow, 10, 3) == min(smoke_profile.verify.n_controls, 3)
    row = cost_plan.owner_test_row(smoke_profile, manifest, plan_null_shadows(smoke_profile),
                                   source_table(smoke_profile))
    assert row["stage"] == "08" and row["images"] > 0 and row["jobs"] <= len(manifest) + len(plan_null_shadows(smoke_profile))


def test_a_profile_keeping_every_model_plans_and_prints_as_before(smoke_profile):
    jobs = cost_plan.plan_jobs(smoke_profile)
    assert cost_plan.finetuned_disk(smoke_profile, jobs) is None, "smoke builds its bases: no size yet"
    assert "keep_finetuned" not in cost_plan.format_plan(smoke_profile)
