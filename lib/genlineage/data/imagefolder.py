"""The image-folder format every dataset of the package is stored in.

A folder of PNG images plus ``metadata.jsonl``, one JSON object per line with ``file_name``
(relative to the folder) and ``text`` (the caption): the layout Hugging Face ``datasets``'
``imagefolder`` builder and diffusers' ``train_text_to_image.py`` read, so a user can point
either tool at our folders, and we can read theirs. Extra keys per row (``id``, ``domain``,
``attributes``) are kept and ignored by those tools.

Reading validates everything up front and names the offending input with the fix, because a
bad image found an hour into a training run wastes the hour, and because ``verify`` reads folders
(controls, key sets) that someone else wrote. :func:`read_imagefolder` refuses, writing nothing:

- a ``metadata.jsonl`` above :data:`METADATA_MAX_BYTES` (by its stat size: refused unread), one
  that is not UTF-8, a line that is not a JSON object, a key given twice in a row, a row without
  ``file_name`` or with an empty, missing or non-string caption (``text``), and a ``file_name``
  given twice (one row per image file);
- a ``file_name`` that is absolute or holds ``..``;

and, when it checks the images (``check_images``, or ``size``):

- an image reached through a link that leaves the folder (the image itself, or a folder on its
  way), a dangling link, a link loop; two rows that name one file (through a link or a hard
  link). Links that stay inside are followed; a hard link alone is not refused, because it is
  the file itself, not a path to somewhere else, and its bytes are checked like any image's;
- a listed image that is missing, a folder, a FIFO, socket or device, or empty (0 bytes);
- a file that is not PNG, JPEG or WebP (a text file named ``.png``; an EPS, which PIL would hand
  to Ghostscript), or one whose header claims more than :data:`MAX_IMAGE_PIXELS` pixels
  (decompression bomb: refused on the header, before decoding);
- a truncated or corrupt image, and one of the wrong size when ``size`` is given;
- a caption longer than :data:`MAX_CAPTION_CHARS` (a tokenizer would read all of it first).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..untrusted import DuplicateKey, file_kind, no_duplicate_keys, open_regular, parse_json, read_bounded
from ..io import atomic_dir, write_json

METADATA = "metadata.jsonl"

# metadata.jsonl is refused above this size, by its stat size, before a byte is read: a row of ours
# is about 250 bytes, so this is about 250,000 rows (CC3M's validation split, 15,000 rows, is < 4 MB).
METADATA_MAX_BYTES = 64 << 20
# Images whose header claims more pixels are refused before decoding (PIL's own limit only warns
# below 2 x 89 M pixels and then allocates). 8192 x 8192 passes a 48-megapixel photo; the
# profiles use 32-1024 px.
MAX_IMAGE_PIXELS = 8192 * 8192
# Captions are refused above this length, before anything tokenises them: CLIP reads 77 tokens
# (about 300 characters); COCO's and LAION's captions are far below it.
MAX_CAPTION_CHARS = 8192
# What PIL may identify a listed image as; anything else is refused (see _open_image).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# What PIL raises on a damaged or hostile file (besides DecompressionBombError).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error)


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

    def load_images(self, size: int | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """The images as float32 [N, H, W, 3] in [0, 1], RGB, resized to size×size if given: all of
        them, or only ``rows`` (in that order), so that using 500 rows of a 15,000-image pool decodes
        500 images, not the pool."""
        paths = self.paths if rows is None else [self.paths[int(i)] for i in rows]
        if not paths:
            side = size or 0
            return np.zeros((0, side, side, 3), np.float32)
        return np.stack([load_image(p, size) for p in paths])


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
    a converter's summary); the cache stamp (``genlineage.cache.STAMP``) is one, and its presence
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
            write_json(tmp / fname, obj)
    return ImageFolder(out_dir, records)


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """One image as float32 HxWx3 in [0, 1], RGB; resized (PIL BICUBIC) to size×size if given.

    Opened the way :func:`read_imagefolder` opens images (a regular file, PNG/JPEG/WebP only, the
    pixel bound checked on the header before decoding), so a folder read with
    ``check_images=False`` is still safe to load."""
    path = Path(path)
    fix = "replace or delete it (and its metadata row)"
    with _open_image(path, fix) as im:
        _decode(im, path, fix)
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.float32) / 255.0


# --- reading files someone else wrote: where they are, what they are, how big ------------------

def _inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both real paths; compared as strings, which is cheap)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _locate_inside(path: Path, real_root: Path, root: Path, fix: str) -> tuple[Path, os.stat_result]:
    """Where ``path`` really is and its stat, once shown to be a regular file inside the folder.

    A link (the file itself, or a folder on its way) is followed only if it ends inside the
    folder: whoever wrote the folder could point a link at any file of the machine (a private
    photo read as a control, ``/dev/zero`` read forever). Links inside are allowed because they
    reach nothing the folder does not already hold. Hard links are not refused: a hard link *is*
    the file, no path outside is followed, and its bytes are checked like any other image's.
    """
    if not os.path.lexists(path):
        raise InputError(f"{path} does not exist; {fix}.")
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(f"{path} is a link loop (it leads back to itself); replace the link by the real file, "
                             f"or {fix}.") from None
        raise InputError(f"{path} is a link to nothing ({err.strerror}); replace the link by the real file, "
                         f"or {fix}.") from None
    target = Path(os.path.realpath(path))
    if not _inside(str(target), str(real_root)):
        raise InputError(f"{path} leads outside the image folder {root} (a link to {target}); copy the real file "
                         "into the folder (e.g. cp -L) instead of linking to it.")
    if not stat.S_ISREG(st.st_mode):
        why = "" if stat.S_ISDIR(st.st_mode) else " (reading a FIFO blocks, a device may never end)"
        raise InputError(f"{path} is a {file_kind(st.st_mode)}, not a file{why}; {fix}.")
    return target, st


def read_small_file(path: str | Path, root: str | Path, bound: int, fix: str) -> bytes:
    """The bytes of a small file (``metadata.jsonl``, ``_keys.json``) of a folder someone else
    wrote: it must lie inside ``root`` (links followed only inside), be a regular file, and hold
    at most ``bound`` bytes by its stat size, so an oversized (or sparse multi-GB) file is refused
    before a byte of it is read; a file that grows meanwhile is still read only to the bound."""
    path, root = Path(path), Path(root)
    target, st = _locate_inside(path, Path(os.path.realpath(root)), root, fix)
    if st.st_size > bound:
        raise InputError(f"{path} is {st.st_size:,} bytes, above the {bound:,}-byte bound for this file (it is "
                         f"refused unread); {fix}.")
    return read_bounded(target, bound, fix)  # checked again on the open file: it may have changed meanwhile


def read_small_json(path: str | Path, root: str | Path, bound: int, fix: str) -> Any:
    """A small JSON file of a folder someone else wrote (:func:`read_small_file`), parsed as
    strict UTF-8 JSON that gives no key twice; an :class:`InputError` naming it otherwise."""
    return parse_json(read_small_file(path, root, bound, fix), path, fix)


# --- images: format, pixel bound, decoding ------------------------------------------------------

@contextlib.contextmanager
def _open_image(path: Path, fix: str) -> Iterator[Image.Image]:
    """``path`` opened as a PIL image, header parsed and pixels not yet decoded.

    Only PNG, JPEG and WebP are identified: PIL would otherwise hand a file that says it is EPS to
    Ghostscript, and parse a dozen rarer formats. The size the header claims is checked against
    :data:`MAX_IMAGE_PIXELS` here, before decoding: a few-KB PNG can claim 100,000 × 100,000 px.
    """
    fd = open_regular(path, fix)
    with os.fdopen(fd, "rb") as handle:
        if os.fstat(fd).st_size == 0:
            raise InputError(f"image {path} is empty (0 bytes); {fix}.")
        try:
            im = Image.open(handle, formats=IMAGE_FORMATS)
        except Image.DecompressionBombError as exc:
            raise InputError(f"image {path} claims more than the {MAX_IMAGE_PIXELS:,}-pixel bound ({exc}); it is "
                             f"refused before decoding. Resize it, or {fix}.") from None
        except _DECODE_ERRORS as exc:
            raise InputError(f"image {path} is not an image that genlineage reads (PNG, JPEG or WebP), or it is "
                             f"corrupt ({exc}); {fix}.") from None
        with im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"image {path} is {width}x{height} px ({width * height:,} pixels), above the "
                                 f"{MAX_IMAGE_PIXELS:,}-pixel bound (8192x8192); it is refused before decoding. "
                                 f"Resize it, or {fix}.")
            yield im


def image_header_size(path: str | Path, root: str | Path, fix: str) -> tuple[int, int]:
    """(width, height) of an image of the folder ``root`` from its header alone, nothing decoded:
    the file checked like a listed image (inside the folder, a regular file, PNG/JPEG/WebP within
    the pixel bound). What a reader compares with the size it expects before it decodes a pixel:
    a 200 KB PNG can decode to 200 MB."""
    path, root = Path(path), Path(root)
    _locate_inside(path, Path(os.path.realpath(root)), root, fix)
    with _open_image(path, fix) as im:
        return im.size


def _decode(im: Image.Image, path: Path, fix: str) -> None:
    """Decode every pixel, so that a truncated or corrupt file is found now, not an hour into a run."""
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        raise InputError(f"image {path} is corrupt or truncated ({exc}); {fix}.") from None


# --- metadata.jsonl: one JSON object per line ---------------------------------------------------

def _check_file_name(value: Any, meta: Path, lineno: int) -> str:
    """A non-empty relative path with no ``..``: the first, textual check that an image lies in the
    folder (links are followed, and checked, when the images are opened)."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InputError(
            f"{meta} line {lineno}: 'file_name' must be a non-empty path relative to the folder, got {value!r}; fix the row."
        )
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts:
        raise InputError(
            f"{meta} line {lineno}: file_name {value!r} points outside the folder; use a path relative to {meta.parent}."
        )
    return value


def _check_caption(row: dict, meta: Path, lineno: int, name: str) -> None:
    """Every image needs a non-empty string caption: a text-to-image model trains on the pair,
    and an attribution key is a prompt."""
    fix = "write a caption, or remove the row and its image"
    if "text" not in row or row["text"] is None:
        raise InputError(f"{meta} line {lineno} ({name}) has no caption ('text'); {fix}.")
    text = row["text"]
    if not isinstance(text, str):
        raise InputError(f"{meta} line {lineno} ({name}) has a caption ('text') that is a {type(text).__name__}, "
                         f"not a string: {str(text)[:60]!r}; {fix}.")
    if not text.strip():
        raise InputError(f"{meta} line {lineno} ({name}) has an empty caption ('text'); {fix}.")
    if len(text) > MAX_CAPTION_CHARS:
        raise InputError(f"{meta} line {lineno} ({name}) has a caption of {len(text):,} characters, above the "
                         f"{MAX_CAPTION_CHARS:,}-character bound (a text encoder reads its first 77 tokens, a few "
                         "hundred characters, but a tokenizer reads it all first); shorten it.")


def _parse_row(line: bytes, meta: Path, lineno: int) -> dict:
    """One line of metadata.jsonl as a checked row (strict UTF-8 JSON object, no key twice)."""
    try:
        text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{meta} line {lineno} is not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                         f"JSON Lines is UTF-8: re-save the file as UTF-8.") from None
    try:
        row = json.loads(text, object_pairs_hook=no_duplicate_keys)
    except DuplicateKey as exc:
        raise InputError(f"{meta} line {lineno} gives the key {exc.args[0]!r} twice; keep one.") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise InputError(f"{meta} line {lineno} is not valid JSON ({reason}); fix or delete that line.") from None
    if not isinstance(row, dict):
        raise InputError(f"{meta} line {lineno} is not a JSON object; each line must be {{\"file_name\": ..., \"text\": ...}}.")
    if "file_name" not in row:
        raise InputError(f"{meta} line {lineno} has no 'file_name'; add the image's path relative to {meta.parent}.")
    _check_caption(row, meta, lineno, _check_file_name(row["file_name"], meta, lineno))
    return row


def _read_metadata(root: Path) -> tuple[list[dict], list[int]]:
    """The rows of ``root/metadata.jsonl`` and the line number of each (blank lines skipped).

    The file is refused by its stat size above :data:`METADATA_MAX_BYTES`, never read. A
    ``file_name`` given twice is refused (after normalising ``./a.png`` to ``a.png``): the format
    is one row per image file (:func:`write_imagefolder` writes a file per row, even for a source
    set's duplicated images), and a repeated row silently counts one image twice (as two controls
    of ``verify``'s Fisher test, or two candidate keys).
    """
    meta = root / METADATA
    if not os.path.lexists(meta):
        raise InputError(
            f"{root} has no {METADATA}; an image folder needs one JSON object per line with "
            f'"file_name" and "text" (the caption). Write it, or rebuild the folder.'
        )
    blob = read_small_file(meta, root, METADATA_MAX_BYTES,
                           f"an image folder's {METADATA} is a small UTF-8 file (at most {METADATA_MAX_BYTES:,} "
                           "bytes) inside the folder: write it there, or split the folder")
    records: list[dict] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(blob.split(b"\n"), start=1):
        if not line.strip():
            continue
        row = _parse_row(line, meta, lineno)
        name = str(PurePosixPath(row["file_name"]))
        if name in first_line:
            raise InputError(f"{meta} line {lineno} repeats file_name {row['file_name']!r} of line {first_line[name]}; "
                             "each image file has one row (a repeated row counts one image twice). Delete the "
                             "repeated row, or copy the image under a name of its own.")
        first_line[name] = lineno
        records.append(row)
        lines.append(lineno)
    if not records:
        raise InputError(f"{meta} lists no images; the folder is empty. Rebuild it or point at another folder.")
    return records, lines


def _check_image(path: Path, real_root: Path, root: Path, where: str, size: int | None,
                 decode: bool) -> tuple[int, int]:
    """Check one listed image (inside the folder, a regular non-empty file, PNG/JPEG/WebP within
    the pixel bound, exactly size×size if given, fully decodable if ``decode``); return the
    (device, inode) that identifies the file."""
    fix = f"replace it, or delete its row ({where})"
    if not os.path.lexists(path):
        raise InputError(f"{path} is listed in {where} but does not exist; restore the image or delete its row.")
    _, st = _locate_inside(path, real_root, root, fix)
    with _open_image(path, fix) as im:
        found = im.size
        if size is not None and found != (size, size):
            raise InputError(
                f"image {path} is {found[0]}x{found[1]} px but {size}x{size} was expected; the converters in "
                f"genlineage.data.convert resize (center crop + bicubic) to the profile's image_size: "
                f"re-run them with size={size}."
            )
        if decode:
            _decode(im, path, fix)
    return st.st_dev, st.st_ino


def read_imagefolder(root: str | Path, size: int | None = None, check_images: bool = True) -> ImageFolder:
    """Read and validate an image folder; raise :class:`InputError` naming the input and the fix.

    The metadata is always checked (see the module docstring for what is refused). ``check_images``
    also checks every listed image file (where it lies, what it is, its header) and decodes it,
    catching truncated or corrupt files before a training run does; ``size`` requires every image
    to be exactly size×size (checked on the header), because distances between images are only
    meaningful at one common resolution. With ``check_images=False`` and no ``size`` the image
    files are not looked at: the fast path for folders this package has just written.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(
            f"image folder {root} does not exist; build it (genlineage.data.build_datasets) or convert "
            f"a dataset into it (genlineage.data.convert), or fix the path."
        )
    if not root.is_dir():
        raise InputError(f"{root} is a file, not an image folder; pass the folder that holds {METADATA} and the images.")
    records, lines = _read_metadata(root)
    if check_images or size is not None:
        real_root = Path(os.path.realpath(root))
        first_row: dict[tuple[int, int], tuple[Path, int]] = {}
        for row, lineno in zip(records, lines):
            path = root / row["file_name"]
            identity = _check_image(path, real_root, root, f"{root / METADATA} line {lineno}", size, check_images)
            if identity in first_row:
                other, other_line = first_row[identity]
                raise InputError(f"{path} ({METADATA} line {lineno}) is the same file as {other} (line {other_line}), "
                                 "through a link: one image would count twice. Delete one of the rows, or copy "
                                 "the image under a name of its own.")
            first_row[identity] = (path, lineno)
    return ImageFolder(root, records)
