"""A CelebA-Dialog stand-in: cartoon faces with five graded attributes and dialog-style captions.

CelebA-Dialog (Jiang et al., ICCV 2021) grades five attributes of each face 0..5 -- Bangs,
Eyeglasses, Beard, Smiling, Age -- and writes captions from templates per grade ("This man in
his thirties has short bangs. He is wearing thin frame eyeglasses. ..."). We draw faces whose
visible attributes follow the same grades and write captions in the same style, so prompts in
the tiny profile look and behave like the paper's.

Every image also has *hidden details* that no caption mentions (face position and shape, skin,
hair and eye colour, clothes, background colour and pattern). They matter for the method: a
model that merely follows the prompt draws *a* face with those attributes, while a model that
memorised a training image draws *that* face -- the hidden details are what make the
difference measurable at 32 px.

Everything is deterministic in (index, seed): one ``SeedSequence`` per sample, split into
independent streams for the attributes, the hidden details and the caption wording.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from . import Sample

ATTRIBUTES = ("bangs", "eyeglasses", "beard", "smiling", "age")
_DOMAIN_TAG = 0xFACE5  # keeps face streams apart from scene streams for the same (seed, index)
SUPERSAMPLE = 4  # draw at 4x, downsample with LANCZOS: anti-aliased edges at any size

# --------------------------------------------------------------------------------------------
# Caption templates. Every phrase of a level contains one of that level's MARKERS and none of
# another level's (longest marker wins, so "very short bangs" is level 1, not level 2);
# parse_face_caption relies on it and the tests check it on many samples.
# Placeholders: {He} {he} {His} {his} {man} {boy}.
# --------------------------------------------------------------------------------------------
_HAS: dict[str, dict[int, list[str]]] = {
    "bangs": {
        0: ["no bangs", "no bangs at all"],
        1: ["very short bangs"],
        2: ["short bangs"],
        3: ["medium bangs", "bangs of medium length"],
        4: ["long bangs"],
        5: ["extremely long bangs"],
    },
    "eyeglasses": {
        0: ["no eyeglasses", "no glasses at all"],
        1: ["rimless eyeglasses"],
        2: ["thin frame eyeglasses", "eyeglasses with a thin frame"],
        3: ["thick frame eyeglasses", "eyeglasses with a thick frame"],
        4: ["thin frame sunglasses", "sunglasses with a thin frame"],
        5: ["thick frame sunglasses", "sunglasses with a thick frame"],
    },
    "beard": {
        0: ["no beard", "no beard at all"],
        1: ["stubble", "a rough stubble"],
        2: ["a short beard"],
        3: ["a beard of medium length", "a medium-length beard"],
        4: ["a bushy beard"],
        5: ["a very long beard", "a full beard"],
    },
    "smiling": {
        0: ["no smile"],
        1: ["a very mild smile"],
        2: ["a mild smile"],
        3: ["a beaming face"],
        4: ["a big smile"],
        5: ["a very big smile", "a deep laugh"],
    },
}
_SENTENCE: dict[str, dict[int, list[str]]] = {
    "bangs": {
        0: ["{He} has no bangs at all.", "{His} forehead is visible without any bangs."],
        1: ["{He} has very short bangs."],
        2: ["{He} has short bangs.", "{His} short bangs cover a bit of {his} forehead."],
        3: ["{He} has bangs of medium length.", "{His} medium bangs cover half {his} forehead."],
        4: ["{He} has long bangs.", "{His} long bangs cover {his} forehead."],
        5: ["{He} has extremely long bangs."],
    },
    "eyeglasses": {
        0: ["{He} is not wearing any eyeglasses.", "{He} wears no eyeglasses."],
        1: ["{He} wears rimless eyeglasses.", "{He} is wearing rimless glasses."],
        2: ["{He} wears thin frame eyeglasses."],
        3: ["{He} wears thick frame eyeglasses."],
        4: ["{He} wears thin frame sunglasses."],
        5: ["{He} wears thick frame sunglasses."],
    },
    "beard": {
        0: ["{He} doesn't have any beard.", "{He} is clean-shaven."],
        1: ["{He} has some stubble."],
        2: ["{He} has a short beard."],
        3: ["{He} has a beard of medium length."],
        4: ["{He} has a bushy beard."],
        5: ["{He} has a full beard.", "{He} wears a very long beard."],
    },
    "smiling": {
        0: ["{He} looks serious.", "{He} looks serious with no smile."],
        1: ["{He} smiles faintly.", "{His} mouth is turned up a little."],
        2: ["{He} has a mild smile.", "{He} smiles and shows some teeth."],
        3: ["{He} smiles with {his} teeth visible.", "{His} face is beaming with happiness."],
        4: ["{He} has a big smile.", "{He} smiles with {his} mouth slightly open."],
        5: ["{He} is laughing happily.", "{He} smiles with {his} mouth wide open."],
    },
    "age": {
        0: ["{He} is a young child.", "This is a little {boy}."],
        1: ["{He} is a teenager.", "{He} looks very young."],
        2: ["{He} is a young adult.", "{He} is in {his} thirties."],
        3: ["{He} is in {his} forties.", "{He} is middle-aged."],
        4: ["{He} is in {his} fifties.", "{He} looks elderly."],
        5: ["{He} is in {his} seventies.", "{He} looks very old."],
    },
}
# Subject with the age folded in ("This man in his thirties has ...").
_AGE_START: dict[int, list[str]] = {
    0: ["This little {boy}", "This young child"],
    1: ["This teenager", "This teenage {boy}"],
    2: ["This young adult", "This {man} in {his} thirties"],
    3: ["This middle-aged {man}", "This {man} in {his} forties"],
    4: ["This elderly {man}", "This {man} in {his} sixties"],
    5: ["This very old {man}", "This {man} in {his} eighties"],
}
_PLAIN_START = {
    ("male", True): ["The boy", "This boy"],
    ("female", True): ["The girl", "This girl"],
    ("male", False): ["The man", "This man", "This gentleman"],
    ("female", False): ["The woman", "This woman", "This lady"],
}
MARKERS: dict[str, dict[int, list[str]]] = {
    "bangs": {0: ["no bangs", "without any bangs"], 1: ["very short bangs"], 2: ["short bangs"],
              3: ["medium bangs", "bangs of medium length"], 4: ["long bangs"], 5: ["extremely long bangs"]},
    "eyeglasses": {0: ["no eyeglasses", "no glasses", "not wearing any eyeglasses"],
                   1: ["rimless eyeglasses", "rimless glasses"],
                   2: ["thin frame eyeglasses", "eyeglasses with a thin frame"],
                   3: ["thick frame eyeglasses", "eyeglasses with a thick frame"],
                   4: ["thin frame sunglasses", "sunglasses with a thin frame"],
                   5: ["thick frame sunglasses", "sunglasses with a thick frame"]},
    "beard": {0: ["no beard", "doesn't have any beard", "clean-shaven"], 1: ["stubble"], 2: ["short beard"],
              3: ["beard of medium length", "medium-length beard"], 4: ["bushy beard"],
              5: ["very long beard", "full beard"]},
    "smiling": {0: ["no smile", "looks serious"], 1: ["very mild smile", "smiles faintly", "turned up a little"],
                2: ["mild smile", "shows some teeth"], 3: ["beaming face", "teeth visible", "beaming with happiness"],
                4: ["big smile", "mouth slightly open"],
                5: ["very big smile", "deep laugh", "laughing happily", "mouth wide open"]},
    "age": {0: ["little boy", "little girl", "young child"], 1: ["teenager", "teenage", "looks very young"],
            2: ["young adult", "thirties"], 3: ["middle-aged", "forties"], 4: ["elderly", "fifties", "sixties"],
            5: ["very old", "seventies", "eighties"]},
}


def _words(gender: str, age: int) -> dict[str, str]:
    male = gender == "male"
    return {
        "He": "He" if male else "She", "he": "he" if male else "she",
        "His": "His" if male else "Her", "his": "his" if male else "her",
        "man": "man" if male else "woman", "boy": "boy" if male else "girl",
    }


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


# Caption length. The tiny family's text encoders read ``models.bases.<base>.tokenizer.max_length``
# = 32 tokens, BOS and EOS included (tests/test_captions_fit.py checks that every tiny-family base
# of every profile reads at least this many); CelebA-Dialog's overall captions are about as short.
# The limit is a constant here, not read from the profile, because a dataset folder's cache key
# hashes this file's text: changing the limit must rebuild the captions drawn under it.
MAX_CAPTION_TOKENS = 32
# CLIP's pre-tokenizer pattern, as genlineage.models.tokenizer.WORD_PATTERN (a test checks they
# agree; it is repeated so the generators do not import torch through genlineage.models).
CLIP_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)


def caption_words(caption: str) -> int:
    """Number of CLIP pre-tokenizer pieces (words, punctuation) in ``caption``."""
    return len(CLIP_WORDS.findall(caption.lower()))


def caption_tokens(caption: str) -> int:
    """Tokens ``caption`` costs the tiny family's text encoder, BOS and EOS included.

    That tokenizer makes every word of its corpus one token, and its corpus covers every word
    the generators can write (``caption_lexicon``), so a caption costs one token per
    pre-tokenizer piece plus BOS and EOS -- the count is exact, not an estimate.
    """
    return caption_words(caption) + 2


def caption_lexicon() -> list[str]:
    """Text holding every word a face caption can contain, for the tokenizer's vocabulary.

    Derived from the templates themselves (both genders), plus the joiners ``_one_caption``
    adds, so a template edit cannot leave a word out of the tokenizer.
    """
    templates = [p for grades in _HAS.values() for options in grades.values() for p in options]
    templates += [s for grades in _SENTENCE.values() for options in grades.values() for s in options]
    templates += [s for options in _AGE_START.values() for s in options]
    templates += [s for options in _PLAIN_START.values() for s in options]
    templates.append("has , and .")
    return [t.format(**_words(gender, 3)) for gender in ("male", "female") for t in templates]


def _one_caption(attributes: dict, rng: np.random.Generator) -> str:
    gender = attributes["gender"]
    age = int(attributes["age"])
    words = _words(gender, age)
    listed = ["bangs", "eyeglasses", "smiling"] + (["beard"] if gender == "male" and age >= 1 else [])
    age_in_subject = bool(rng.random() < 0.5)
    if age_in_subject:
        subject = _pick(rng, _AGE_START[age])
    else:
        subject = _pick(rng, _PLAIN_START[(gender, age <= 1)])
    order = [listed[i] for i in rng.permutation(len(listed))]
    n_has = int(rng.integers(1, len(order) + 1))
    has_attrs, sentence_attrs = order[:n_has], order[n_has:]
    phrases = [_pick(rng, _HAS[a][int(attributes[a])]) for a in has_attrs]
    if len(phrases) == 1:
        clause = phrases[0]
    else:
        clause = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    sentences = [f"{subject} has {clause}."]
    rest = [_pick(rng, _SENTENCE[a][int(attributes[a])]) for a in sentence_attrs]
    if not age_in_subject:
        rest.append(_pick(rng, _SENTENCE["age"][age]))
    sentences += [rest[i] for i in rng.permutation(len(rest))]
    return " ".join(sentences).format(**words)


def caption_for(attributes: dict, rng: np.random.Generator, max_tokens: int | None = MAX_CAPTION_TOKENS) -> str:
    """A CelebA-Dialog-style caption for the five graded attributes (hidden details unused).

    Shape: a subject (optionally carrying the age), a "has" clause listing some attributes,
    then one short sentence per remaining attribute, in random order; wording drawn from a few
    templates per grade. Beard is left out for women (CelebA-Dialog leaves it blank for them)
    and for young children. Every attribute is always mentioned, so that no caption leaves a
    visible attribute to chance; drafts longer than ``max_tokens`` tokens (BOS and EOS
    included, see ``caption_tokens``) are redrawn (from the same rng, so still deterministic)
    so the text encoder never truncates one.
    """
    return redraw_until_fits(lambda: _one_caption(attributes, rng), max_tokens)


def redraw_until_fits(draft: Callable[[], str], max_tokens: int | None, tries: int = 64) -> str:
    """The first of up to ``tries`` drafts whose token count fits ``max_tokens`` (else the
    shortest): one guard for the face and scene captions, counting what the tokenizer counts."""
    best = ""
    for _ in range(tries):
        caption = draft()
        if max_tokens is None or caption_tokens(caption) <= max_tokens:
            return caption
        if not best or caption_tokens(caption) < caption_tokens(best):
            best = caption
    return best


def parse_face_caption(caption: str) -> dict[str, int]:
    """Read the graded levels back from a caption (longest marker wins); absent ones are left out.

    Used by tests to prove captions agree with the images' attributes, and handy for checking
    that a model's prompts mean what we think they mean.
    """
    text = caption.lower()
    found: dict[str, int] = {}
    for attr, levels in MARKERS.items():
        hits = [(len(m), level) for level, markers in levels.items() for m in markers
                if re.search(r"(?<![\w-])" + re.escape(m.lower()) + r"(?![\w-])", text)]
        if hits:
            found[attr] = max(hits)[1]
    return found


# --------------------------------------------------------------------------------------------
# Attributes and hidden details
# --------------------------------------------------------------------------------------------
_SKIN = np.array([(255, 226, 200), (240, 196, 150), (214, 160, 110), (170, 110, 70), (110, 70, 45)], float)
_HAIR = np.array([(25, 20, 20), (70, 42, 25), (125, 80, 45), (220, 185, 110), (160, 65, 30), (95, 60, 50)], float)
_EYES = np.array([(90, 55, 30), (60, 110, 190), (70, 140, 80), (120, 125, 130), (140, 110, 50)], float)
_FRAMES = np.array([(20, 20, 25), (90, 50, 25), (25, 35, 110), (150, 25, 35), (60, 60, 60)], float)
PATTERNS = ("stripes", "dots", "checker")


def _hsv_to_rgb(h: float, s: float, v: float) -> list[int]:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return [int(round(255 * c)) for c in (r, g, b)]


def _jitter(rng: np.random.Generator, rgb: np.ndarray, amount: float) -> list[int]:
    return [int(c) for c in np.clip(rgb + rng.normal(0, amount, 3), 0, 255).round()]


def _sample_levels(rng: np.random.Generator) -> dict[str, Any]:
    """The captioned attributes. Skewed like the real data: most faces wear no glasses."""
    gender = "male" if rng.random() < 0.5 else "female"
    age = int(rng.integers(0, 6))
    eyeglasses = 0 if rng.random() < 0.45 else int(rng.integers(1, 6))
    if gender == "male" and age >= 1:
        beard = 0 if rng.random() < 0.35 else int(rng.integers(1, 6) if age >= 2 else 1)
    else:
        beard = 0
    return {"bangs": int(rng.integers(0, 6)), "eyeglasses": eyeglasses, "beard": beard,
            "smiling": int(rng.integers(0, 6)), "age": age, "gender": gender}


def _sample_hidden(rng: np.random.Generator) -> dict[str, Any]:
    """Per-image details that no caption mentions (all visible at 32 px)."""
    rx = float(rng.uniform(0.19, 0.26))
    t = float(rng.uniform(0, len(_SKIN) - 1))
    lo = int(math.floor(t))
    skin = _SKIN[lo] + (t - lo) * (_SKIN[min(lo + 1, len(_SKIN) - 1)] - _SKIN[lo])
    bg_v = float(rng.uniform(0.35, 0.95))
    return {
        "face_dx": float(rng.uniform(-0.11, 0.11)),
        "face_dy": float(rng.uniform(-0.05, 0.05)),
        "face_rx": rx,
        "face_aspect": float(rng.uniform(1.12, 1.38)),
        "skin_rgb": _jitter(rng, skin, 6),
        "hair_rgb": _jitter(rng, _HAIR[int(rng.integers(len(_HAIR)))], 12),
        "hair_volume": float(rng.uniform(0.0, 1.0)),
        "eye_rgb": _jitter(rng, _EYES[int(rng.integers(len(_EYES)))], 10),
        "eye_spacing": float(rng.uniform(0.32, 0.44)),
        "frame_rgb": _jitter(rng, _FRAMES[int(rng.integers(len(_FRAMES)))], 8),
        "shirt_rgb": _hsv_to_rgb(float(rng.random()), float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.3, 0.95))),
        "bg_rgb": _hsv_to_rgb(float(rng.random()), float(rng.uniform(0.15, 0.7)), bg_v),
        "pattern": PATTERNS[int(rng.integers(len(PATTERNS)))],
        "pattern_angle": float(rng.uniform(0, math.pi)),
        "pattern_freq": float(rng.uniform(2.5, 5.0)),  # periods across the image
        "pattern_phase": [float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))],
        "pattern_shade": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.18, 0.4)),
    }


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------
def _shade(rgb: list[int] | np.ndarray, factor: float) -> tuple[int, int, int]:
    """factor < 0 darkens towards black, > 0 lightens towards white."""
    c = np.asarray(rgb, float)
    c = c * (1 + factor) if factor < 0 else c + (255 - c) * factor
    return tuple(int(v) for v in np.clip(c, 0, 255).round())


def _mix(a: list[int] | np.ndarray, b: list[int] | np.ndarray, t: float) -> tuple[int, int, int]:
    c = (1 - t) * np.asarray(a, float) + t * np.asarray(b, float)
    return tuple(int(v) for v in np.clip(c, 0, 255).round())


def background(hidden: dict, n: int) -> Image.Image:
    """Plain colour with a rotated stripe / dot / checker pattern at a random phase."""
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
    a, f = hidden["pattern_angle"], hidden["pattern_freq"]
    p0, p1 = hidden["pattern_phase"]
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    kind = hidden["pattern"]
    if kind == "stripes":
        mask = np.sin(2 * math.pi * f * u + p0) > 0
    elif kind == "checker":
        mask = (np.sin(2 * math.pi * f * u + p0) > 0) ^ (np.sin(2 * math.pi * f * v + p1) > 0)
    else:  # dots on a rotated lattice
        du = (f * u + p0 / (2 * math.pi)) % 1.0 - 0.5
        dv = (f * v + p1 / (2 * math.pi)) % 1.0 - 0.5
        mask = du * du + dv * dv < 0.28 ** 2
    base = np.asarray(hidden["bg_rgb"], float)
    alt = np.asarray(_shade(base, hidden["pattern_shade"]), float)
    img = np.where(mask[..., None], alt, base)
    return Image.fromarray(img.round().astype(np.uint8), "RGB")


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [cx - rx, cy - ry, cx + rx, cy + ry]


@dataclass
class _Face:
    """One face being drawn: the canvas at ``SUPERSAMPLE`` times the size, and the geometry and
    colours every part of the face is placed by (units: the image is 1 x 1)."""

    img: Image.Image
    n: int
    attributes: dict
    cx: float
    cy: float
    rx: float
    ry: float
    skin: tuple
    hair: tuple

    @property
    def draw(self) -> ImageDraw.ImageDraw:
        return ImageDraw.Draw(self.img)

    @property
    def hidden(self) -> dict:
        return self.attributes["hidden"]

    @property
    def dark_skin(self) -> tuple:
        return _shade(self.skin, -0.25)

    def px(self, *vals: float) -> list[float]:
        """Units -> render pixels."""
        return [v * float(self.n) for v in vals]

    def width(self, share: float) -> int:
        """A line width of ``share`` of the image, at least one pixel."""
        return max(1, int(round(float(self.n) * share)))

    @property
    def face_box(self) -> list[float]:
        return self.px(*_ellipse(self.cx, self.cy, self.rx, self.ry))

    @property
    def eye_y(self) -> float:
        return self.cy - self.ry * 0.12

    @property
    def brow_y(self) -> float:
        return self.cy - self.ry * 0.3

    @property
    def hairline(self) -> float:
        return self.cy - self.ry * 0.74

    def masked(self, fill: tuple, shapes: list[tuple[str, list[float]]], cut_above: float | None = None,
               cut_below: float | None = None, alpha: int = 255) -> None:
        """Paint ``fill`` over the union of shapes, clipped to a horizontal band."""
        n = self.n
        mask = Image.new("L", (n, n), 0)
        md = ImageDraw.Draw(mask)
        for kind, box in shapes:
            if kind == "ellipse":
                md.ellipse(box, fill=alpha)
            else:
                md.polygon(box, fill=alpha)
        if cut_above is not None:  # keep only y >= cut_above
            md.rectangle([0, 0, n, cut_above * n], fill=0)
        if cut_below is not None:  # keep only y <= cut_below
            md.rectangle([0, cut_below * n, n, n], fill=0)
        self.img.paste(fill, (0, 0, n, n), mask)


def render_face(attributes: dict, size: int) -> np.ndarray:
    """Draw the face described by ``attributes`` (levels + ``hidden``) as uint8 size×size×3.

    Separate from sampling so a test (or a notebook) can change only the hidden details and
    show that the caption stays the same while the image changes. Drawn back to front, one step
    per part of the face.
    """
    if size < 16:
        raise ValueError(f"face images need size >= 16 px, got {size}")
    face = _face_frame(attributes, size * SUPERSAMPLE)
    for step in (_draw_body_and_back_hair, _draw_age, _draw_bangs, _draw_eyes_and_nose, _draw_beard, _draw_mouth,
                 _draw_glasses):
        step(face)
    out = face.img.resize((size, size), Image.LANCZOS)
    return np.asarray(out, dtype=np.uint8).copy()


def _face_frame(attributes: dict, n: int) -> _Face:
    """The background and the face's place, size and colours (children have rounder faces; grey
    hair comes with age)."""
    h = attributes["hidden"]
    kid = int(attributes["age"]) == 0
    rx = h["face_rx"] * (1.06 if kid else 1.0)
    ry = rx * h["face_aspect"] * (0.9 if kid else 1.0)
    grey = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.3, 4: 0.6, 5: 0.92}[int(attributes["age"])]
    return _Face(background(h, n), n, attributes, 0.5 + h["face_dx"], 0.5 + h["face_dy"], rx, ry,
                 tuple(h["skin_rgb"]), _mix(h["hair_rgb"], (222, 222, 226), grey))


def _draw_body_and_back_hair(f: _Face) -> None:
    """Shoulders and neck (shirt colour is a hidden detail); hair behind the head, long for women,
    a cap for men, its volume a hidden detail; then the face."""
    d, P, h, cx, cy, rx, ry = f.draw, f.px, f.hidden, f.cx, f.cy, f.rx, f.ry
    d.ellipse(P(cx - 0.42, cy + ry * 0.95, cx + 0.42, cy + ry * 0.95 + 0.6), fill=tuple(h["shirt_rgb"]))
    d.rectangle(P(cx - rx * 0.38, cy + ry * 0.5, cx + rx * 0.38, cy + ry * 1.15), fill=f.dark_skin)
    vol = h["hair_volume"]
    if f.attributes["gender"] == "male":
        d.ellipse(P(*_ellipse(cx, cy - ry * 0.18, rx * (1.08 + 0.1 * vol), ry * (0.95 + 0.08 * vol))), fill=f.hair)
    else:
        d.ellipse(P(*_ellipse(cx, cy - ry * 0.12, rx * (1.2 + 0.15 * vol), ry * (1.02 + 0.06 * vol))), fill=f.hair)
        d.rectangle(P(cx - rx * (1.2 + 0.15 * vol), cy - ry * 0.1, cx + rx * (1.2 + 0.15 * vol), cy + ry * (0.95 + 0.25 * vol)),
                    fill=f.hair)
    d.ellipse(f.face_box, fill=f.skin)


def _draw_age(f: _Face) -> None:
    """Wrinkles (forehead, cheeks) for age 3+, rosy cheeks for children and teenagers."""
    d, P, cx, cy, rx, ry = f.draw, f.px, f.cx, f.cy, f.rx, f.ry
    age, line = int(f.attributes["age"]), f.width(0.008)
    if age >= 3:
        for k in range(age - 2):
            y = f.hairline + (f.brow_y - f.hairline) * (0.35 + 0.2 * k)
            d.arc(P(cx - rx * 0.5, y - ry * 0.05, cx + rx * 0.5, y + ry * 0.05), 200, 340, fill=f.dark_skin, width=line)
        for s in (-1, 1):
            d.line(P(cx + s * rx * 0.28, cy + ry * 0.12, cx + s * rx * 0.42, cy + ry * 0.5), fill=f.dark_skin, width=line)
    if age <= 1:
        for s in (-1, 1):
            d.ellipse(P(*_ellipse(cx + s * rx * 0.55, cy + ry * 0.25, rx * 0.17, ry * 0.09)),
                      fill=_mix(f.skin, (235, 110, 120), 0.45 if age == 0 else 0.3))


def _draw_bangs(f: _Face) -> None:
    """Scalp hair down to the hairline, then bangs over the forehead, graded 0..5."""
    bangs_y = f.hairline + (f.brow_y + f.ry * 0.06 - f.hairline) * int(f.attributes["bangs"]) / 5.0
    f.masked(f.hair, [("ellipse", f.face_box)], cut_below=max(f.hairline, bangs_y))


def _draw_eyes_and_nose(f: _Face) -> None:
    """Eyes (eye colour and spacing are hidden details), eyebrows unless the bangs hide them, nose."""
    d, P, h, cx, cy, rx, ry, eye_y = f.draw, f.px, f.hidden, f.cx, f.cy, f.rx, f.ry, f.eye_y
    kid = int(f.attributes["age"]) == 0
    er_x, er_y = rx * (0.17 if kid else 0.14), ry * (0.1 if kid else 0.075)
    for s in (-1, 1):
        ex = cx + s * rx * h["eye_spacing"]
        d.ellipse(P(*_ellipse(ex, eye_y, er_x, er_y)), fill=(248, 248, 248))
        d.ellipse(P(*_ellipse(ex, eye_y, er_y * 0.95, er_y * 0.95)), fill=tuple(h["eye_rgb"]))
        d.ellipse(P(*_ellipse(ex, eye_y, er_y * 0.42, er_y * 0.42)), fill=(15, 15, 15))
        if int(f.attributes["bangs"]) < 5:
            d.line(P(ex - er_x, eye_y - ry * 0.17, ex + er_x, eye_y - ry * 0.19 - 0.01 * s), fill=_shade(f.hair, -0.3),
                   width=f.width(0.012))
    d.line(P(cx, eye_y + ry * 0.08, cx - rx * 0.06, cy + ry * 0.22, cx + rx * 0.04, cy + ry * 0.24), fill=f.dark_skin,
           width=f.width(0.008))


def _draw_beard(f: _Face) -> None:
    """Beard, graded 0..5: stubble shading, then ever larger opaque regions, long ones past the chin."""
    beard = int(f.attributes["beard"])
    beard_col = _shade(f.hair, -0.1)
    face_shape = [("ellipse", f.face_box)]
    cx, cy, rx, ry = f.cx, f.cy, f.rx, f.ry
    if beard == 1:
        f.masked(beard_col, face_shape, cut_above=cy + ry * 0.18, alpha=110)
    elif beard >= 2:
        top = {2: 0.55, 3: 0.35, 4: 0.2, 5: 0.12}[beard]
        extra = {2: 0.0, 3: 0.05, 4: 0.16, 5: 0.4}[beard]
        shapes = face_shape + [("ellipse", f.px(*_ellipse(cx, cy + ry * (0.55 + extra / 2), rx * (0.9 + 0.1 * (beard >= 4)),
                                                          ry * (0.45 + extra))))]
        f.masked(beard_col, shapes, cut_above=cy + ry * top)
        if beard >= 3:  # moustache
            f.draw.ellipse(f.px(*_ellipse(cx, cy + ry * 0.38, rx * 0.36, ry * 0.07)), fill=beard_col)


def _draw_mouth(f: _Face) -> None:
    """Mouth, graded 0..5: flat line, upturned arcs, then an ever wider open smile with teeth."""
    d, P = f.draw, f.px
    smile = int(f.attributes["smiling"])
    cx, my, ry = f.cx, f.cy + f.ry * 0.5, f.ry
    mw = f.rx * (0.3 + 0.05 * smile)
    lip = _mix(f.skin, (150, 40, 50), 0.6)
    if smile == 0:
        d.line(P(cx - mw, my, cx + mw, my), fill=lip, width=f.width(0.014))
    elif smile <= 2:
        hgt = ry * (0.07 if smile == 1 else 0.13)
        d.arc(P(cx - mw, my - hgt, cx + mw, my + hgt), 0, 180, fill=lip, width=f.width(0.014))
    else:
        hgt = ry * {3: 0.14, 4: 0.2, 5: 0.28}[smile]
        top = my - ry * (0.02 if smile < 5 else 0.06)
        d.chord(P(cx - mw, top - hgt, cx + mw, top + hgt), 0, 180, fill=(95, 20, 30))
        d.chord(P(cx - mw, top - hgt, cx + mw, top + hgt * (0.35 if smile < 5 else 0.25)), 0, 180, fill=(250, 250, 245))
        if smile == 5:  # tongue
            d.chord(P(cx - mw * 0.5, top + hgt * 0.45, cx + mw * 0.5, top + hgt * 1.05), 180, 360, fill=(215, 90, 100))


def _draw_glasses(f: _Face) -> None:
    """Eyeglasses, graded 0..5: rimless, thin frame, thick frame, thin / thick sunglasses."""
    glasses = int(f.attributes["eyeglasses"])
    if not glasses:
        return
    d, P, cx, rx, ry, eye_y = f.draw, f.px, f.cx, f.rx, f.ry, f.eye_y
    ex_off = rx * f.hidden["eye_spacing"]
    lens_r = rx * 0.27
    frame = (205, 205, 215) if glasses == 1 else tuple(f.hidden["frame_rgb"])
    fw = f.width({1: 0.006, 2: 0.011, 3: 0.028, 4: 0.011, 5: 0.028}[glasses])
    for s in (-1, 1):
        ex = cx + s * ex_off
        box = P(*_ellipse(ex, eye_y, lens_r, lens_r * 0.8))
        if glasses >= 4:
            d.ellipse(box, fill=(28, 28, 36), outline=frame, width=fw)
        else:
            d.ellipse(box, outline=frame, width=fw)
        d.line(P(ex + s * lens_r, eye_y, cx + s * rx * 0.98, eye_y - ry * 0.03), fill=frame, width=fw)
    d.line(P(cx - ex_off + lens_r, eye_y, cx + ex_off - lens_r, eye_y), fill=frame, width=fw)


def _streams(index: int, seed: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence([int(seed), int(index), _DOMAIN_TAG])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def face_attributes(index: int, seed: int = 0) -> dict:
    """The attributes (levels, gender, hidden details) of face ``index``, without drawing it."""
    rng_levels, rng_hidden, _ = _streams(index, seed)
    attrs = _sample_levels(rng_levels)
    attrs["hidden"] = _sample_hidden(rng_hidden)
    return attrs


def face_caption(index: int, seed: int = 0, attributes: dict | None = None) -> str:
    """The caption of face ``index`` without drawing it (what ``face_sample`` writes)."""
    attrs = face_attributes(index, seed) if attributes is None else attributes
    return caption_for(attrs, _streams(index, seed)[2])


def face_sample(index: int, size: int, seed: int = 0) -> Sample:
    """Face number ``index`` of the generator seeded ``seed``, at size×size px; deterministic."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    attrs = face_attributes(index, seed)
    caption = face_caption(index, seed, attrs)
    return Sample(render_face(attrs, size), caption, attrs)
