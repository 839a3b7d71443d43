"""The generated stand-ins: deterministic, captions that say what the image shows, hidden details
that change the image but not the caption, and every size the profiles use."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from genlineage.data import Sample, caption_for, face_sample, parse_face_caption, render_face, scene_sample
from genlineage.data import faces as faces_mod
from genlineage.data import scenes as scenes_mod

GENERATORS = [face_sample, scene_sample]


@pytest.mark.parametrize("gen", GENERATORS)
def test_same_index_same_sample(gen):
    a, b = gen(7, 32, seed=3), gen(7, 32, seed=3)
    assert isinstance(a, Sample)
    assert a.image.dtype == np.uint8 and a.image.shape == (32, 32, 3)
    assert np.array_equal(a.image, b.image)
    assert a.caption == b.caption and a.attributes == b.attributes


@pytest.mark.parametrize("gen", GENERATORS)
def test_different_indices_and_seeds_differ(gen):
    images = [gen(i, 32).image for i in range(12)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])
    assert not np.array_equal(gen(0, 32, seed=0).image, gen(0, 32, seed=1).image)
    assert len({gen(i, 32).caption for i in range(12)}) >= 10


@pytest.mark.parametrize("gen", GENERATORS)
@pytest.mark.parametrize("size", [16, 32, 64])
def test_sizes(gen, size):
    s = gen(1, size)
    assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
    assert s.image.std() > 5  # not a blank image


@pytest.mark.parametrize("gen", GENERATORS)
def test_too_small_or_negative_rejected(gen):
    with pytest.raises(ValueError):
        gen(0, 8)
    with pytest.raises(ValueError):
        gen(-1, 32)


def test_every_face_template_names_its_level():
    words = faces_mod._words("male", 3)
    for table in (faces_mod._HAS, faces_mod._SENTENCE):
        for attr, levels in table.items():
            for level, templates in levels.items():
                for t in templates:
                    assert parse_face_caption(t.format(**words)).get(attr) == level, (attr, level, t)
    for level, templates in faces_mod._AGE_START.items():
        for t in templates:
            assert parse_face_caption(t.format(**words)).get("age") == level, t


def test_face_captions_agree_with_attributes():
    for i in range(400):
        attrs = faces_mod.face_attributes(i, seed=0)
        caption = caption_for(attrs, np.random.default_rng(i))
        parsed = parse_face_caption(caption)
        expected = {a: attrs[a] for a in faces_mod.ATTRIBUTES}
        if attrs["gender"] == "female" or attrs["age"] == 0:
            assert "beard" not in parsed and attrs["beard"] == 0  # not mentioned, as in CelebA-Dialog
            expected.pop("beard")
        assert parsed == expected, (caption, expected)
        assert faces_mod.caption_tokens(caption) <= faces_mod.MAX_CAPTION_TOKENS  # fits a 32-token encoder
        pronoun = "He" if attrs["gender"] == "male" else "She"
        other = "She" if pronoun == "He" else "He"
        assert f" {other} " not in f" {caption} "
    # and the generator itself uses the same captions
    s = face_sample(5, 16)
    assert parse_face_caption(s.caption)["smiling"] == s.attributes["smiling"]


def test_face_caption_levels_cover_the_range():
    seen = {a: set() for a in faces_mod.ATTRIBUTES}
    for i in range(300):
        attrs = faces_mod.face_attributes(i)
        for a in seen:
            seen[a].add(attrs[a])
    assert all(seen[a] == set(range(6)) for a in seen), seen


def test_face_hidden_details_change_image_not_caption():
    a, b = faces_mod.face_attributes(3), faces_mod.face_attributes(4)
    swapped = copy.deepcopy(a)
    swapped["hidden"] = b["hidden"]
    cap_a = caption_for(a, np.random.default_rng(0))
    cap_s = caption_for(swapped, np.random.default_rng(0))
    assert cap_a == cap_s
    img_a, img_s = render_face(a, 32).astype(float), render_face(swapped, 32).astype(float)
    assert np.abs(img_a - img_s).mean() > 20  # clearly visible at 32 px, not a subtle shift
    # each kind of hidden detail on its own is visible too
    for key, value in [("bg_rgb", [10, 200, 10]), ("face_dx", a["hidden"]["face_dx"] + 0.12),
                       ("shirt_rgb", [250, 0, 250]), ("pattern_phase", [v + 2.0 for v in a["hidden"]["pattern_phase"]])]:
        one = copy.deepcopy(a)
        one["hidden"][key] = value
        assert np.abs(render_face(one, 32).astype(float) - img_a).mean() > 1.0, key


def test_scene_captions_agree_with_attributes():
    for i in range(150):
        attrs = scenes_mod.scene_attributes(i)
        caption = scenes_mod.scene_caption_for(attrs, np.random.default_rng(i)).lower()
        for obj in attrs["objects"]:
            assert f"{obj['colour']} {obj['shape']}" in caption
        if len(attrs["objects"]) < 3 or attrs["layout"] == "in a row":
            assert attrs["layout"] in caption
        bg = attrs["background"]
        assert any(p.format(c=bg.get("colour", "")).lower() in caption for p in scenes_mod._BG_PHRASES[bg["kind"]])
        assert any(p.lower() in caption for p in scenes_mod._STYLE_PHRASES[attrs["style"]])
        assert len(attrs["objects"]) == len(attrs["hidden"]["objects"])
        assert faces_mod.caption_tokens(caption) <= faces_mod.MAX_CAPTION_TOKENS


def test_scene_hidden_details_change_image_not_caption():
    a = scenes_mod.scene_attributes(11)
    moved = copy.deepcopy(a)
    for obj in moved["hidden"]["objects"]:
        obj["x"] += 0.05
        obj["angle"] += 40
    moved["hidden"]["bg_jitter"] = [v + 25 for v in a["hidden"]["bg_jitter"]]
    assert (scenes_mod.scene_caption_for(a, np.random.default_rng(1))
            == scenes_mod.scene_caption_for(moved, np.random.default_rng(1)))
    diff = np.abs(scenes_mod.render_scene(a, 32).astype(float) - scenes_mod.render_scene(moved, 32).astype(float))
    assert diff.mean() > 5


def test_scene_variety():
    attrs = [scenes_mod.scene_attributes(i) for i in range(200)]
    assert {a["style"] for a in attrs} == set(scenes_mod.STYLES)
    assert {a["background"]["kind"] for a in attrs} == set(scenes_mod.BACKGROUNDS)
    assert {o["shape"] for a in attrs for o in a["objects"]} == set(scenes_mod.SHAPES)
    assert {len(a["objects"]) for a in attrs} == {1, 2, 3}


def test_caption_grid_and_save_figure(tmp_path):
    from genlineage.report.figures import caption_grid, save_figure

    samples = [face_sample(i, 16) for i in range(3)] + [scene_sample(i, 16) for i in range(2)]
    fig = caption_grid([s.image for s in samples], [s.caption for s in samples], ncols=3)
    paths = save_figure(fig, tmp_path / "grid")
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.pdf", "grid.png"]  # no temp files left
    with pytest.raises(ValueError):
        caption_grid([samples[0].image], ["a", "b"])
