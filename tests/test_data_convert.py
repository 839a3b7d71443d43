"""Real-data converters on small fixtures that mimic each release layout, and their errors."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from genlineage.config import load_profile
from genlineage.data import build_datasets, convert_cc3m, convert_celeba_dialog, read_imagefolder, role_entries
from genlineage.data.convert import SUMMARY_FILE, square_resize
from genlineage.errors import InputError


def _jpg(path, w=40, h=30, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = colour
    arr[:, w // 2:] = (20, 20, 200)
    Image.fromarray(arr).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _celeba(root, n=6):
    """image/<n>.jpg + text/captions_hq.json as in the release; with the usual blemishes."""
    captions = {}
    for i in range(n):
        _jpg(root / "image" / f"{i}.jpg", colour=(20 * i, 100, 50))
        captions[f"{i}.jpg"] = {
            "overall_caption": f"This woman has no bangs and a big smile number {i}.",
            "attribute_wise_captions": {"Bangs": "She has no bangs.", "Smiling": "She has a big smile."},
        }
    captions["2.jpg"]["overall_caption"] = "  "  # empty caption
    (root / "image" / "3.jpg").write_bytes(b"\xff\xd8\xff garbage")  # corrupt
    captions["99.jpg"] = {"overall_caption": "No such image.", "attribute_wise_captions": {}}  # missing image
    _jpg(root / "image" / f"{n}.jpg")  # image without a caption (like 5380.jpg in the release)
    (root / "text").mkdir()
    (root / "text" / "captions_hq.json").write_text(json.dumps(captions))
    return root


def test_square_resize_center_crops():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # a blue band on the left quarter is cropped away
    out = square_resize(im, 8)
    assert out.size == (8, 8) and np.asarray(out)[..., 2].max() < 30


def test_celeba_dialog(tmp_path):
    src = _celeba(tmp_path / "celeba")
    out = tmp_path / "out"
    summary = convert_celeba_dialog(src, out, size=16)
    folder = read_imagefolder(out, size=16)
    assert [r["id"] for r in folder.records] == ["0", "1", "4", "5"]
    assert folder.captions[0].startswith("This woman has no bangs")
    assert folder.records[0]["attributes"]["attribute_wise_captions"]["Bangs"] == "She has no bangs."
    assert summary["written"] == 4
    assert summary["skipped"] == {"image_without_caption": 1, "empty_caption": 1, "corrupt_image": 1, "missing_image": 1}
    assert summary["examples"]["corrupt_image"] == ["3.jpg"]
    assert json.loads((out / SUMMARY_FILE).read_text())["written"] == 4
    assert len(read_imagefolder(convert_celeba_dialog(src, tmp_path / "lim", 16, limit=2)["out_dir"])) == 2


def test_celeba_dialog_alternative_layout(tmp_path):
    root = tmp_path / "c"
    _jpg(root / "images" / "0.jpg")
    (root / "captions_hq.json").write_text(json.dumps({"0.jpg": {"overall_caption": "He looks serious."}}))
    assert convert_celeba_dialog(root, tmp_path / "o", 16)["written"] == 1


def test_celeba_dialog_bad_layouts(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        convert_celeba_dialog(tmp_path / "missing", tmp_path / "o", 16)
    root = tmp_path / "wrong"
    _jpg(root / "photos" / "0.jpg")
    with pytest.raises(InputError) as info:
        convert_celeba_dialog(root, tmp_path / "o", 16)
    msg = str(info.value)
    assert str(root) in msg and "captions_hq.json" in msg and "image/" in msg and "photos/" in msg
    _jpg(root / "image" / "0.jpg")
    (root / "text").mkdir()
    (root / "text" / "captions_hq.json").write_text("{broken")
    with pytest.raises(InputError, match="captions_hq.json.*not valid JSON"):
        convert_celeba_dialog(root, tmp_path / "o", 16)
    (root / "text" / "captions_hq.json").write_text(json.dumps({"5.jpg": {"overall_caption": "x"}}))
    with pytest.raises(InputError, match="no usable image"):
        convert_celeba_dialog(root, tmp_path / "o", 16)
    assert not (tmp_path / "o").exists()


def _tsv(root, rows=5):
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"a red car parked on the street {i}\thttp://example.com/{i}.jpg" for i in range(rows)]
    (root / "cc3m.tsv").write_text("\n".join(lines) + "\n")
    _jpg(root / "images" / "0.jpg")
    _jpg(root / "images" / "1.png")
    _jpg(root / "images" / "3.jpg", w=20, h=50)
    (root / "images" / "4.jpg").write_bytes(b"broken")  # row 2 missing, row 4 corrupt
    return root


def test_cc3m_tsv(tmp_path):
    src = _tsv(tmp_path / "cc")
    for i, arg in enumerate([src / "cc3m.tsv", src]):
        out = tmp_path / f"o{i}"
        summary = convert_cc3m(arg, out, 16)
        folder = read_imagefolder(out, size=16)
        assert [r["id"] for r in folder.records] == ["0", "1", "3"]
        assert folder.captions[2] == "a red car parked on the street 3"
        assert folder.records[0]["attributes"]["url"] == "http://example.com/0.jpg"
        assert summary["layout"] == "cc3m_tsv" and summary["rows"] == 5
        assert summary["skipped"] == {"missing_image": 1, "corrupt_image": 1}


def test_cc3m_tsv_errors(tmp_path):
    src = _tsv(tmp_path / "cc")
    (src / "cc3m.tsv").write_text("caption\thttp://x\nno tab on this line\n")
    with pytest.raises(InputError, match=r"cc3m.tsv line 2"):
        convert_cc3m(src / "cc3m.tsv", tmp_path / "o", 16)
    with pytest.raises(InputError, match="elsewhere"):
        convert_cc3m(src / "cc3m.tsv", tmp_path / "o", 16, images_dir=tmp_path / "elsewhere")
    (src / "cc3m.tsv").write_text("caption one\thttp://x\n")
    for p in (src / "images").iterdir():
        p.unlink()
    with pytest.raises(InputError, match="no usable image.*0.jpg"):
        convert_cc3m(src, tmp_path / "o", 16)
    assert not (tmp_path / "o").exists()


def _img2dataset(root):
    """img2dataset --output_format files: shard folders of <key>.jpg/.txt/.json + parquet/stats."""
    for shard, key, caption_file in [("00000", "000000000", "txt"), ("00000", "000000001", "json"),
                                     ("00001", "000010000", "txt"), ("00001", "000010001", None)]:
        _jpg(root / shard / f"{key}.jpg")
        meta = {"key": key, "url": f"http://x/{key}", "status": "success", "caption": f"json caption {key}"}
        if caption_file == "txt":
            (root / shard / f"{key}.txt").write_text(f"caption of {key}\n")
            (root / shard / f"{key}.json").write_text(json.dumps(meta))
        elif caption_file == "json":
            (root / shard / f"{key}.json").write_text(json.dumps(meta))
    (root / "00000.parquet").write_bytes(b"PAR1")
    (root / "00000_stats.json").write_text("{}")
    return root


def test_cc3m_img2dataset(tmp_path):
    src = _img2dataset(tmp_path / "i2d")
    summary = convert_cc3m(src, tmp_path / "o", 16)
    folder = read_imagefolder(tmp_path / "o", size=16)
    assert [r["id"] for r in folder.records] == ["000000000", "000000001", "000010000"]
    assert folder.captions == ["caption of 000000000", "json caption 000000001", "caption of 000010000"]
    assert folder.records[0]["attributes"]["url"] == "http://x/000000000"
    assert summary["layout"] == "img2dataset" and summary["skipped"] == {"empty_caption": 1}


def test_cc3m_tars_and_unknown_layouts(tmp_path):
    tars = tmp_path / "wds"
    tars.mkdir()
    with tarfile.open(tars / "00000.tar", "w"):
        pass
    with pytest.raises(InputError, match="--output_format files") as info:
        convert_cc3m(tars, tmp_path / "o", 16)
    assert str(tars) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no CC3M layout") as info:
        convert_cc3m(empty, tmp_path / "o", 16)
    assert str(empty) in str(info.value)
    with pytest.raises(InputError, match="does not exist"):
        convert_cc3m(tmp_path / "nope", tmp_path / "o", 16)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="x.csv"):
        convert_cc3m(tmp_path / "x.csv", tmp_path / "o", 16)


def test_build_with_real_domains(tmp_path, monkeypatch):
    """The paper path: real-data domains converted into a pool, then cut into disjoint roles."""
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    celeba = _celeba(tmp_path / "celeba", n=8)  # 5 usable images: 0 1 4 5 6 7 minus skips
    cc3m = _img2dataset(tmp_path / "i2d")
    counts = {"source": 1, "heldout": 1, "suspicious_pool": 1, "shadow_pool": 0}
    p = load_profile("tiny", overrides={"data": {
        "image_size": 16,
        "domains": {"celeba": {"kind": "celeba_dialog", "root": str(celeba), **counts, "duplication": {"rate": 1.0, "copies": 2}},
                    "cc3m": {"kind": "cc3m", "root": str(cc3m), **counts}},
        "pretrain": {"n": 0},
    }})
    folders = build_datasets(p, progress=False)
    assert "pretrain" not in folders and (tmp_path / "data" / "tiny" / "datasets" / "celeba_pool").is_dir()
    splits = json.loads((tmp_path / "data" / "tiny" / "splits.json").read_text())
    ids = [i for d in splits["domains"].values() for r in d["roles"].values() for i in r]
    assert len(ids) == len(set(ids)) == 6
    src = read_imagefolder(folders["celeba_source"], size=16)
    assert [r["id"] for r in src.records] == role_entries(splits, "celeba", "source") and len(src) == 2
    assert src.records[0]["id"].startswith("celeba:")
    too_many = load_profile("tiny", overrides={**p, "data": {**p["data"], "domains": {
        **p["data"]["domains"], "cc3m": {**p["data"]["domains"]["cc3m"], "shadow_pool": 50}}}})
    with pytest.raises(InputError, match="cc3m needs 53 images"):
        build_datasets(too_many, progress=False)
