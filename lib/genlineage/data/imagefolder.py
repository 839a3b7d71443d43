"""The image-folder format every dataset of the package is stored in.

A folder of PNG images plus ``metadata.jsonl``, one JSON object per line with ``file_name``
(relative to the folder) and ``text`` (the caption): the layout Hugging Face ``datasets``'
``imagefolder`` builder and diffusers' ``train_text_to_image.py`` read, so a user can point
either tool at our folders, and we can read theirs. Extra keys per row (``id``, ``domain``,
``attributes``) are kept and ignored by those tools.

Reading validates everything up front and names the offending input with the fix, because a
bad image found an hour into a training run wastes the hour.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..io import atomic_dir

METADATA = "metadata.jsonl"
BUILD_STAMP = "_build.json"


@dataclass
class ImageFolder:
    """A validated image folder: its root and its metadata rows (in file order)."""

    root: Path
    records: list[dict]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def captions(self) -> list[str]:
        return [str(r["text"]) for r in self.records]

    @property
    def paths(self) -> list[Path]:
        return [self.root / r["file_name"] for r in self.records]

    @property
    def ids(self) -> list[Any]:
        """The ``id`` of each row (None where a row has none)."""
        return [r.get("id") for r in self.records]

    def distinct_indices(self) -> list[int]:
        """Row index of the first copy of each image (by ``id``, else ``file_name``): a source set
        repeats duplicated images, but each counts once as a training pair."""
        seen: set = set()
        keep = []
        for i, row in enumerate(self.records):
            key = row.get("id", row["file_name"])
            if key not in seen:
                seen.add(key)
                keep.append(i)
        return keep

    def subset(self, start: int, end: int) -> "ImageFolder":
        """Rows ``start:end`` of this folder (e.g. one base's share of the pre-training corpus)."""
        return ImageFolder(self.root, self.records[start:end])

    def load_images(self, size: int | None = None) -> np.ndarray:
        """All images as float32 [N, H, W, 3] in [0, 1], RGB, resized to size×size if given."""
        if not self.records:
            side = size or 0
            return np.zeros((0, side, side, 3), np.float32)
        return np.stack([load_image(p, size) for p in self.paths])


def _to_pil(image: np.ndarray | Image.Image, where: str) -> Image.Image:
    """Accept PIL images, uint8 arrays, or float arrays in [0, 1] (what models emit)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{where}: image array has shape {arr.shape}; pass HxWx3 RGB (uint8 or float in [0, 1]).")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., :3], "RGB")


def write_imagefolder(
    out_dir: str | Path,
    items: Iterable[tuple[np.ndarray | Image.Image, str, dict]],
    extra_files: Mapping[str, Any] | None = None,
) -> ImageFolder:
    """Write (image, caption, extra) items as ``{i:06d}.png`` + ``metadata.jsonl``, atomically.

    The folder is assembled under a temporary name and renamed into place only when complete,
    so an interrupted write (or an exception raised by ``items``) never leaves a folder that a
    reader would take as finished. ``extra_files`` maps file names to JSON-serialisable objects
    written in the same atomic step, *after* every item (so they may describe the items, e.g.
    a converter's summary); the build cache's ``_build.json`` stamp is one, and its presence
    proves the folder is complete.
    """
    out_dir = Path(out_dir)
    records: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        with open(tmp / METADATA, "w") as meta:
            for i, (image, caption, extra) in enumerate(items):
                name = f"{i:06d}.png"
                if not isinstance(caption, str) or not caption.strip():
                    raise InputError(f"item {i} for {out_dir} has an empty caption; every image needs a non-empty caption.")
                extra = dict(extra or {})
                for reserved in ("file_name", "text"):
                    extra.pop(reserved, None)
                _to_pil(image, f"item {i} for {out_dir}").save(tmp / name, format="PNG")
                row = {"file_name": name, "text": caption, **extra}
                meta.write(json.dumps(row, sort_keys=False) + "\n")
                records.append(row)
        mask = os.umask(0)  # mkdtemp made the folder private (0700); give it the usual mode
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        for fname, obj in (extra_files or {}).items():
            (tmp / fname).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return ImageFolder(out_dir, records)


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """One image as float32 HxWx3 in [0, 1], RGB; resized (PIL BICUBIC) to size×size if given."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist; check the path or rebuild the folder that lists it.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"image {path} cannot be read ({exc}); replace or delete it (and its metadata row).") from None


def _check_file_name(value: Any, meta: Path, lineno: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(
            f"{meta} line {lineno}: 'file_name' must be a non-empty path relative to the folder, got {value!r}; fix the row."
        )
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts:
        raise InputError(
            f"{meta} line {lineno}: file_name {value!r} points outside the folder; use a path relative to {meta.parent}."
        )
    return value


def read_imagefolder(root: str | Path, size: int | None = None, check_images: bool = True) -> ImageFolder:
    """Read and validate an image folder; raise :class:`InputError` naming the input and the fix.

    ``check_images`` decodes every listed image (catching truncated or corrupt files before a
    training run does); ``size`` additionally requires every image to be exactly size×size,
    because distances between images are only meaningful at one common resolution.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(
            f"image folder {root} does not exist; build it (genlineage.data.build_datasets) or convert "
            f"a dataset into it (genlineage.data.convert), or fix the path."
        )
    if not root.is_dir():
        raise InputError(f"{root} is a file, not an image folder; pass the folder that holds {METADATA} and the images.")
    meta = root / METADATA
    if not meta.is_file():
        raise InputError(
            f"{root} has no {METADATA}; an image folder needs one JSON object per line with "
            f'"file_name" and "text" (the caption). Write it, or rebuild the folder.'
        )
    records: list[dict] = []
    with open(meta, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{meta} line {lineno} is not valid JSON ({exc.msg}); fix or delete that line.") from None
            if not isinstance(row, dict):
                raise InputError(f"{meta} line {lineno} is not a JSON object; each line must be {{\"file_name\": ..., \"text\": ...}}.")
            if "file_name" not in row:
                raise InputError(f"{meta} line {lineno} has no 'file_name'; add the image's path relative to {root}.")
            name = _check_file_name(row["file_name"], meta, lineno)
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise InputError(
                    f"{meta} line {lineno} ({name}) has a missing or empty caption ('text'); "
                    f"add a caption or remove the row and its image."
                )
            records.append(row)
    if not records:
        raise InputError(f"{meta} lists no images; the folder is empty. Rebuild it or point at another folder.")

    if check_images or size is not None:
        for lineno, row in enumerate(records, start=1):
            path = root / row["file_name"]
            if not path.is_file():
                raise InputError(
                    f"{path} is listed in {meta} (row {lineno}) but does not exist; restore the image or delete its row."
                )
            try:
                with Image.open(path) as im:
                    found = im.size
                    if check_images:
                        im.load()
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise InputError(f"image {path} is corrupt or unreadable ({exc}); replace it or delete its row in {meta}.") from None
            if size is not None and found != (size, size):
                raise InputError(
                    f"image {path} is {found[0]}x{found[1]} px but {size}x{size} was expected; the converters in "
                    f"genlineage.data.convert resize (center crop + bicubic) to the profile's image_size: "
                    f"re-run them with size={size}."
                )
    return ImageFolder(root, records)
