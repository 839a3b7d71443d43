"""``genlineage shadows``: the model owner's shadow set in one command.

A verdict needs innocent shadow models the owner trains themself: models fine-tuned from a base on
real pairs of the source's domain that the source never trained on (at least ceil(1/A) - 1 of
them for a test at false-positive rate A that assumes nothing about their spread: 19 at 5%), and,
to calibrate delta0 and fit the discriminator, infringing shadows fine-tuned on a share rho of the
source's own generations. This builds both from one base and one folder of the owner's domain data,
the way stage 03 builds its shadows (same training-set writer, same fine-tune engine), full or LoRA,
seeded, cached and resumable (a re-run trains only what is missing), on the project's executor.

Layout of ``--out``::

    shadows.json            the manifest: every shadow with its role, label, rho, seed, folder, and how
                            it was made (its base, method "full" or "lora"): what verify reads to
                            check that the shadows were made the way the suspect was
    innocent_00/ ...        the models (pipeline folders, or LoRA folders on the base)
    infringing_00_rho1/ ...
    data/<name>/            each shadow's training pairs (image folder with metadata.jsonl)
    cache/ work/            the source's generations; checkpoints of interrupted fine-tunes

The data must not overlap the source's training set (an innocent shadow trained on the source's
own training pairs would not be innocent): any image of ``--data`` whose pixels equal one of
``--source-data`` is refused before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Profile, as_profile, load_profile
from ..data.imagefolder import ImageFolder, read_imagefolder
from ..errors import InputError
from ..io import atomic_path, derive_seed
from ..jobs import executor_for, run_jobs
from ..models.pipeline_io import OWNER
from ..outdir import check_output_folder, created_output
from ..training.finetune import finetune_folder
from ..training_set import TrainingSetJob
from .suspect import check_sd_pipeline

MANIFEST = "shadows.json"
OVERLAP_SHOWN = 3  # overlapping files named in the refusal


def plan_shadows(n_innocent: int, n_infringing: int, rhos: Sequence[float], n_samples: int, finetune: str,
                 seed: int) -> list[dict]:
    """One row per shadow: innocent ones (rho 0), then infringing ones cycling through ``rhos``;
    each with a seed derived from the master seed and its name (adding a shadow moves no other)."""
    if n_innocent < 0 or n_infringing < 0 or n_innocent + n_infringing == 0:
        raise InputError("genlineage shadows: ask for at least one shadow (--innocent N, --infringing N).")
    if n_infringing and not rhos:
        raise InputError("genlineage shadows: infringing shadows need --rhos (shares of generated images, in (0, 1]).")
    if any(not 0 < float(r) <= 1 for r in rhos):
        raise InputError(f"genlineage shadows: --rhos {list(rhos)} must each lie in (0, 1].")
    plan = [(f"innocent_{i:02d}", 0.0) for i in range(n_innocent)]
    plan += [(f"infringing_{i:02d}_rho{float(rhos[i % len(rhos)]):g}", float(rhos[i % len(rhos)]))
             for i in range(n_infringing)]
    return [{"name": name, "role": "infringing" if rho > 0 else "innocent", "label": int(rho > 0), "rho": rho,
             "seed": derive_seed(seed, "owner-shadow", name) % (2**31), "n_samples": int(n_samples),
             "finetune": finetune} for name, rho in plan]


def check_disjoint(data: ImageFolder, source_data: ImageFolder, size: int) -> None:
    """Refuse ``data`` when any of its images has exactly the pixels of one of the source's
    training images (both at the profile's size, so a re-encoded or resized copy of the same file is
    caught as long as it decodes to the same pixels)."""
    source_hashes = dict(zip(_pixel_hashes(source_data, size), source_data.paths))
    overlap = [(path, source_hashes[h]) for h, path in zip(_pixel_hashes(data, size), data.paths) if h in source_hashes]
    if overlap:
        shown = "; ".join(f"{a} = {b}" for a, b in overlap[:OVERLAP_SHOWN])
        raise InputError(f"--data {data.root}: {len(overlap)} of its {len(data)} images are images of the source's "
                         f"training set --source-data {source_data.root} ({shown}); an innocent shadow must be "
                         "trained on pairs the source never saw. Remove them from --data.")


def _pixel_hashes(folder: ImageFolder, size: int, chunk: int = 256) -> list[str]:
    out = []
    for start in range(0, len(folder), chunk):
        rows = list(range(start, min(len(folder), start + chunk)))
        images = np.clip(np.rint(folder.load_images(size=size, rows=rows) * 255), 0, 255).astype(np.uint8)
        out += [hashlib.sha256(img.tobytes()).hexdigest() for img in images]
    return out


def training_set_job(row: dict, settings: dict) -> TrainingSetJob:
    """A shadow's pairs as the one training-set job declares them (stage 03's rule): rho*n generated
    by the owner's source, the rest real pairs of ``--data``."""
    profile = as_profile(settings["profile"])
    generated = float(row["rho"]) > 0
    return TrainingSetJob(
        out=Path(settings["out"]) / "data" / row["name"], pool=Path(settings["data"]), n_samples=int(row["n_samples"]),
        rho=float(row["rho"]), seed=int(row["seed"]), image_size=int(profile.data.image_size),
        source=Path(settings["source"]) if generated else None, generation=profile.generation,
        cache=Path(settings["out"]) / "cache", source_trust=OWNER, device=profile.run.device, dtype=profile.torch_dtype)


def build_shadow(row: dict, settings: dict, progress: bool = False) -> str:
    """One job: the shadow's training pairs, then its fine-tune (both cached; an interrupted
    fine-tune resumes from its checkpoint)."""
    profile = as_profile(settings["profile"])
    data = training_set_job(row, settings).build()
    cfg = profile.suspicious.train_config(profile.training.finetune, row["finetune"], seed=row["seed"],
                                          **settings.get("train_override", {}))
    out = Path(settings["out"])
    finetune_folder(settings["base"], data, out / row["name"], cfg, profile.data.image_size, out / "work",
                    {"name": row["name"], "role": f"{row['role']} shadow", "rho": row["rho"]},
                    device=profile.run.device, progress=progress, desc=row["name"], trust=OWNER)
    return str(out / row["name"])


def build_shadows(base: str | Path, data: str | Path, source_data: str | Path, out: str | Path, *,
                  source: str | Path | None = None, innocent: int = 4, infringing: int = 0,
                  rhos: Sequence[float] = (1.0,), n_samples: int | None = None, finetune: str | None = None,
                  lora_rank: int | None = None, seed: int = 0, profile: str | Profile = "tiny",
                  progress: bool = True) -> pd.DataFrame:
    """Build the owner's shadow set into ``out`` and write its manifest; the manifest as a table.

    Everything is checked before anything is written: the base (and the source, for infringing
    shadows) through the model gate, the data and the source's training set as image folders at
    the profile's size, enough pairs for ``n_samples``, and no image shared with the source's set."""
    P = profile if isinstance(profile, Profile) else load_profile(profile)
    how = finetune or P.suspicious.finetune
    if how not in ("full", "lora"):
        raise InputError(f"--finetune {how!r}: choose full or lora.")
    base = Path(os.path.abspath(check_sd_pipeline(base, "base")))  # recorded as it is: a relative path means nothing later
    if infringing and source is None:
        raise InputError("infringing shadows are fine-tuned on the source's generations: pass --source DIR.")
    source = check_sd_pipeline(source, "source model") if source is not None else None
    size = P.data.image_size
    pairs = read_imagefolder(data, size=size)
    check_disjoint(pairs, read_imagefolder(source_data, size=size), size)
    n = int(n_samples or P.suspicious.n_samples)
    if not 0 < n <= len(pairs):
        raise InputError(f"--data {data} holds {len(pairs)} pairs; each shadow trains on --n-samples {n}: give more "
                         "pairs or a smaller --n-samples.")
    rows = plan_shadows(innocent, infringing, list(rhos), n, how, seed)
    out = Path(out)
    check_output_folder(out, "shadows", [("base", base), ("source model", source), ("data", data),
                                         ("source data", source_data)])
    override = {"lora_rank": int(lora_rank)} if lora_rank else {}
    settings = {"profile": P, "base": str(base), "source": str(source) if source else None, "data": str(data),
                "out": str(out), "train_override": override}
    with created_output(out, "shadows"):  # a failed first run leaves no --out; a re-run resumes an earlier one
        jobs = [{"row": row, "settings": settings} for row in rows]
        paths = run_jobs(build_shadow, jobs, P.run.parallel_jobs, P.run.threads_per_job,
                         desc="shadows" if progress else None, executor=executor_for(P.run))
        table = pd.DataFrame(rows).assign(path=paths, method=how, base=str(base))
        write_manifest(out, table, {"base": str(base), "source": settings["source"], "data": str(data),
                                    "source_data": str(source_data), "profile": P.name, "seed": int(seed)})
    return table


def write_manifest(out: Path, table: pd.DataFrame, inputs: dict) -> Path:
    """``shadows.json``: what the set was built from and every shadow with its role and folder,
    and how it was made (``method`` "full" or "lora", and the absolute path of its ``base``), so
    that ``verify`` can tell the null was made from the suspect's base by the suspect's method
    (:mod:`genlineage.verify.population`) without trusting anything but the owner's own record."""
    shadows = [{**row, "path": str(Path(row["path"]).relative_to(out))} for row in table.to_dict("records")]
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps({**inputs, "shadows": shadows}, indent=2) + "\n")
    return out / MANIFEST


def verify_arguments(out: str | Path, table: pd.DataFrame) -> list[str]:
    """The ``genlineage verify`` flags that pass this shadow set as the null (and delta0's calibration)."""
    flags = {"innocent": "--innocent-shadow", "infringing": "--infringing-shadow"}
    return [arg for row in table.to_dict("records") for arg in (flags[row["role"]], row["path"])]
