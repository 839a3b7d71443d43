"""The hostile battery, the part beside the model folders of ``test_gate.py`` (docs/method.md#untrusted-inputs):
malformed and hostile image folders (``read_imagefolder``: datasets, ``verify``'s controls) and key
sets (``KeySet.load``: ``verify --keys``), which a user or an adversary may have written.

Each case builds a good folder, applies one edit and returns the file the refusal must name. The
refusal must be an InputError that names it (and matches what was wrong), and nothing may be
written anywhere below the test's folder. Oversized files must be refused by their stat size,
never opened.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from conftest import snapshot
from genlineage.data import imagefolder
from genlineage.data.imagefolder import (MAX_IMAGE_PIXELS, METADATA_MAX_BYTES, read_imagefolder,
                                         write_imagefolder)
from genlineage.errors import InputError
from genlineage.keys import KEYS_FILE, KEYS_MAX_BYTES, KeySet

Edit = Callable[[Path, Path], Path]


# --- helpers ------------------------------------------------------------------------------------

def _png(path: Path, side: int, seed: int = 0) -> Path:
    """A real PNG of noise (noise, so that its pixel data does not compress to a few bytes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def _png_claiming(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header claims width x height pixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines() if line.strip()]


def _write_rows(folder: Path, rows: list[Any]) -> Path:
    """metadata.jsonl from rows (dicts are dumped; str and bytes lines are written as they are)."""
    lines = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    (folder / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder / "metadata.jsonl"


def _set_row(row: int, /, **changes: Any) -> Edit:
    """An edit that changes row ``row`` (0-based) of metadata.jsonl (a value of ``...`` deletes the key)."""
    def edit(folder: Path, tmp: Path) -> Path:
        rows = _rows(folder)
        for key, value in changes.items():
            if value is ...:
                rows[row].pop(key, None)
            else:
                rows[row][key] = value
        return _write_rows(folder, rows)
    return edit


def _raw_line(line: bytes, at: int = 1) -> Edit:
    """An edit that replaces line ``at`` (0-based) of metadata.jsonl by the raw bytes ``line``."""
    def edit(folder: Path, tmp: Path) -> Path:
        rows: list[Any] = _rows(folder)
        rows[at] = line
        return _write_rows(folder, rows)
    return edit


def _outside(tmp: Path, side: int = 8) -> Path:
    """A valid image outside the folder: what a hostile link or file name reaches for."""
    (tmp / "outside").mkdir(exist_ok=True)
    return _png(tmp / "outside" / "secret.png", side, seed=99)


def _replace(name: str, make: Callable[[Path, Path], None]) -> Edit:
    """An edit that deletes the folder's file ``name`` and makes something else in its place."""
    def edit(folder: Path, tmp: Path) -> Path:
        (folder / name).unlink()
        make(folder / name, tmp)
        return folder / name
    return edit


def _write(name: str, blob: bytes) -> Edit:
    return _replace(name, lambda path, tmp: path.write_bytes(blob))


def _sparse(name: str, size: int) -> Edit:
    """``name`` replaced by a sparse file of ``size`` NUL bytes (if it were read, its NULs are no JSON)."""
    def make(path: Path, tmp: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(size)
    return _replace(name, make)


def _truncated(name: str) -> Edit:
    def edit(folder: Path, tmp: Path) -> Path:
        blob = (folder / name).read_bytes()
        (folder / name).write_bytes(blob[: len(blob) * 2 // 3])
        return folder / name
    return edit


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A good image folder of three 8x8 noise images, as write_imagefolder writes it."""
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), f"caption {i}", {"id": f"x:{i}"}) for i in range(3)]
    return write_imagefolder(tmp_path / "images", items).root


# --- image folders ------------------------------------------------------------------------------

def dotdot(folder, tmp):
    _outside(tmp)
    return _set_row(0, file_name="../outside/secret.png")(folder, tmp)


def dotdot_nested(folder, tmp):
    _outside(tmp)
    return _set_row(0, file_name="sub/../../outside/secret.png")(folder, tmp)


def absolute(folder, tmp):
    return _set_row(0, file_name=str(_outside(tmp)))(folder, tmp)


def link_outside(folder, tmp):
    return _replace("000001.png", lambda path, t: path.symlink_to(_outside(t)))(folder, tmp)


def link_folder_outside(folder, tmp):
    _outside(tmp)
    (folder / "linked").symlink_to(tmp / "outside", target_is_directory=True)
    _set_row(0, file_name="linked/secret.png")(folder, tmp)
    return folder / "linked" / "secret.png"


def link_dangling(folder, tmp):
    return _replace("000001.png", lambda path, t: path.symlink_to(path.parent / "gone.png"))(folder, tmp)


def link_loop(folder, tmp):
    return _replace("000001.png", lambda path, t: path.symlink_to(path))(folder, tmp)


def same_file_by_link(folder, tmp):
    return _replace("000002.png", lambda path, t: path.symlink_to("000000.png"))(folder, tmp)


def same_file_by_hard_link(folder, tmp):
    return _replace("000002.png", lambda path, t: os.link(path.parent / "000000.png", path))(folder, tmp)


def fifo(folder, tmp):
    return _replace("000001.png", lambda path, t: os.mkfifo(path))(folder, tmp)


def image_is_a_folder(folder, tmp):
    return _replace("000001.png", lambda path, t: path.mkdir())(folder, tmp)


def eps_named_png(folder, tmp):  # what PIL, unrestricted, would hand to Ghostscript
    return _write("000001.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n")(folder, tmp)


def metadata_fifo(folder, tmp):
    return _replace("metadata.jsonl", lambda path, t: os.mkfifo(path))(folder, tmp)


def metadata_link_outside(folder, tmp):
    def make(path: Path, t: Path) -> None:
        (t / "outside").mkdir(exist_ok=True)
        (t / "outside" / "metadata.jsonl").write_text(json.dumps({"file_name": "000000.png", "text": "x"}) + "\n")
        path.symlink_to(t / "outside" / "metadata.jsonl")
    return _replace("metadata.jsonl", make)(folder, tmp)


def metadata_blank(folder, tmp):
    return _write_rows(folder, ["", "   "])


def repeated_file_name(folder, tmp):
    rows = _rows(folder)
    rows[2]["file_name"] = rows[0]["file_name"]
    return _write_rows(folder, rows)


def repeated_file_name_spelt_otherwise(folder, tmp):
    rows = _rows(folder)
    rows[2]["file_name"] = "./" + rows[0]["file_name"]
    return _write_rows(folder, rows)


GOOD_ROW = json.dumps({"file_name": "000001.png", "text": "caption"}).encode()

IMAGE_FOLDER_CASES = [
    pytest.param(dotdot, "points outside the folder", id="file-name-dotdot"),
    pytest.param(dotdot_nested, "points outside the folder", id="file-name-dotdot-nested"),
    pytest.param(absolute, "points outside the folder", id="file-name-absolute"),
    pytest.param(link_outside, "leads outside the image folder", id="image-link-outside"),
    pytest.param(link_folder_outside, "leads outside the image folder", id="image-under-linked-folder-outside"),
    pytest.param(link_dangling, "link to nothing", id="image-link-dangling"),
    pytest.param(link_loop, "link loop", id="image-link-loop"),
    pytest.param(same_file_by_link, "same file as", id="two-rows-one-file-by-link"),
    pytest.param(same_file_by_hard_link, "same file as", id="two-rows-one-file-by-hard-link"),
    pytest.param(fifo, "FIFO", id="image-fifo"),
    pytest.param(image_is_a_folder, "is a folder, not a file", id="image-is-a-folder"),
    pytest.param(_replace("000001.png", lambda p, t: None), "does not exist", id="image-missing"),
    pytest.param(_write("000001.png", b""), r"empty \(0 bytes\)", id="image-zero-bytes"),
    pytest.param(_write("000001.png", b"just some text\n"), "PNG, JPEG or WebP", id="text-named-png"),
    pytest.param(eps_named_png, "PNG, JPEG or WebP", id="eps-named-png"),
    pytest.param(_write("000001.png", b"\x89PNG\r\n\x1a\n garbage"), "corrupt", id="png-garbage"),
    pytest.param(_truncated("000001.png"), "corrupt", id="png-truncated"),
    pytest.param(_write("000001.png", _png_claiming(9000, 9000)), "pixel bound", id="bomb-81M-pixels"),
    pytest.param(_write("000001.png", _png_claiming(100_000, 100_000)), "pixel bound", id="bomb-10G-pixels"),
    pytest.param(_sparse("metadata.jsonl", METADATA_MAX_BYTES + 1), "refused unread", id="metadata-above-size-bound"),
    pytest.param(metadata_fifo, "FIFO", id="metadata-fifo"),
    pytest.param(metadata_link_outside, "leads outside the image folder", id="metadata-link-outside"),
    pytest.param(metadata_blank, "lists no images", id="metadata-no-rows"),
    pytest.param(_raw_line(b'{"file_name": "000001.png", "text": "bad \xff\xfe bytes"}'), "line 2 is not UTF-8",
                 id="metadata-not-utf8"),
    pytest.param(_raw_line(b'{"file_name": "000001.png", "text": '), "line 2 is not valid JSON", id="line-not-json"),
    pytest.param(_raw_line(b"[" * 100_000), "line 2 is not valid JSON", id="line-nested-100k-deep"),
    pytest.param(_raw_line(b'["000001.png", "caption"]'), "line 2 is not a JSON object", id="line-not-an-object"),
    pytest.param(_raw_line(GOOD_ROW[:-1] + b', "text": "another caption"}'), "'text' twice", id="row-key-twice"),
    pytest.param(_set_row(1, text=""), "line 2 .*empty caption", id="caption-empty"),
    pytest.param(_set_row(1, text=" \t "), "line 2 .*empty caption", id="caption-whitespace"),
    pytest.param(_set_row(1, text=...), "line 2 .*no caption", id="caption-missing"),
    pytest.param(_set_row(1, text=None), "line 2 .*no caption", id="caption-null"),
    pytest.param(_set_row(1, text=7), "line 2 .*is a int, not a string", id="caption-number"),
    pytest.param(_set_row(1, text=["a", "b"]), "line 2 .*is a list, not a string", id="caption-list"),
    pytest.param(_set_row(1, file_name=...), "line 2 has no 'file_name'", id="file-name-missing"),
    pytest.param(_set_row(1, file_name=7), "line 2: 'file_name' must be", id="file-name-number"),
    pytest.param(_set_row(1, file_name=""), "line 2: 'file_name' must be", id="file-name-empty"),
    pytest.param(_set_row(1, file_name="000001.png\x00.txt"), "line 2: 'file_name' must be", id="file-name-nul-byte"),
    pytest.param(repeated_file_name, "line 3 repeats file_name", id="file-name-repeated"),
    pytest.param(repeated_file_name_spelt_otherwise, "line 3 repeats file_name", id="file-name-repeated-as-dot-slash"),
]


@pytest.fixture()
def opened(monkeypatch) -> list[Path]:
    """Every path the readers open (real paths), to show an oversized file is never opened."""
    seen: list[Path] = []
    from genlineage import untrusted

    real_open = untrusted.open_regular

    def spy(path, fix, unreadable_fix=None):
        seen.append(Path(os.path.realpath(path)))
        return real_open(path, fix, unreadable_fix)

    monkeypatch.setattr(untrusted, "open_regular", spy)
    monkeypatch.setattr(imagefolder, "open_regular", spy)
    return seen


def _check_refusal(call: Callable[[], Any], culprit: Path, match: str, where: Path, opened: list[Path]) -> None:
    before = snapshot(where)
    with pytest.raises(InputError, match=match) as info:
        call()
    assert str(culprit) in str(info.value), f"the refusal names {culprit}: {info.value}"
    assert snapshot(where) == before, "a refused read writes nothing"
    if "refused unread" in match:
        assert Path(os.path.realpath(culprit)) not in opened, "an oversized file is refused by its stat size, never opened"


@pytest.mark.parametrize("edit, match", IMAGE_FOLDER_CASES)
def test_hostile_image_folder_is_refused_naming_the_file_and_writing_nothing(images, tmp_path, edit, match, opened):
    culprit = edit(images, tmp_path)
    _check_refusal(lambda: read_imagefolder(images), culprit, match, tmp_path, opened)


def test_a_folder_read_without_image_checks_still_refuses_a_bomb_when_loaded(images):
    (images / "000001.png").write_bytes(_png_claiming(9000, 9000))
    folder = read_imagefolder(images, check_images=False)  # the fast path opens no image...
    with pytest.raises(InputError, match="pixel bound") as info:
        folder.load_images()  # ... but loading checks the header before decoding
    assert str(images / "000001.png") in str(info.value)


def test_links_inside_the_folder_and_hard_links_are_read_like_copies(images, tmp_path):
    """The documented choices: a link that stays inside reaches nothing the folder does not hold,
    and a hard link is the file itself (its bytes are checked like any other image's)."""
    expected = read_imagefolder(images).load_images()
    (images / "real").mkdir()
    os.replace(images / "000000.png", images / "real" / "000000.png")
    (images / "alias").symlink_to("real", target_is_directory=True)
    os.replace(images / "000001.png", images / "kept.png")
    (images / "000001.png").symlink_to("kept.png")
    outside = tmp_path / "elsewhere.png"
    os.replace(images / "000002.png", outside)
    os.link(outside, images / "000002.png")
    rows = _rows(images)
    rows[0]["file_name"] = "alias/000000.png"
    _write_rows(images, rows)
    folder = read_imagefolder(images, size=8)
    assert np.array_equal(folder.load_images(), expected)


def test_a_byte_order_mark_is_not_an_error(images):
    meta = images / "metadata.jsonl"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    assert read_imagefolder(images).captions == ["caption 0", "caption 1", "caption 2"]


def test_bounds_are_what_the_docs_say():
    assert MAX_IMAGE_PIXELS == 8192 * 8192 and METADATA_MAX_BYTES == 64 << 20 and KEYS_MAX_BYTES == 1 << 20


# --- key sets -----------------------------------------------------------------------------------

@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    """A good key set of three 16x16 references, as KeySet.save writes it."""
    refs = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    meta = {"strategy": "detection", "n": 3, "seeds": [1000, 1001], "distance": "l2",
            "per_key": {"best_seed": [1000, 1001, 1000]}}
    key_set = KeySet("detection", ["prompt a", "prompt b", "prompt c"], refs, [9, 4, 7], [0.01, 0.02, 0.03], meta)
    return key_set.save(tmp_path / "keys")


def _stamp(change: Callable[[dict], Any]) -> Edit:
    """An edit of _keys.json: ``change`` edits the parsed stamp in place."""
    def edit(folder: Path, tmp: Path) -> Path:
        path = folder / KEYS_FILE
        stamp = json.loads(path.read_text())
        change(stamp)
        path.write_text(json.dumps(stamp))
        return path
    return edit


def _stamp_set(key: str, value: Any) -> Edit:
    return _stamp(lambda s: s.pop(key) if value is ... else s.__setitem__(key, value))


def _meta_set(key: str, value: Any) -> Edit:
    return _stamp(lambda s: s["meta"].__setitem__(key, value))


def _keys_json(blob: bytes) -> Edit:
    def edit(folder: Path, tmp: Path) -> Path:
        (folder / KEYS_FILE).write_bytes(blob)
        return folder / KEYS_FILE
    return edit


def _then_name(edit: Edit, name: str) -> Edit:
    """``edit``, but the refusal must name the folder's file ``name``."""
    return lambda folder, tmp: (edit(folder, tmp), folder / name)[1]


def no_keys_json(folder, tmp):
    (folder / KEYS_FILE).unlink()
    return folder


def row_and_image_removed(folder, tmp):
    rows = _rows(folder)
    (folder / rows.pop()["file_name"]).unlink()
    return _write_rows(folder, rows)


def unlisted_image(folder, tmp):
    _png(folder / "000003.png", 16)
    return folder / "000003.png"


def reference_resized(folder, tmp):
    return _replace("000001.png", lambda path, t: _png(path, 8))(folder, tmp)


def resized_in_an_old_key_set(folder, tmp):  # saved before _keys.json recorded image_size
    _stamp_set("image_size", ...)(folder, tmp)
    return reference_resized(folder, tmp)


def reference_in_subfolder(folder, tmp):
    (folder / "sub").mkdir()
    os.replace(folder / "000001.png", folder / "sub" / "000001.png")
    return _set_row(1, file_name="sub/000001.png")(folder, tmp)


def reference_dotdot(folder, tmp):
    _outside(tmp, side=16)
    return _set_row(1, file_name="../outside/secret.png")(folder, tmp)


def reference_link_outside(folder, tmp):
    return _replace("000001.png", lambda path, t: path.symlink_to(_outside(t, side=16)))(folder, tmp)


def index_repeated(folder, tmp):
    rows = _rows(folder)
    rows[2]["index"] = rows[0]["index"]
    return _write_rows(folder, rows)


KEY_SET_CASES = [
    pytest.param(no_keys_json, "not a key set", id="no-keys-json"),
    pytest.param(_keys_json(b'{"format": 1, "strategy": '), "not valid JSON", id="keys-json-not-json"),
    pytest.param(_keys_json(b'{"format": 1, "strategy": "\xff\xfe"}'), "not valid JSON", id="keys-json-not-utf8"),
    pytest.param(_keys_json(b"[" * 100_000), "not valid JSON", id="keys-json-nested-100k-deep"),
    pytest.param(_keys_json(b'{"format": 1, "format": 2}'), "'format' twice", id="keys-json-key-twice"),
    pytest.param(_keys_json(b'["detection", 3]'), "not the object", id="keys-json-not-an-object"),
    pytest.param(_sparse(KEYS_FILE, KEYS_MAX_BYTES + 1), "refused unread", id="keys-json-above-size-bound"),
    pytest.param(_replace(KEYS_FILE, lambda path, t: os.mkfifo(path)), "FIFO", id="keys-json-fifo"),
    pytest.param(_stamp_set("format", 99), "format 99", id="keys-json-other-format"),
    pytest.param(_stamp_set("strategy", "evil"), "strategy 'evil'", id="keys-json-unknown-strategy"),
    pytest.param(_stamp_set("n", 5), "lists 3 keys but .* n = 5", id="more-keys-than-images"),
    pytest.param(_stamp_set("n", 2), "lists 3 keys but .* n = 2", id="fewer-keys-than-images"),
    pytest.param(_stamp_set("n", True), "not a number of keys", id="keys-json-n-not-a-number"),
    pytest.param(_stamp_set("per_key_fields", "best_seed"), "per_key_fields", id="keys-json-per-key-fields-not-a-list"),
    pytest.param(_stamp_set("meta", ["l2"]), "meta is a JSON list", id="keys-json-meta-not-an-object"),
    pytest.param(_meta_set("per_key", {"best_seed": [0]}), "holds 'per_key'", id="keys-json-per-key-in-meta"),
    pytest.param(_meta_set("seeds", ["1000", 1001]), "meta.seeds", id="keys-json-seeds-not-integers"),
    pytest.param(_stamp_set("image_size", [16]), "not \\[height, width\\]", id="keys-json-image-size-malformed"),
    pytest.param(row_and_image_removed, "lists 2 keys but .* n = 3", id="key-and-image-removed"),
    pytest.param(unlisted_image, "does not list", id="unlisted-image"),
    pytest.param(_replace("000001.png", lambda p, t: None), "does not exist", id="reference-missing"),
    pytest.param(reference_resized, "is 8x8 px but .* records 16x16", id="reference-resized"),
    pytest.param(resized_in_an_old_key_set, "is 8x8 px but the first reference", id="reference-resized-no-recorded-size"),
    pytest.param(_then_name(_stamp_set("image_size", [32, 32]), "000000.png"), "records 32x32",
                 id="keys-json-size-disagrees-with-images"),
    pytest.param(_truncated("000001.png"), "corrupt", id="reference-truncated"),
    pytest.param(_write("000001.png", b"not a png at all"), "PNG, JPEG or WebP", id="reference-not-an-image"),
    pytest.param(reference_dotdot, "points outside the folder", id="reference-file-name-dotdot"),
    pytest.param(reference_link_outside, "leads outside the image folder", id="reference-link-outside"),
    pytest.param(reference_in_subfolder, "not a bare file name", id="reference-in-a-subfolder"),
    pytest.param(_set_row(1, index=...), "row 2 .*'index' None", id="row-without-index"),
    pytest.param(_set_row(1, index="4"), "row 2 .*'index' '4'", id="index-a-string"),
    pytest.param(_set_row(1, index=-1), "row 2 .*'index' -1", id="index-negative"),
    pytest.param(_set_row(1, index=True), "row 2 .*'index' True", id="index-a-bool"),
    pytest.param(index_repeated, "row 3 .*repeats row 1", id="index-repeated"),
    pytest.param(_set_row(1, score=...), "row 2 .*no 'score'", id="row-without-score"),
    pytest.param(_set_row(1, score="low"), "row 2 .*'score' 'low'", id="score-a-string"),
    pytest.param(_set_row(1, strategy="random"), "row 2 .*disagrees", id="row-strategy-disagrees"),
    pytest.param(_set_row(1, best_seed=...), "row 2 .*'best_seed' .* is missing", id="per-key-column-missing"),
    pytest.param(_set_row(1, best_seed="1000"), "row 2 .*not an integer seed", id="per-key-seed-a-string"),
]


@pytest.mark.parametrize("edit, match", KEY_SET_CASES)
def test_hostile_key_set_is_refused_naming_the_file_and_writing_nothing(keys, tmp_path, edit, match, opened):
    culprit = edit(keys, tmp_path)
    _check_refusal(lambda: KeySet.load(keys), culprit, match, tmp_path, opened)


def test_the_untouched_key_set_loads(keys):
    """The battery's starting point is good: each refusal above comes from its one edit."""
    back = KeySet.load(keys)
    assert len(back) == 3 and back.references.shape == (3, 16, 16, 3)
    assert back.meta["per_key"]["best_seed"] == [1000, 1001, 1000]
