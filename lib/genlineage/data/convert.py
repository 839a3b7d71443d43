"""Converters from the real datasets' release layouts into the package's image-folder format.

Both write size×size PNGs (center crop to a square, then PIL BICUBIC) and ``metadata.jsonl``
rows with ``id`` (the image's key in the release, stable across re-conversions) and ``text``.

Missing and corrupt images are **skipped and counted**, not fatal: web-scraped CC3M always has
dead links (a fifth or more of the URLs), and CelebA-Dialog's caption file lists one image
without a caption. Every skip is reported in the returned summary (also stored as
``_convert.json`` in the output folder), and a conversion that yields no usable image raises.
A structurally wrong input (wrong folder, malformed JSON or TSV) raises at once, naming what was
expected, because skipping cannot fix it.

Layouts accepted
----------------
CelebA-Dialog (Jiang et al. 2021; the release's ``image.zip`` and ``text.zip`` unpacked)::

    <root>/image/<n>.jpg                  # also accepted: images/, CelebA-HQ-img/
    <root>/text/captions_hq.json          # also accepted: <root>/captions_hq.json, text_hq/
    captions_hq.json = {"<n>.jpg": {"overall_caption": "...", "attribute_wise_captions": {...}}, ...}

CC3M, either

(a) Google's TSV (``caption<TAB>url`` per line, no header) plus the images you downloaded,
    named by 0-based row number: ``<images>/<row>.jpg`` (or .jpeg/.png/.webp), where
    ``<images>`` defaults to an ``images/`` folder beside the TSV; pass the TSV file, or a
    folder holding exactly one ``.tsv`` and ``images/``; or
(b) an img2dataset output folder written with ``--output_format files``: shard folders
    ``00000/000000000.jpg`` with ``000000000.txt`` (caption) and optionally ``.json``.
    Webdataset ``.tar`` shards are refused with the fix (re-run with ``--output_format files``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import InputError
from .imagefolder import write_imagefolder

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CELEBA_IMAGE_DIRS = ("image", "images", "CelebA-HQ-img")
CELEBA_CAPTION_FILES = ("text/captions_hq.json", "captions_hq.json", "text_hq/captions_hq.json")
SUMMARY_FILE = "_convert.json"
_EXAMPLES = 10  # skipped names listed per reason in the summary


def square_resize(im: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square, then resize to size×size with BICUBIC (RGB)."""
    im = im.convert("RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != size:
        im = im.resize((size, size), Image.BICUBIC)
    return im


def _open_square(path: Path, size: int) -> Image.Image | None:
    """The resized image, or None if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return square_resize(im, size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


class _Summary:
    """Counts and example names of everything converted or skipped, by reason."""

    def __init__(self, layout: str, source: Path, out_dir: Path, size: int) -> None:
        self.data: dict[str, Any] = {
            "layout": layout, "source": str(source), "out_dir": str(out_dir), "image_size": size,
            "rows": 0, "written": 0, "skipped": {}, "examples": {},
        }

    def skip(self, reason: str, name: str) -> None:
        self.data["skipped"][reason] = self.data["skipped"].get(reason, 0) + 1
        examples = self.data["examples"].setdefault(reason, [])
        if len(examples) < _EXAMPLES:
            examples.append(name)

    def describe(self) -> str:
        skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.data["skipped"].items()) or "none"
        return f"{self.data['written']} of {self.data['rows']} written; skipped: {skipped}"


def _listing(root: Path, limit: int = 12) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError:
        return "(unreadable)"
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "(empty)"


def _write(
    out_dir: Path,
    items: Iterator[tuple[Image.Image, str, dict]],
    summary: _Summary,
    limit: int | None,
    no_usable_hint: str,
    extra_files: Mapping[str, Any] | None,
) -> dict:
    def limited() -> Iterator[tuple[Image.Image, str, dict]]:
        # a real release takes minutes to hours to convert: the bar shows the rate, and with a limit the time left
        with tqdm(total=limit, desc=f"convert {out_dir.name}", unit="image", leave=False) as bar:
            for item in items:
                if limit is not None and summary.data["written"] >= limit:
                    return
                summary.data["written"] += 1
                bar.update()
                yield item
        if summary.data["written"] == 0:  # raising here leaves no output folder behind
            raise InputError(f"no usable image in {summary.data['source']} ({summary.describe()}); {no_usable_hint}")

    files = {SUMMARY_FILE: summary.data, **(extra_files or {})}
    write_imagefolder(out_dir, limited(), extra_files=files)
    if summary.data["skipped"]:
        log.warning("converted %s: %s (see %s)", summary.data["source"], summary.describe(), out_dir / SUMMARY_FILE)
    return summary.data


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 8:
        raise InputError(f"size={size!r}: pass the profile's image_size (an integer >= 8).")


def _numeric_key(name: str) -> tuple[int, str]:
    stem = Path(name).stem
    return (int(stem), name) if stem.isdigit() else (1 << 62, name)


def _celeba_release_files(src: Path) -> tuple[Path, Path]:
    """The image folder and the caption file of a CelebA-Dialog release, or a refusal naming what
    is missing and what the folder holds."""
    if not src.is_dir():
        raise InputError(f"CelebA-Dialog root {src} is not a folder; pass the folder holding image/ and text/captions_hq.json.")
    images_dir = next((src / d for d in CELEBA_IMAGE_DIRS if (src / d).is_dir()), None)
    captions_file = next((src / f for f in CELEBA_CAPTION_FILES if (src / f).is_file()), None)
    if images_dir is None or captions_file is None:
        missing = []
        if images_dir is None:
            missing.append("an image folder (image/<n>.jpg, from the release's image.zip)")
        if captions_file is None:
            missing.append("text/captions_hq.json (from the release's text.zip)")
        raise InputError(
            f"{src} does not look like a CelebA-Dialog release: missing {' and '.join(missing)}. "
            f"Expected <root>/image/<n>.jpg and <root>/text/captions_hq.json; found: {_listing(src)}."
        )
    return images_dir, captions_file


def _celeba_captions(captions_file: Path) -> dict:
    """The release's caption file: a non-empty object mapping image names to their captions."""
    try:
        captions = json.loads(captions_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{captions_file} is not valid JSON ({exc}); re-extract it from the release's text.zip.") from None
    if not isinstance(captions, dict) or not captions:
        raise InputError(
            f"{captions_file} should map image names to {{'overall_caption': ..., 'attribute_wise_captions': ...}}; "
            f"found {type(captions).__name__}. Use captions_hq.json, not request_hq.json."
        )
    return captions


def convert_celeba_dialog(
    src_root: str | Path,
    out_dir: str | Path,
    size: int,
    limit: int | None = None,
    extra_files: Mapping[str, Any] | None = None,
) -> dict:
    """Convert a CelebA-Dialog(-HQ) release into an image folder; return the summary.

    Rows carry ``id`` (the image's number), ``text`` (``overall_caption``) and ``attributes``
    (``attribute_wise_captions`` and the source file name). Images without a caption entry
    are not listed by the caption file and so are not converted (counted as
    ``image_without_caption``).
    """
    _check_size(size)
    src, out_dir = Path(src_root), Path(out_dir)
    images_dir, captions_file = _celeba_release_files(src)
    captions = _celeba_captions(captions_file)
    summary = _Summary("celeba_dialog", src, out_dir, size)
    on_disk = {p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    for name in sorted(on_disk - set(captions), key=_numeric_key):
        summary.skip("image_without_caption", name)

    def items() -> Iterator[tuple[Image.Image, str, dict]]:
        for name in sorted(captions, key=_numeric_key):
            summary.data["rows"] += 1
            entry = captions[name]
            if isinstance(entry, str):
                caption, attr_caps = entry, {}
            elif isinstance(entry, dict):
                caption, attr_caps = entry.get("overall_caption"), entry.get("attribute_wise_captions") or {}
            else:
                raise InputError(f"{captions_file}: entry {name!r} is a {type(entry).__name__}; "
                                 "expected an object with 'overall_caption'.")
            if not isinstance(caption, str) or not caption.strip():
                summary.skip("empty_caption", name)
                continue
            path = images_dir / name
            if name not in on_disk:
                summary.skip("missing_image", name)
                continue
            image = _open_square(path, size)
            if image is None:
                summary.skip("corrupt_image", name)
                continue
            yield image, caption.strip(), {
                "id": Path(name).stem,
                "attributes": {"source_file": name, "attribute_wise_captions": attr_caps},
            }

    hint = f"check that {images_dir} holds the images named in {captions_file}."
    return _write(out_dir, items(), summary, limit, hint, extra_files)


def _find_row_image(images_dir: Path, row: int) -> Path | None:
    for ext in IMAGE_EXTS:
        path = images_dir / f"{row}{ext}"
        if path.is_file():
            return path
    return None


def _cc3m_tsv(tsv: Path, images_dir: Path, out_dir: Path, size: int, limit: int | None,
              extra_files: Mapping[str, Any] | None) -> dict:
    if not images_dir.is_dir():
        raise InputError(
            f"CC3M images folder {images_dir} does not exist; put the downloaded images there named by "
            f"0-based TSV row (<row>.jpg), or pass images_dir=..."
        )
    summary = _Summary("cc3m_tsv", tsv, out_dir, size)

    def items() -> Iterator[tuple[Image.Image, str, dict]]:
        with open(tsv, encoding="utf-8") as handle:
            for row, line in enumerate(handle):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2:
                    raise InputError(
                        f"{tsv} line {row + 1} has no tab; expected Google's CC3M format 'caption<TAB>url' "
                        f"(no header). Pass the TSV, not another file."
                    )
                summary.data["rows"] += 1
                caption, url = fields[0].strip(), fields[1].strip()
                if not caption:
                    summary.skip("empty_caption", str(row))
                    continue
                path = _find_row_image(images_dir, row)
                if path is None:
                    summary.skip("missing_image", str(row))
                    continue
                image = _open_square(path, size)
                if image is None:
                    summary.skip("corrupt_image", path.name)
                    continue
                yield image, caption, {"id": str(row), "attributes": {"url": url, "source_file": path.name}}

    hint = f"images must be named by 0-based TSV row in {images_dir}, e.g. {images_dir / '0.jpg'}."
    return _write(out_dir, items(), summary, limit, hint, extra_files)


def img2dataset_images(root: Path) -> list[Path]:
    """Image files in ``root`` and its shard folders (one level deep), sorted by key."""
    images = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    for shard in sorted(p for p in root.iterdir() if p.is_dir()):
        images += [p for p in shard.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return sorted(images, key=lambda p: (p.stem, str(p)))


def _caption_of(image: Path) -> str | None:
    txt = image.with_suffix(".txt")
    if txt.is_file():
        return txt.read_text(encoding="utf-8", errors="replace").strip()
    meta = image.with_suffix(".json")
    if meta.is_file():
        try:
            caption = json.loads(meta.read_text(encoding="utf-8")).get("caption")
        except (json.JSONDecodeError, AttributeError):
            return None
        return caption.strip() if isinstance(caption, str) else None
    return None


def _cc3m_img2dataset(root: Path, images: list[Path], out_dir: Path, size: int, limit: int | None,
                      extra_files: Mapping[str, Any] | None) -> dict:
    summary = _Summary("img2dataset", root, out_dir, size)
    seen: set[str] = set()

    def items() -> Iterator[tuple[Image.Image, str, dict]]:
        for path in images:
            summary.data["rows"] += 1
            key = path.stem
            rel = str(path.relative_to(root))
            if key in seen:
                summary.skip("duplicate_key", rel)
                continue
            seen.add(key)
            caption = _caption_of(path)
            if not caption:
                summary.skip("empty_caption", rel)
                continue
            image = _open_square(path, size)
            if image is None:
                summary.skip("corrupt_image", rel)
                continue
            attributes: dict[str, Any] = {"source_file": rel}
            meta = path.with_suffix(".json")
            if meta.is_file():
                try:
                    url = json.loads(meta.read_text(encoding="utf-8")).get("url")
                except (json.JSONDecodeError, AttributeError):
                    url = None
                if url:
                    attributes["url"] = url
            yield image, caption, {"id": key, "attributes": attributes}

    hint = "each image needs a caption in <key>.txt (img2dataset --output_format files writes one)."
    return _write(out_dir, items(), summary, limit, hint, extra_files)


def convert_cc3m(
    src: str | Path,
    out_dir: str | Path,
    size: int,
    limit: int | None = None,
    images_dir: str | Path | None = None,
    extra_files: Mapping[str, Any] | None = None,
) -> dict:
    """Convert CC3M (TSV + downloaded images, or img2dataset files output) into an image folder.

    Returns the summary (layout, rows seen, written, skipped counts by reason with examples).
    Rows carry ``id`` (TSV row number, or img2dataset key), ``text`` and ``attributes``
    (source file, URL when known).
    """
    _check_size(size)
    src, out_dir = Path(src), Path(out_dir)
    if not src.exists():
        raise InputError(
            f"CC3M source {src} does not exist; pass the caption TSV (caption<TAB>url) or an img2dataset output folder."
        )
    if src.is_file():
        if src.suffix.lower() not in (".tsv", ".txt"):
            raise InputError(f"{src} is not a TSV; pass Google's CC3M caption file (caption<TAB>url) or an img2dataset folder.")
        return _cc3m_tsv(src, Path(images_dir) if images_dir else src.parent / "images", out_dir, size, limit, extra_files)
    tsvs = sorted(src.glob("*.tsv"))
    if tsvs:
        if len(tsvs) > 1:
            raise InputError(f"{src} holds several TSV files ({', '.join(p.name for p in tsvs)}); pass the one to convert.")
        return _cc3m_tsv(tsvs[0], Path(images_dir) if images_dir else src / "images", out_dir, size, limit, extra_files)
    images = img2dataset_images(src)
    if images:
        return _cc3m_img2dataset(src, images, out_dir, size, limit, extra_files)
    if any(src.glob("*.tar")):
        raise InputError(
            f"{src} holds webdataset .tar shards; re-run img2dataset with --output_format files "
            f"(or extract every .tar into its own folder) and pass that folder."
        )
    raise InputError(
        f"{src} matches no CC3M layout: expected a caption TSV with images/<row>.jpg, or img2dataset "
        f"'--output_format files' shards (00000/000000000.jpg + .txt); found: {_listing(src)}."
    )
