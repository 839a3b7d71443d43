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
import re
import shutil
import struct
import textwrap
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
from genlineage.key_sets import KEYS_FILE, KEYS_MAX_BYTES, KeySet

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
    pytest.param(_set_row(1, text="a red star " * 2_000_000), "line 2 .*above the 8,192-character bound",
                 id="caption-22-million-characters"),
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
    assert imagefolder.MAX_CAPTION_CHARS == 8192


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


# --- whole runs: models that are broken or hostile, and the owner's files (issue 26) ---------------

from conftest import CAPTIONS, verify_inputs  # noqa: E402
from genlineage.cli import main  # noqa: E402
from genlineage.outdir import MARKER  # noqa: E402


def _api(tmp_path: Path, body: str, name: str = "api.py") -> str:
    """A ``--suspect-callable`` file whose ``generate(prompt, seed)`` runs ``body``; its spec."""
    (tmp_path / name).write_text("import numpy as np\n\ndef generate(prompt, seed):\n" + textwrap.indent(body, "    ") + "\n")
    return f"{tmp_path / name}:generate"


STRANGER = "return np.full((32, 32, 3), (seed * 40 + len(prompt)) % 256, np.uint8)"


def _verify(saved_pipeline: Path, tmp_path: Path, *extra: str, suspect: str | None = None,
            out: Path | None = None) -> list[str]:
    """``genlineage verify`` on the controls null with a random key set (no model draws them) and a
    callable suspect (default: one that draws pictures of its own)."""
    keys, controls = (tmp_path / "keys", tmp_path / "controls") if (tmp_path / "keys").is_dir() else verify_inputs(tmp_path)
    return ["verify", "--source", str(saved_pipeline), "--keys", str(keys), "--controls", str(controls), "--profile",
            "smoke", "--quiet", "--delta0", "0.05", "--out", str(out or tmp_path / "out"),
            "--suspect-callable", suspect or _api(tmp_path, STRANGER), *extra]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("body, match", [
    ("return np.full((32, 32, 3), np.nan)", "not finite"),
    ("img = np.zeros((32, 32, 3)); img[3, 4, 1] = np.inf\nreturn img", "not finite"),
    ("raise RuntimeError('the API is down')", "raised RuntimeError .*the API is down"),
    ("return np.zeros((9000, 9000, 3), np.uint8)", "above the .*-pixel bound"),
])
def test_a_callable_suspect_that_returns_nan_raises_or_floods_is_refused_with_exit_2(saved_pipeline, tmp_path, capsys,
                                                                                       body, match):
    """NaN pixels were rounded to black and judged (against dark keys: 'infringing'); an exception
    was a traceback; a huge image had no bound. Each is now a message naming the callable."""
    code, err = _run(_verify(saved_pipeline, tmp_path, suspect=_api(tmp_path, body)), capsys)
    assert code == 2 and re.search(match, err) and "suspect callable" in err
    assert not (tmp_path / "out").exists(), "a refused run leaves no --out"


def test_a_pipeline_that_draws_nan_from_finite_weights_is_refused_naming_it(saved_pipeline, tmp_path, capsys):
    """Finite weights and configs within the bounds can still draw NaN (a VAE scaling factor of 0
    divides the latents by zero): the images are refused before they become pixels."""
    suspect = tmp_path / "suspect"
    shutil.copytree(saved_pipeline, suspect)
    config = json.loads((suspect / "vae" / "config.json").read_text())
    (suspect / "vae" / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.0}))
    argv = _verify(saved_pipeline, tmp_path)
    i = argv.index("--suspect-callable")
    argv[i:i + 2] = ["--suspect", str(suspect)]
    code, err = _run(argv, capsys)
    assert code == 2 and "suspect:" in err and str(suspect) in err and "not finite" in err


def _earlier_output(saved_pipeline: Path, tmp_path: Path, capsys) -> Path:
    """An --out written by a successful verify run, with the marker that says so."""
    code, _ = _run(_verify(saved_pipeline, tmp_path), capsys)
    assert code == 0 and (tmp_path / "out" / MARKER).is_file() and (tmp_path / "out" / "report.md").is_file()
    return tmp_path / "out"


def test_a_refused_run_leaves_an_earlier_output_exactly_as_it_was(saved_pipeline, tmp_path, capsys):
    out = _earlier_output(saved_pipeline, tmp_path, capsys)
    before = snapshot(out)
    code, err = _run(_verify(saved_pipeline, tmp_path, "--budget", "1"), capsys)  # refused after the keys are read
    assert code == 2 and "too small" in err
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "no staging folder is left behind"


def test_keys_chosen_with_key_data_never_replace_the_owners_keys_when_the_run_is_refused(saved_pipeline, tmp_path,
                                                                                          capsys):
    out = _earlier_output(saved_pipeline, tmp_path, capsys)
    rng = np.random.default_rng(3)
    write_imagefolder(tmp_path / "pairs", [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), c, {}) for c in CAPTIONS])
    KeySet("random", ["mine"], np.zeros((1, 32, 32, 3), np.uint8), [0], [np.nan]).save(out / "keys")
    (out / ".keys.old").mkdir()
    before = snapshot(out)
    argv = _verify(saved_pipeline, tmp_path, "--budget", "1")
    i = argv.index("--keys")
    argv[i:i + 2] = ["--key-data", str(tmp_path / "pairs"), "--strategy", "random"]
    code, err = _run(argv, capsys)
    assert code == 2 and "too small" in err
    assert snapshot(out) == before, "the owner's keys (and .keys.old) are as they were"


def test_an_out_holding_other_files_is_refused_and_left_alone(saved_pipeline, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own notes")
    (out / "thesis.tex").write_text("years of work")
    argv = _verify(saved_pipeline, tmp_path, out=out)
    before = snapshot(out)
    code, err = _run(argv, capsys)
    assert code == 2 and f"--out {out} holds files genlineage verify did not write" in err
    assert snapshot(out) == before


@pytest.mark.parametrize("where", ["source", "keys", "controls", "keys-itself", "parent-of-source"])
def test_an_out_inside_or_around_an_input_is_refused(saved_pipeline, tmp_path, capsys, where):
    verify_inputs(tmp_path)
    source = tmp_path / "models" / "source"
    shutil.copytree(saved_pipeline, source)
    out = {"source": source / "report", "keys": tmp_path / "keys" / "report", "controls": tmp_path / "controls" / "r",
           "keys-itself": tmp_path / "keys", "parent-of-source": tmp_path / "models"}[where]
    argv = _verify(source, tmp_path, out=out)
    before = snapshot(tmp_path)
    code, err = _run(argv, capsys)
    assert code == 2 and "overlap" in err
    assert snapshot(tmp_path) == before


def test_a_link_planted_in_an_earlier_output_is_replaced_never_followed(saved_pipeline, tmp_path, capsys):
    out = _earlier_output(saved_pipeline, tmp_path, capsys)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "key_000.png").write_bytes(b"the owner's file")
    shutil.rmtree(out / "pairs")
    (out / "pairs").symlink_to(elsewhere, target_is_directory=True)
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(elsewhere / "key_000.png")
    code, _ = _run(_verify(saved_pipeline, tmp_path), capsys)
    assert code == 0
    assert (elsewhere / "key_000.png").read_bytes() == b"the owner's file" and os.listdir(elsewhere) == ["key_000.png"]
    assert not (out / "pairs").is_symlink() and (out / "pairs" / "key_000.png").is_file()
    assert not (out / "report.md").is_symlink() and "genlineage verify" in (out / "report.md").read_text()


def test_shadows_out_must_be_new_or_its_own_and_apart_from_its_inputs(saved_pipeline, tmp_path, capsys):
    verify_inputs(tmp_path)
    base = tmp_path / "base"
    shutil.copytree(saved_pipeline, base)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    for out, expect in ((base / "shadows", "overlap"), (tmp_path / "controls" / "s", "overlap"),
                        (mine, "did not write")):
        code, err = _run(["shadows", "--base", str(base), "--data", str(tmp_path / "controls"), "--source-data",
                          str(tmp_path / "keys"), "--innocent", "1", "--n-samples", "2", "--profile", "smoke",
                          "--quiet", "--out", str(out)], capsys)
        assert code == 2 and expect in err, err
    assert snapshot(tmp_path) == before


# --- configs within the bounds that cannot draw: a message before any query, never a traceback ---

def _suspect_with(saved_pipeline: Path, tmp_path: Path, changes: dict[str, dict]) -> Path:
    """A copy of the tiny pipeline with ``changes`` ({config file: {key: value}}) written into its configs."""
    suspect = tmp_path / "suspect"
    if not suspect.exists():
        shutil.copytree(saved_pipeline, suspect)
    for file, values in changes.items():
        config = json.loads((suspect / file).read_text())
        config.update(values)
        (suspect / file).write_text(json.dumps(config))
    return suspect


def _verify_pipeline(saved_pipeline: Path, tmp_path: Path, suspect: Path) -> list[str]:
    argv = _verify(saved_pipeline, tmp_path)
    i = argv.index("--suspect-callable")
    argv[i:i + 2] = ["--suspect", str(suspect)]
    return argv


SCHEDULER, UNET, TEXT, TOKENIZER = ("scheduler/scheduler_config.json", "unet/config.json", "text_encoder/config.json",
                                    "tokenizer/tokenizer_config.json")
INCONSISTENT = [
    pytest.param(SCHEDULER, {"num_train_timesteps": 1}, "timesteps outside|schedule", id="one-train-timestep"),
    pytest.param(SCHEDULER, {"prediction_type": "flow"}, "prediction_type 'flow'", id="unknown-prediction-type"),
    pytest.param(SCHEDULER, {"beta_schedule": "cosine"}, "beta_schedule 'cosine'", id="unknown-beta-schedule"),
    pytest.param(SCHEDULER, {"steps_offset": 5000}, "timesteps outside", id="huge-steps-offset"),
    pytest.param(SCHEDULER, {"timestep_spacing": "random"}, "no 4-step DDIM schedule", id="unknown-timestep-spacing"),
    pytest.param(SCHEDULER, {"trained_betas": [0.5, 2.0]}, "trained_betas", id="trained-betas-not-a-schedule"),
    pytest.param(SCHEDULER, {"beta_start": 0.5, "beta_end": 0.1}, "do not make a schedule", id="betas-reversed"),
    pytest.param(TEXT, {"vocab_size": 100}, "token id .* beyond the text encoder's vocab_size 100", id="token-id-beyond-vocab"),
    pytest.param(TOKENIZER, {"model_max_length": 64}, "longer than the text encoder's max_position_embeddings 32",
                 id="tokenizer-longer-than-positions"),
    pytest.param(UNET, {"cross_attention_dim": 32}, "cross_attention_dim 32 is not the text encoder's hidden_size 16",
                 id="cross-attention-width"),
    pytest.param(UNET, {"in_channels": 3}, "in_channels 3 is not the VAE's latent_channels 4", id="latent-channels"),
]


@pytest.mark.parametrize("file, values, match", INCONSISTENT)
def test_configs_that_cannot_draw_are_refused_before_any_query_naming_the_file(saved_pipeline, tmp_path, capsys,
                                                                                file, values, match):
    suspect = _suspect_with(saved_pipeline, tmp_path, {file: values})
    code, err = _run(_verify_pipeline(saved_pipeline, tmp_path, suspect), capsys)
    assert code == 2 and re.search(match, err), err
    assert err.startswith("genlineage verify: suspect: ") and str(suspect / file) in err
    assert not (tmp_path / "out").exists(), "refused before anything was drawn or written"


def test_an_out_that_is_a_file_is_a_message(saved_pipeline, tmp_path, capsys):
    (tmp_path / "report").write_text("mine")
    code, err = _run(_verify(saved_pipeline, tmp_path, out=tmp_path / "report"), capsys)
    assert code == 2 and "is an existing file, not a folder" in err
    from genlineage.verify import verify

    keys, controls = tmp_path / "keys", tmp_path / "controls"
    with pytest.raises(InputError, match="exists and is not a folder"):
        verify(saved_pipeline, lambda p, s: np.zeros((32, 32, 3), np.uint8), keys=keys, controls=controls,
               profile="smoke", out=tmp_path / "report", progress=False)
    assert (tmp_path / "report").read_text() == "mine"


# Plausible values for the keys a model's configs hold (the tiny pipeline's first): mixed at
# random, they make configs that look valid and may or may not draw.
MUTATIONS = {
    SCHEDULER: {"num_train_timesteps": [1000, 1, 2, 3, 10], "steps_offset": [1, 0, 5, 999, 5000],
                "prediction_type": ["epsilon", "v_prediction", "sample", "flow"],
                "beta_schedule": ["scaled_linear", "linear", "squaredcos_cap_v2", "sigmoid", "cosine"],
                "timestep_spacing": ["leading", "trailing", "linspace", "random"], "beta_start": [0.00085, 1e-6, 0.5],
                "beta_end": [0.012, 0.2, 0.99], "thresholding": [False, True], "clip_sample": [False, True],
                "rescale_betas_zero_snr": [False, True], "set_alpha_to_one": [False, True]},
    UNET: {"cross_attention_dim": [16, 32, 8], "attention_head_dim": [4, 1, 3, 16], "norm_num_groups": [8, 1, 3, 16],
           "sample_size": [8, 4, 16], "norm_eps": [1e-5, 1e-30, 1.0], "in_channels": [4, 3], "out_channels": [4, 8],
           "mid_block_type": ["UNetMidBlock2DCrossAttn", "UNetMidBlock2D", "Nope"], "act_fn": ["silu", "gelu", "nope"],
           "layers_per_block": [1, 2]},
    "vae/config.json": {"scaling_factor": [0.18215, 0.0, 1e30, -1.0], "latent_channels": [4, 3],
                        "norm_num_groups": [8, 3, 16], "block_out_channels": [[8, 16, 16], [8, 16], [16]],
                        "act_fn": ["silu", "nope"]},
    TEXT: {"hidden_size": [16, 32, 12], "num_attention_heads": [2, 3, 4], "max_position_embeddings": [32, 16, 8],
           "vocab_size": [940, 100, 10], "hidden_act": ["quick_gelu", "gelu", "nope"], "layer_norm_eps": [1e-5, 1e-30]},
    TOKENIZER: {"model_max_length": [32, 16, 64, 8]},
}


@pytest.mark.parametrize("case", range(12))
def test_randomised_valid_looking_configs_give_a_verdict_or_a_message_never_a_traceback(saved_pipeline, tmp_path,
                                                                                      capsys, case):
    rng = np.random.default_rng(2600 + case)
    choices = [(file, key) for file, keys in MUTATIONS.items() for key in keys]
    changes: dict[str, dict] = {}
    for i in rng.choice(len(choices), size=3, replace=False):
        file, key = choices[i]
        changes.setdefault(file, {})[key] = MUTATIONS[file][key][int(rng.integers(len(MUTATIONS[file][key])))]
    suspect = _suspect_with(saved_pipeline, tmp_path, changes)
    code, err = _run(_verify_pipeline(saved_pipeline, tmp_path, suspect), capsys)  # an exception fails the test here
    assert code in (0, 2), (changes, err)
    if code == 2:
        assert "suspect" in err, (changes, err)


def test_key_references_of_another_size_are_refused_on_their_headers_never_decoded(keys, monkeypatch):
    """Three 200-byte PNGs claiming 8192 x 8192 px in a key set that records 16 x 16: refused by
    their headers. Decoding them first (as before) took gigabytes before the size was compared."""
    for name in ("000000.png", "000001.png", "000002.png"):
        (keys / name).write_bytes(_png_claiming(8192, 8192))
    decoded: list = []
    monkeypatch.setattr(imagefolder, "_decode", lambda im, path, fix: decoded.append(path))
    with pytest.raises(InputError, match="is 8192x8192 px but .* records 16x16"):
        KeySet.load(keys)
    assert decoded == [], "nothing was decoded"


def test_a_nan_shadow_never_joins_the_null(saved_pipeline, tmp_path, capsys):
    """A shadow whose weights are NaN drew black images that joined the innocent null unseen."""
    from safetensors.torch import load_file, save_file

    good, bad = tmp_path / "shadow_good", tmp_path / "shadow_nan"
    shutil.copytree(saved_pipeline, good)
    shutil.copytree(saved_pipeline, bad)
    weights = bad / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}, str(weights))
    argv = _verify(saved_pipeline, tmp_path) + ["--innocent-shadow", str(good), "--innocent-shadow", str(bad)]
    code, err = _run(argv, capsys)
    assert code == 2 and f"innocent shadow {bad}" in err and "not finite" in err


# --- a folder changed between the gate and the loaders -------------------------------------------

def _flip_last_byte(file: Path) -> None:
    blob = bytearray(file.read_bytes())
    blob[-1] ^= 0x01
    file.write_bytes(bytes(blob))


def test_a_suspect_folder_changed_while_it_is_loaded_is_refused(saved_pipeline, tmp_path, monkeypatch):
    """The gate and the finiteness pass read one set of bytes; a weights file rewritten before the
    loader reads it would have been loaded, and its images cached under the checked fingerprint."""
    from diffusers import UNet2DConditionModel

    from genlineage.models import pipeline_io

    suspect = tmp_path / "suspect"
    shutil.copytree(saved_pipeline, suspect)
    weights = next((suspect / "unet").glob("*.safetensors"))
    real = UNet2DConditionModel.from_pretrained.__func__

    def rewritten_first(cls, *args, **kwargs):
        _flip_last_byte(weights)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(rewritten_first))
    with pytest.raises(InputError, match="changed while it was checked and loaded"):
        pipeline_io.load_pipeline(suspect)


def test_the_loaders_read_a_private_copy_of_a_suspect_holding_the_checked_bytes(saved_pipeline, tmp_path, monkeypatch):
    """Issue 26.2: diffusers and transformers choose which files of a folder to read; a suspect's
    folder is handed to them as a private copy (mode 0700, outside the suspect's folder) of the
    bytes the gate checked, removed after the load. Genlineage's own folders load in place."""
    import stat

    from diffusers import UNet2DConditionModel

    from genlineage.cache import content_id
    from genlineage.models import pipeline_io

    suspect = tmp_path / "suspect"
    shutil.copytree(saved_pipeline, suspect)
    real = UNet2DConditionModel.from_pretrained.__func__
    seen: list[tuple[Path, int, str]] = []

    def spy(cls, folder, *args, **kwargs):
        folder = Path(folder)
        seen.append((folder, stat.S_IMODE(folder.parent.stat().st_mode), content_id(folder, parts=pipeline_io.COMPONENTS)))
        return real(cls, folder, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", classmethod(spy))
    components = pipeline_io.load_pipeline(suspect)
    (loaded_from, mode, loaded_content), = seen
    assert not loaded_from.resolve().is_relative_to(suspect.resolve()) and mode == 0o700
    assert loaded_content == pipeline_io.fingerprint(suspect) == components.content_id
    assert not loaded_from.exists(), "the private copy is removed after the load"
    assert components.path == suspect, "the model is still named by the folder the user gave"


def test_a_loaded_model_keeps_the_identity_of_the_bytes_it_loaded(saved_pipeline, tmp_path):
    """Images are cached under the model's identity: a folder edited after the load must not make
    the loaded weights' images pass for the new files'."""
    from genlineage.models import pipeline_io

    suspect = tmp_path / "suspect"
    shutil.copytree(saved_pipeline, suspect)
    components = pipeline_io.load_pipeline(suspect)
    loaded = components.content_id
    _flip_last_byte(next((suspect / "unet").glob("*.safetensors")))
    assert pipeline_io.fingerprint(suspect) != loaded and components.content_id == loaded
