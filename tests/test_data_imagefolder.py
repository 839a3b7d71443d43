"""The image-folder format: round trip, a clear error for every kind of bad input, atomic writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genlineage.data import ImageFolder, load_image, read_imagefolder, write_imagefolder
from genlineage.errors import InputError


def _items(n=3, size=8):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield rng.integers(0, 256, (size, size, 3), dtype=np.uint8), f"caption {i}", {"id": f"x:{i}", "attributes": {"k": i}}


def test_round_trip(tmp_path):
    items = list(_items())
    items.append((Image.new("RGB", (8, 8), (10, 20, 30)), "a pil image", {"id": "pil"}))
    items.append((np.full((8, 8, 3), 0.5, np.float32), "a float image", {}))
    written = write_imagefolder(tmp_path / "f", items)
    assert isinstance(written, ImageFolder) and len(written) == 5
    folder = read_imagefolder(tmp_path / "f", size=8)
    assert folder.captions == [c for _, c, _ in items]
    assert [p.name for p in folder.paths] == [f"{i:06d}.png" for i in range(5)]
    assert folder.records[0]["id"] == "x:0" and folder.records[0]["attributes"] == {"k": 0}
    rows = [json.loads(line) for line in (tmp_path / "f" / "metadata.jsonl").read_text().splitlines()]
    assert list(rows[0])[:2] == ["file_name", "text"]
    arr = folder.load_images()
    assert arr.shape == (5, 8, 8, 3) and arr.dtype == np.float32
    assert np.array_equal(np.rint(arr[0] * 255).astype(np.uint8), items[0][0])  # PNG is lossless
    assert np.allclose(arr[3], np.array([10, 20, 30]) / 255)
    assert np.allclose(arr[4], 128 / 255)
    assert folder.load_images(size=4).shape == (5, 4, 4, 3)
    assert load_image(folder.paths[0], size=16).shape == (16, 16, 3)
    assert len(folder.subset(1, 3)) == 2


def _folder(tmp_path, rows=None, images=2, size=8):
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(images):
        Image.new("RGB", (size, size), (i * 40, 0, 0)).save(root / f"{i:06d}.png")
    rows = rows if rows is not None else [json.dumps({"file_name": f"{i:06d}.png", "text": f"c {i}"}) for i in range(images)]
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def _raises(root, *needles, **kw):
    with pytest.raises(InputError) as info:
        read_imagefolder(root, **kw)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_missing_folder(tmp_path):
    _raises(tmp_path / "nope", str(tmp_path / "nope"), "does not exist")


def test_not_a_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    _raises(f, str(f), "not an image folder")


def test_missing_metadata(tmp_path):
    root = _folder(tmp_path)
    (root / "metadata.jsonl").unlink()
    _raises(root, str(root), "metadata.jsonl", "file_name")


def test_malformed_json_line(tmp_path):
    root = _folder(tmp_path, rows=[json.dumps({"file_name": "000000.png", "text": "ok"}), "{not json"])
    _raises(root, "metadata.jsonl", "line 2", "fix or delete")


def test_row_without_file_name(tmp_path):
    root = _folder(tmp_path, rows=[json.dumps({"text": "no file"})])
    _raises(root, "line 1", "'file_name'")


@pytest.mark.parametrize("row", [{"file_name": "000000.png"}, {"file_name": "000000.png", "text": ""},
                                 {"file_name": "000000.png", "text": "   "}, {"file_name": "000000.png", "text": None}])
def test_missing_or_empty_caption(tmp_path, row):
    root = _folder(tmp_path, rows=[json.dumps(row)])
    _raises(root, "000000.png", "caption", "line 1")


def test_missing_image(tmp_path):
    root = _folder(tmp_path)
    (root / "000001.png").unlink()
    _raises(root, str(root / "000001.png"), "does not exist")


def test_path_outside_folder(tmp_path):
    root = _folder(tmp_path, rows=[json.dumps({"file_name": "../x.png", "text": "c"})])
    _raises(root, "../x.png", "outside")


def test_corrupt_image(tmp_path):
    root = _folder(tmp_path)
    (root / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _raises(root, str(root / "000001.png"), "corrupt")
    # a truncated but otherwise valid PNG is caught too
    good = (root / "000000.png").read_bytes()
    (root / "000001.png").write_bytes(good[: len(good) // 2])
    _raises(root, str(root / "000001.png"))


def test_wrong_size(tmp_path):
    root = _folder(tmp_path, size=10)
    msg = _raises(root, "000000.png", "10x10", "8x8", size=8)
    assert "resize" in msg
    assert len(read_imagefolder(root, size=10)) == 2


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError, match="nothing.png"):
        load_image(tmp_path / "nothing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        load_image(bad)


def test_write_is_atomic(tmp_path):
    def failing():
        yield from _items(2)
        raise RuntimeError("interrupted")

    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        write_imagefolder(target, failing())
    assert not target.exists()
    assert [p for p in tmp_path.iterdir()] == []  # no half-written leftovers either

    write_imagefolder(target, _items(3))
    with pytest.raises(RuntimeError):
        write_imagefolder(target, failing())
    assert len(read_imagefolder(target)) == 3  # the previous complete folder survives


def test_write_rejects_empty_caption(tmp_path):
    with pytest.raises(InputError, match="empty caption"):
        write_imagefolder(tmp_path / "o", [(np.zeros((4, 4, 3), np.uint8), " ", {})])
    assert not (tmp_path / "o").exists()


def test_only_the_rows_asked_for_are_decoded(tmp_path, monkeypatch):
    from genlineage.data import imagefolder

    items = [(np.full((4, 4, 3), 40 * i, dtype=np.uint8), f"caption {i}", {}) for i in range(5)]
    folder = write_imagefolder(tmp_path / "f", items)
    full = folder.load_images()
    opened = []
    real = imagefolder.load_image
    monkeypatch.setattr(imagefolder, "load_image", lambda p, size=None: (opened.append(p.name), real(p, size))[1])
    rows = folder.load_images(rows=[3, 1])
    assert np.array_equal(rows, full[[3, 1]]) and opened == ["000003.png", "000001.png"]
    assert folder.load_images(rows=[]).shape == (0, 0, 0, 3)
