"""Checks that take seconds and save hours: run before stage 01 converts anything.

Why: on the paper profile, stage 01 spends an hour converting CelebA-Dialog and CC3M before stage
02 first touches the GPU or opens a base. A CPU build of torch, a base folder holding only fp16
files the loader was not told about, a CC3M split that lost a third of its URLs or a full disk
would each surface only then. :func:`preflight` looks at all of them first, reading configs,
headers and listings (never weights, never images), and each failing check names its fix.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .config import Profile, as_profile
from .data import convert
from .errors import InputError
from .jobs import executor_for
from .models.gate import read_model_json
from .models.pipeline_io import OWNER, check_pipeline_folder, folder_image_size, weights_variant
from .cost_plan import cost_plan

CUDA_TORCH_FIX = ("install the CUDA build of the pinned torch into .venv: TORCH_INDEX_URL="
                  "https://download.pytorch.org/whl/cu128 bash scripts/setup.sh (the index of your driver's CUDA; "
                  "without it setup.sh installs the CPU build of torch==2.13.0)")


@dataclass(frozen=True)
class Check:
    """One preflight check: what was looked at, whether it passed, what was found, and the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_device(profile: Profile) -> Check:
    """The profile's device exists, the torch build can use it, and its dtype works there."""
    import torch

    device, dtype = profile.run.device, profile.torch_dtype
    name = f"device {device} ({profile.run.dtype})"
    if device.startswith("cuda"):
        if torch.version.cuda is None:
            return Check(name, False, f"torch {torch.__version__} is built without CUDA", CUDA_TORCH_FIX)
        if not torch.cuda.is_available():
            return Check(name, False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU",
                         "run on a machine with an NVIDIA GPU and its driver, and check CUDA_VISIBLE_DEVICES")
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return Check(name, False, f"{torch.cuda.get_device_name(device)} has no bfloat16",
                         "set dtype: float16 in the profile")
    elif device != "cpu" and not device.startswith("mps"):
        return Check(name, False, f"unknown device {device!r}", "set device: cuda, cuda:N, mps or cpu")
    try:
        value = float((torch.ones(4, 4, device=device, dtype=dtype) @ torch.ones(4, 4, device=device, dtype=dtype))[0, 0])
    except Exception as err:  # a driver mismatch, an MPS build without the op, ...
        return Check(name, False, f"a 4x4 matrix product fails there ({type(err).__name__}: {str(err)[:200]})",
                     "fix the torch installation for this device, or set device: cpu")
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    return Check(name, value == 4.0, f"torch {torch.__version__} on {where}")


def check_executor(profile: Profile) -> Check:
    """The engine independent jobs will run on can be used from here."""
    executor = executor_for(profile.run)
    label = f"executor {executor.engine}"
    if executor.engine == "local":
        return Check(label, True, f"{profile.run.parallel_jobs} process(es) of {profile.run.threads_per_job} thread(s)")
    try:
        import ray
    except ImportError:
        return Check(label, False, "ray is not installed", "bash scripts/setup.sh (ray is pinned in requirements.txt)")
    where = executor.address or "a local instance, started by the first stage"
    return Check(label, True, f"ray {ray.__version__} at {where}; {executor.gpus_per_job:g} GPU(s) a job, "
                 f"{executor.retries} retries")


def check_base(profile: Profile, name: str) -> Check:
    """A base given by path is a safe SD pipeline folder (a cache snapshot will do: it is the
    owner's), and says what it generates at and which weights variant each part holds."""
    base = profile.models.bases[name]
    label = f"base {name}"
    if not base.path:
        return Check(label, True, "built by stage 02 (tiny family)")
    path = Path(base.path)
    try:
        check_pipeline_folder(path, OWNER)
        native = folder_image_size(path)  # its configs, bounded like every config the gate has seen
        scheduler = read_model_json(path / "scheduler" / "scheduler_config.json")
        variants = {part: weights_variant(path / part) or "plain" for part in ("unet", "vae", "text_encoder")}
    except (InputError, OSError, ValueError) as err:
        return Check(label, False, str(err)[:400], f"set models.bases.{name}.path to a diffusers Stable-Diffusion "
                     "folder, e.g. `huggingface-cli download REPO --local-dir DIR` (see the README)")
    drawn = profile.generation.image_size or native
    detail = (f"{path}: native {native} px, generates at {drawn} px, {scheduler.get('prediction_type', 'epsilon')}, "
              f"weights {variants}")
    if drawn != profile.data.image_size:
        return Check(label, False, detail, f"set generation.image_size: {profile.data.image_size} (the references' "
                     "size) in the profile")
    return Check(label, True, detail)


def usable_images(kind: str, root: Path, images_dir: Path | None = None) -> int:
    """How many images of a release have a caption, by listing (no image is opened): a CelebA-Dialog
    folder's captioned images, a CC3M TSV's rows with a downloaded image, an img2dataset folder's
    image files with a caption file. Conversion may still skip a corrupt one."""
    if kind == "celeba_dialog":
        images = next((root / d for d in convert.CELEBA_IMAGE_DIRS if (root / d).is_dir()), None)
        captions = next((root / f for f in convert.CELEBA_CAPTION_FILES if (root / f).is_file()), None)
        if images is None or captions is None:
            return 0
        names = {p.name for p in images.iterdir()}
        return sum(1 for key in json.loads(captions.read_text(encoding="utf-8")) if key in names)
    tsv = root if root.is_file() else next(iter(sorted(root.glob("*.tsv"))), None)
    if tsv is not None:
        folder = images_dir or tsv.parent / "images"
        present = {p.stem for p in folder.iterdir()} if folder.is_dir() else set()
        with open(tsv, encoding="utf-8") as handle:
            return sum(1 for row, line in enumerate(handle) if line.strip() and str(row) in present)
    if not root.is_dir():
        return 0
    return sum(1 for image in convert.img2dataset_images(root) if image.with_suffix(".txt").is_file())


def check_data(profile: Profile, domain: str) -> Check:
    """A real domain's release holds at least as many captioned images as its four roles take."""
    cfg = profile.data.domains[domain]
    label = f"data {domain}"
    if not cfg.root:
        return Check(label, True, f"generated ({cfg.kind})")
    need = int(cfg.source) + int(cfg.heldout) + int(cfg.suspicious_pool) + int(cfg.shadow_pool)
    root = Path(cfg.root)
    if not root.exists():
        return Check(label, False, f"{root} does not exist", f"set data.domains.{domain}.root to the release folder")
    have = usable_images(cfg.kind, root, Path(cfg.images) if cfg.images else None)
    detail = f"{root}: {have:,} captioned images for {need:,} (source, heldout and the two pools)"
    if have < need:
        return Check(label, False, detail, f"lower data.domains.{domain}.suspicious_pool/shadow_pool (they take "
                     f"{int(cfg.suspicious_pool) + int(cfg.shadow_pool):,}), or download more of the release")
    return Check(label, True, detail)


def check_disk(profile: Profile, need_gb: float) -> Check:
    """The data root's file system has room for the plan."""
    root = profile.data_root
    probe = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 1e9
    detail = f"{free:,.0f} GB free at {probe} for a plan of {need_gb:,.0f} GB"
    return Check("disk", free >= need_gb, detail,
                 "" if free >= need_gb else "free space, or set GENLINEAGE_DATA to a larger disk")


def preflight(profile: Profile) -> list[Check]:
    """Every check, in the order a run would hit them."""
    profile = as_profile(profile)
    checks = [check_device(profile), check_executor(profile)]
    checks += [check_base(profile, name) for name in sorted(profile.models.bases)]
    checks += [check_data(profile, domain) for domain in sorted(profile.data.domains)]
    disk = cost_plan(profile)[1]
    checks.append(check_disk(profile, float(disk.gb.dropna().sum())))
    return checks


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"         fix: {check.fix}")
    return "\n".join(lines)
