"""What a run will cost, before it starts: the jobs by stage and kind, accelerator hours and disk.

Why: the paper's grid is hundreds of Stable-Diffusion fine-tunes and millions of generations, and
a profile that asks for ten times the budget should be caught while it is still a YAML file.
``bash run_all.sh PROFILE --dry-run`` prints this plan and runs nothing.

The counts come from the same functions the stages use (the suspicious-model manifest, the key
counts, the seed lists), so they cannot drift from what a run does. The time per unit is either
a **stated figure** (:data:`STATED`, for SD-v1.5-sized models on an A100-class GPU in fp16, the
paper profile's setting) or a **measured probe** on the current device (``--probe``: one
generation batch and a few training steps of the profile's first base at its real settings).
Both are estimates: the plan says which one it used.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import layout
from .config import Profile, TrainConfig, as_profile
from .errors import InputError
from .generation import generate
from .models.gate import check_safetensors_header
from .models.lora import add_lora
from .models.pipeline_io import VARIANT_WEIGHTS, load_model, load_pipeline, model_trust, weights_variant
from .models import storage
from .models.storage import ModelDisk, model_disk
from .training.encode import EncodedDataset, tokenize
from .training.sd import train_sd
from .experiments.lora_ablation import ablated_models, learning_rates, selection_rows, twin_rows
from .experiments.memorisation import memorisation_jobs
from .study.manifest import plan_manifest, plan_null_shadows
from .study.owner_prompts import control_count, judged_with_keys_of
from .study.sources import source_table
from .experiments.world_grid import plan_grid

MB = 1e6


@dataclass(frozen=True)
class UnitCosts:
    """Seconds of one accelerator per unit of work, and where the figures come from."""

    step_s: float           # one fine-tune step at the profile's batch and size
    image_s: float          # one generated image at the profile's sampler steps, guidance and size
    source: str

    def hours(self, steps: float, images: float) -> float:
        return (steps * self.step_s + images * self.image_s) / 3600.0


# SD-v1.5 at 512 px in fp16 on an A100-class GPU: a 50-step DDIM image with guidance is about
# 68 TFLOP, so 3-6 images/s with batching (0.25 s an image); a fine-tune step at batch 2 with
# gradient checkpointing about 0.35 s. Replace them by a probe on the machine that will run.
STATED = UnitCosts(step_s=0.35, image_s=0.25, source="stated: SD-v1.5, 512 px, fp16, A100-class GPU")


def _images_per_candidate_set(profile: Profile, src) -> int:
    """Generations to choose one source's keys: every candidate at every key seed by the source
    (Strategy 1 and 2 share these through the cache), and by its base when Strategy 2 is judged
    relative to it (a fine-tuned source)."""
    att = profile.attribution
    n_candidates = _candidate_count(profile, src)
    relative = att.generation_relative_to_base and isinstance(src.domain, str)
    return n_candidates * len(att.key_seeds) * (2 if relative else 1)


def _candidate_count(profile: Profile, src) -> int:
    """D_S's size as stage 04 caps it: a fine-tuned source's training set; for a base as it is, the
    domain's source set or (``base_candidates: pretrain``) at most the whole pre-training corpus."""
    cap = int(profile.suspicious.candidates_max)
    if not isinstance(src.domain, str) and profile.suspicious.base_candidates == "pretrain":
        return min(cap, int(profile.data.pretrain.n))
    domain = src.domain if isinstance(src.domain, str) else src.pool_domain
    return min(cap, int(profile.data.domains[domain].source))


def plan_jobs(profile: Profile) -> pd.DataFrame:
    """One row per (stage, kind): how many jobs, and the units of work (training steps, images)."""
    profile = as_profile(profile)
    manifest = plan_manifest(profile)
    sources = source_table(profile)
    finetune = TrainConfig.from_mapping(profile.training.finetune, "training.finetune")
    suspicious = profile.suspicious.train_config(profile.training.finetune)
    n_finetuned_sources = len(profile.models.bases) * len(profile.data.domains)
    n_keys = max(profile.attribution.n_keys_grid)
    query_seeds = len(profile.attribution.query_seeds)
    generated_per_model = (manifest.rho * manifest.n_samples).round().astype(int)
    rows = [
        {"stage": "02", "kind": "source fine-tunes", "jobs": n_finetuned_sources,
         "steps": n_finetuned_sources * finetune.steps, "images": 0},
        {"stage": "02", "kind": "memorisation generations", "jobs": len(memorisation_jobs(profile)),
         "steps": 0, "images": sum(_memorisation_images(profile, d) for _, d, _ in memorisation_jobs(profile))},
        {"stage": "03", "kind": "infringing training sets (source generations)", "jobs": int((generated_per_model > 0).sum()),
         "steps": 0, "images": int(generated_per_model.sum())},
        {"stage": "03", "kind": "suspicious and shadow fine-tunes", "jobs": len(manifest),
         "steps": len(manifest) * suspicious.steps, "images": 0},
        {"stage": "04", "kind": "key selection", "jobs": len(sources),
         "steps": 0, "images": int(sum(_images_per_candidate_set(profile, s) for _, s in sources.iterrows()))},
        {"stage": "04", "kind": "queries (3 strategies)", "jobs": len(manifest),
         "steps": 0, "images": len(manifest) * 3 * n_keys * query_seeds},
    ]
    null_shadows = plan_null_shadows(profile)
    rows += [{"stage": "03", "kind": "shared innocent null shadows (fine-tunes)", "jobs": len(null_shadows),
              "steps": len(null_shadows) * suspicious.steps, "images": 0},
             owner_test_row(profile, manifest, null_shadows, sources)]
    rows += world_grid_jobs(profile)
    lora_settings = profile.suspicious.lora_ablation
    lora = lora_twin_count(profile) if lora_settings.enabled else 0
    stage10 = "10 (on request)" if lora_settings.on_request else "10"
    rows += [{"stage": stage10, "kind": "LoRA twins (adapters; a step costed as a full one's)", "jobs": lora,
              "steps": lora * suspicious.steps, "images": 0},
             {"stage": stage10, "kind": "LoRA twins' queries (3 strategies)", "jobs": lora,
              "steps": 0, "images": lora * 3 * n_keys * query_seeds}]
    return pd.DataFrame(rows)


def owner_test_row(profile: Profile, manifest: pd.DataFrame, null_shadows: pd.DataFrame, sources: pd.DataFrame) -> dict:
    """Stage 08's new images, by the rule stage 03 asks them with (``study.owner_prompts``): each
    model's keys of every source it is judged for or is a null of, less its own source's keys that
    stage 04 already asked a model of the manifest, and its control pairs; at every query seed."""
    n_keys = {s.source: min(max(profile.attribution.n_keys_grid), _candidate_count(profile, s)) for _, s in sources.iterrows()}
    query_seeds = len(profile.attribution.query_seeds)
    asked, images = 0, 0
    for in_manifest, table in ((True, manifest), (False, null_shadows)):
        for row in table.to_dict("records"):
            keys = sum(n_keys[s] for s in judged_with_keys_of(row, manifest) if not (in_manifest and s == row["source"]))
            controls = control_count(profile, row, n_keys[row["source"]], int(profile.data.domains[row["domain"]].heldout))
            asked += (keys + controls) > 0
            images += (keys + controls) * query_seeds
    return {"stage": "08", "kind": "other sources' keys (innocent shadows, null shadows) and control pairs",
            "jobs": int(asked), "steps": 0, "images": int(images)}


def world_grid_jobs(profile: Profile) -> list[dict]:
    """Stage 03's world grid (none without one): its shadows' fine-tunes, and their queries (the
    first n_keys keys at every query seed, their own training captions at every memorisation seed)."""
    if not profile.suspicious.world.enabled:
        return []
    grid = plan_grid(profile)
    per_model = (profile.attribution.n_keys * len(profile.attribution.query_seeds)
                 + grid.n_samples * len(profile.memorisation.seeds))
    return [{"stage": "03", "kind": "world grid shadows (fine-tunes)", "jobs": len(grid),
             "steps": int(grid.train_steps.sum()), "images": 0},
            {"stage": "03", "kind": "world grid shadows' keys and own captions", "jobs": len(grid),
             "steps": 0, "images": int(per_model.sum())}]


def lora_twin_count(profile: Profile) -> int:
    """Stage 10's LoRA fine-tunes: the learning-rate selection's and the chosen rate's twins, each
    model once (the selection's shadows at the chosen rate are twins too). The rate is not known
    before the run, so this counts as if the first rate of the grid were chosen: the same count."""
    twins = twin_rows(profile, ablated_models(profile), learning_rates(profile)[0])
    return len(set(selection_rows(profile).name) | set(twins.name))


def _memorisation_images(profile: Profile, domain: str) -> int:
    """One model of stage 02's memorisation check: every source and held-out prompt of the domain
    at every memorisation seed."""
    counts = profile.data.domains[domain]
    return (int(counts.source) + int(counts.heldout)) * len(profile.memorisation.seeds)


SD15_UNET_FP32_BYTES = 3.44e9  # 859.5 M parameters (SD-v2.1's: 865.9 M)


def _unet_bytes_fp32(profile: Profile) -> float | None:
    """A fine-tune's saved size: its UNet in fp32 (the frozen parts are links to the base), read
    from the first base's UNet headers (no weights loaded); SD-v1.5's size when the bases are
    given by path but not on this machine; None when the profile builds its bases and has not yet."""
    for name, base in sorted(profile.models.bases.items()):
        unet = (Path(base.path) if base.path else layout.base_dir(profile, name)) / "unet"
        if unet.is_dir() and any(unet.glob("*.safetensors")):
            variant = weights_variant(unet)
            files = [f for f in unet.glob("*.safetensors")
                     if (m := VARIANT_WEIGHTS.fullmatch(f.name)) and m.group("variant") == variant]
            headers = [check_safetensors_header(f) for f in files]
            return 4.0 * sum(math.prod(v["shape"]) for h in headers for k, v in h.items() if k != "__metadata__")
    if any(base.path for base in profile.models.bases.values()):
        return SD15_UNET_FP32_BYTES
    return None


def finetuned_disk(profile: Profile, jobs: pd.DataFrame) -> ModelDisk | None:
    """The fine-tuned models' disk under the profile's ``models.keep_finetuned`` and in fp32, at
    its peak (None before the bases' size is known). Stage 03's evaluated and shadow models are
    released once queried; the sources are compacted where fp16 is exact; the shared null shadows
    and the world grid's shadows stay full (stage 08 and the grid ask them new images); as many
    models as jobs run side by side are at full size between their training and their release."""
    unet = _unet_bytes_fp32(profile)
    if unet is None:
        return None

    def count(kind: str) -> int:
        return int(jobs.loc[jobs.kind.str.startswith(kind), "jobs"].sum())

    return model_disk(sources=count("source fine-tunes"), released=count("suspicious and shadow fine-tunes"),
                      kept_full=count("shared innocent null shadows") + count("world grid shadows (fine-tunes)"),
                      unet_fp32_bytes=unet, policy=storage.profile_policy(profile), inference_dtype=profile.run.dtype,
                      in_flight=max(profile.run.parallel_jobs, 1))


def png_bytes(profile: Profile) -> float:
    """An image as PNG on disk: about 0.4 MB at 512 px, scaled by area."""
    return 0.4 * MB * (int(profile.data.image_size) / 512) ** 2


@dataclass(frozen=True)
class TrainingSetCount:
    """How many stage-03 training sets the plan makes (``all``) and how many are on disk at the
    peak (``kept``): under ``models.keep_finetuned: none`` a released model's set goes with it
    (``TrainingSetJob.release``; rebuilt on demand from the pool and the source's cached
    generations), so only the sets of models kept whole and those in flight stay."""

    all: int
    kept: int


def training_set_counts(profile: Profile, jobs: pd.DataFrame) -> TrainingSetCount:
    def count(kind: str) -> int:
        return int(jobs.loc[jobs.kind.str.startswith(kind), "jobs"].sum())

    released, whole = count("suspicious and shadow fine-tunes"), count("shared innocent null shadows")
    if storage.profile_policy(profile) != "none":
        return TrainingSetCount(released + whole, released + whole)
    return TrainingSetCount(released + whole, whole + min(released, max(profile.run.parallel_jobs, 1)))


def released_memorisation_images(profile: Profile, jobs: pd.DataFrame) -> float:
    """The memorisation images not in the cache at the peak under ``models.keep_memorisation_images:
    false``: all but those of the models measured side by side (0 when they are kept)."""
    if profile.models.keep_memorisation_images:
        return 0.0
    row = jobs[jobs.kind == "memorisation generations"]
    n_jobs, images = int(row.jobs.sum()), float(row.images.sum())
    return images * max(n_jobs - max(profile.run.parallel_jobs, 1), 0) / n_jobs if n_jobs else 0.0


def plan_disk(profile: Profile, jobs: pd.DataFrame) -> pd.DataFrame:
    """Disk by kind, in GB: fine-tuned UNets (as ``models.keep_finetuned`` keeps them:
    :func:`finetuned_disk`), training sets and cached generations as PNG (a 512 px image is about
    0.4 MB; scaled by area), and one checkpoint (UNet and Adam: 3 UNets) per parallel job."""
    png = png_bytes(profile)
    unet = _unet_bytes_fp32(profile)
    models = finetuned_disk(profile, jobs)
    sets = training_set_counts(profile, jobs)
    policy = storage.profile_policy(profile)
    rows = [
        {"kind": "fine-tuned models (UNet fp32)" if policy == "full" else f"fine-tuned models (keep_finetuned: {policy})",
         "gb": None if models is None else models.kept_gb},
        {"kind": "checkpoints in flight", "gb": None if unet is None else 3 * unet * profile.run.parallel_jobs / 1e9},
        {"kind": "training sets (PNG)" if sets.kept == sets.all else "training sets (PNG, released with their models)",
         "gb": sets.kept * profile.suspicious.n_samples * png / 1e9},
        {"kind": "generation cache (PNG)" if profile.models.keep_memorisation_images
         else "generation cache (PNG, memorisation images released)",
         "gb": (float(jobs.images.sum()) - released_memorisation_images(profile, jobs)) * png / 1e9},
    ]
    return pd.DataFrame(rows)


def measure_unit_costs(profile: Profile, train_steps: int = 5) -> UnitCosts:
    """A probe on this machine: one batch of generations and a few fine-tune steps of the profile's
    first base at the profile's settings, each after a warm-up."""
    profile = as_profile(profile)
    name = sorted(profile.models.bases)[0]
    folder = layout.base_dir(profile, name)
    if not (folder / "model_index.json").exists():
        raise InputError(f"the probe times base {name}, which is not at {folder} yet: run stage 02 "
                         f"first (`bash run_all.sh {profile.name} --only 02`)")
    return UnitCosts(step_s=_probe_training(profile, folder, train_steps), image_s=_probe_generation(profile, folder),
                     source=f"measured: base {name} on {profile.run.device} ({profile.run.dtype})")


def _probe_generation(profile: Profile, folder: Path) -> float:
    """Seconds an image, from one full batch at the profile's generation settings."""
    model, cfg = load_model(profile, folder), profile.generation
    generate(model, ["a probe"], [0], cfg)
    started = time.perf_counter()
    generate(model, ["a probe"] * cfg.batch, list(range(cfg.batch)), cfg)
    return (time.perf_counter() - started) / cfg.batch


def _probe_training(profile: Profile, folder: Path, steps: int) -> float:
    """Seconds a step of a suspicious model's fine-tune, on random latents of the profile's size:
    the difference between runs of ``steps`` and of 1 step, so the set-up (optimizer, text states)
    cancels out; where noise makes that difference vanish, the longer run's mean."""
    model = load_pipeline(folder, device=profile.run.device, dtype=torch.float32, trust=model_trust(profile, folder))
    train = profile.suspicious.train_config(profile.training.finetune)
    if train.finetune == "lora":  # a LoRA step: the adapter trains, the base is frozen
        add_lora(model.unet, train.lora_rank, train.lora_alpha, train.lora_targets, train.seed)
    side, n = int(profile.data.image_size) // model.vae_scale_factor, max(train.batch, 2)
    mean = torch.randn((n, int(model.unet.config.in_channels), side, side), generator=torch.Generator().manual_seed(0))
    data = EncodedDataset(mean.to(model.device), torch.full_like(mean, 0.1).to(model.device),
                          tokenize(model, ["a probe"] * n).to(model.device))

    def timed(n_steps: int, work: Path) -> float:
        started = time.perf_counter()
        cfg = TrainConfig.parse({**train.__dict__, "steps": n_steps, "checkpoint_every": 0}, "probe")
        train_sd(model, data, cfg, work, progress=False)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as work:
        timed(1, Path(work) / "warm-up")
        one, many = timed(1, Path(work) / "one"), timed(steps, Path(work) / "many")
    if many > one:
        return (many - one) / (steps - 1)
    # a loaded machine's noise can outweigh a few tiny steps: then the whole run's mean, set-up
    # included, is the estimate (too high, never zero: a plan must not call training free)
    return many / steps


def _saving_lines(profile: Profile, jobs: pd.DataFrame, disk: pd.DataFrame) -> list[str]:
    """What the dry run says of each release: the models' disk under ``models.keep_finetuned`` and in
    fp32, the training sets released with them, the memorisation images released once read, and the
    whole plan's disk without them (nothing when nothing is released)."""
    models = finetuned_disk(profile, jobs)
    released_models = models is not None and models.policy != "full"
    sets = training_set_counts(profile, jobs)
    set_gb = profile.suspicious.n_samples * png_bytes(profile) / 1e9
    memorisation_gb = released_memorisation_images(profile, jobs) * png_bytes(profile) / 1e9
    lines = [models.sentence()] if released_models else []
    if memorisation_gb or sets.kept != sets.all:
        kept_all = disk.gb.dropna().sum() + (sets.all - sets.kept) * set_gb + memorisation_gb
        lines.append(f"disk if every training set and memorisation image were kept: {kept_all:,.1f} GB")
    if memorisation_gb:
        lines.append(f"generation cache: {memorisation_gb:,.1f} GB of stage 02's memorisation images released once each "
                     "RD table is written (models.keep_memorisation_images: false; nothing else reads them)")
    if sets.kept != sets.all:
        lines.append(f"training sets: {sets.kept * set_gb:,.1f} GB (each released model's set goes with it, keeping its "
                     f"stamp and content id, rebuilt byte for byte from the pool and the source's cached generations "
                     f"when asked); {sets.all * set_gb:,.1f} GB if every set were kept")
    if released_models:
        lines.append(f"disk with every fine-tuned model kept in fp32: "
                     f"{disk.gb.dropna().sum() - models.kept_gb + models.full_gb:,.1f} GB")
    return lines


def cost_plan(profile: Profile, costs: UnitCosts = STATED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(jobs with their accelerator hours, disk by kind)."""
    jobs = plan_jobs(profile)
    jobs["gpu_hours"] = [costs.hours(s, i) for s, i in zip(jobs.steps, jobs.images)]
    return jobs, plan_disk(profile, jobs)


def format_plan(profile: Profile, costs: UnitCosts = STATED) -> str:
    """The plan as the dry run prints it."""
    profile = as_profile(profile)
    jobs, disk = cost_plan(profile, costs)
    on_request = jobs.stage.str.contains("on request")
    total, extra = jobs.gpu_hours[~on_request].sum(), jobs.gpu_hours[on_request].sum()
    known = disk.gb.dropna()
    lines = [f"Plan for profile {profile.name!r} (nothing has run):", "",
             jobs.to_string(index=False, float_format=lambda v: f"{v:,.2f}"), "",
             f"accelerator hours: {total:,.1f} in all ({costs.source}: {costs.step_s:.3g} s a training step, "
             f"{costs.image_s:.3g} s an image); on {max(profile.run.parallel_jobs, 1)} parallel job(s): "
             f"{total / max(profile.run.parallel_jobs, 1):,.1f} h of wall time"
             + (f"; stages run only on request add {extra:,.1f}" if on_request.any() else ""),
             "", disk.to_string(index=False, na_rep="(no base on disk yet)", float_format=lambda v: f"{v:,.1f}"), "",
             f"disk: {known.sum():,.1f} GB in all" + ("" if len(known) == len(disk) else " (without the unknown rows)"),
             *_saving_lines(profile, jobs, disk),
             "Stage 08 reads stage 04's queries from the shared generation cache; its own row counts only what "
             "stage 04 did not ask. Stages 05-07 and 09 only read tables."]
    return "\n".join(lines)
