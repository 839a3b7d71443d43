"""A CC3M stand-in: simple scenes of coloured objects with alt-text-like captions.

CC3M pairs web images with their (hypernymised) alt-text: short, loosely structured, mentioning
the main objects, sometimes the setting and the medium ("illustration", "pixel art"). We draw
one to three objects (shape, colour, layout) on a background in one of four styles and write
captions in that register, with several word orders, so the domain has far more variety than
the faces -- as CC3M has far more than CelebA-Dialog.

As with the faces, each image also has hidden details no caption mentions (exact positions,
sizes, rotations, shade jitter, texture phase, clouds, horizon height, grain), which is what
separates reproducing a training image from following its prompt.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import Sample
from .faces import MAX_CAPTION_TOKENS, redraw_until_fits

_DOMAIN_TAG = 0x5CE7E
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "orange": (245, 140, 30), "yellow": (245, 215, 40), "green": (50, 160, 60),
    "blue": (40, 90, 210), "purple": (130, 60, 170), "pink": (240, 120, 180), "brown": (120, 75, 40),
    "black": (25, 25, 25), "white": (245, 245, 245), "grey": (130, 130, 135), "teal": (30, 150, 150),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "house", "tree", "heart", "diamond", "moon")
BACKGROUNDS = ("sky", "grass", "plain", "texture", "sunset")
STYLES = ("flat", "outlined", "pixelated", "noisy")
POSITIONS = {"on the left": (0.28, 0.5), "on the right": (0.72, 0.5), "at the top": (0.5, 0.28),
             "at the bottom": (0.5, 0.72), "in the centre": (0.5, 0.5)}

_BG_PHRASES = {
    "sky": ["against a blue sky", "with a blue sky background", "in the sky"],
    "grass": ["on a grassy background", "on green grass", "in a grassy field"],
    "plain": ["on a plain {c} background", "on a {c} background", "isolated on {c}"],
    "texture": ["on a textured {c} background", "on a {c} patterned background"],
    "sunset": ["at sunset", "against a sunset sky"],
}
_STYLE_PHRASES = {
    "flat": ["illustration", "flat illustration", "vector art", "clip art"],
    "outlined": ["cartoon", "cartoon drawing", "line art with bold outlines"],
    "pixelated": ["pixel art", "8-bit pixel art", "pixelated image"],
    "noisy": ["grainy photo", "noisy photograph", "photo with film grain"],
}
# Colours allowed per background (a white background with a white star would be invisible).
_PLAIN_BG = ("yellow", "pink", "grey", "white", "orange", "teal", "purple", "blue")
_TEXTURE_BG = ("brown", "grey", "teal", "purple", "orange", "pink")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _obj_phrase(obj: dict) -> str:
    return f"{_article(obj['colour'])} {obj['colour']} {obj['shape']}"


def _one_scene_caption(attributes: dict, rng: np.random.Generator) -> str:
    objs = attributes["objects"]
    layout = attributes["layout"]
    if len(objs) == 1:
        what = f"{_obj_phrase(objs[0])} {layout}"
    elif len(objs) == 2:
        what = f"{_obj_phrase(objs[0])} {layout} {_obj_phrase(objs[1])}"
    else:
        what = f"{_obj_phrase(objs[0])}, {_obj_phrase(objs[1])} and {_obj_phrase(objs[2])}"
        if layout == "in a row":
            what += " in a row"
    bg = attributes["background"]
    bg_options = _BG_PHRASES[bg["kind"]]
    bg_text = bg_options[int(rng.integers(len(bg_options)))].format(c=bg.get("colour", ""))
    style_options = _STYLE_PHRASES[attributes["style"]]
    style = style_options[int(rng.integers(len(style_options)))]
    form = int(rng.integers(3))
    if form == 0:
        return f"{what} {bg_text}, {style}"
    if form == 1:
        return f"{style[0].upper() + style[1:]} of {what} {bg_text}"
    return f"{what[0].upper() + what[1:]} {bg_text}. {style[0].upper() + style[1:]}."


def scene_caption_for(attributes: dict, rng: np.random.Generator,
                      max_tokens: int | None = MAX_CAPTION_TOKENS) -> str:
    """An alt-text-like caption naming the objects, their layout, the background and the style.

    Drafts longer than ``max_tokens`` tokens (BOS and EOS included, counted as the faces'
    ``caption_tokens`` does) are redrawn from the same rng, so the text encoder never cuts off
    the background or the style, which come last. No draft needs it at 32 tokens (the longest
    is 28), so the guard changes no caption today; it keeps a longer template honest.
    """
    return redraw_until_fits(lambda: _one_scene_caption(attributes, rng), max_tokens)


def caption_lexicon() -> list[str]:
    """Text holding every word a scene caption can contain, for the tokenizer's vocabulary."""
    colours = sorted(COLOURS)
    text = [" ".join(colours), " ".join(SHAPES), " ".join(POSITIONS), "next to above below in a row scattered",
            "a an of and , ."]
    text += [p.format(c=c) for options in _BG_PHRASES.values() for p in options for c in colours]
    text += [p for options in _STYLE_PHRASES.values() for p in options]
    return text


def _sample_attributes(rng: np.random.Generator) -> dict[str, Any]:
    n_obj = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    background: dict[str, Any] = {"kind": kind}
    if kind == "plain":
        background["colour"] = _PLAIN_BG[int(rng.integers(len(_PLAIN_BG)))]
    elif kind == "texture":
        background["colour"] = _TEXTURE_BG[int(rng.integers(len(_TEXTURE_BG)))]
    avoid = {background.get("colour"), {"sky": "blue", "grass": "green", "sunset": "orange"}.get(kind)}
    palette = [c for c in COLOURS if c not in avoid]
    shapes = list(rng.choice(len(SHAPES), size=n_obj, replace=False))
    colours = [palette[int(rng.integers(len(palette)))] for _ in range(n_obj)]
    if n_obj == 1:
        layout = list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
    elif n_obj == 2:
        layout = ["next to", "above", "below"][int(rng.integers(3))]
    else:
        layout = ["in a row", "scattered"][int(rng.integers(2))]
    return {
        "objects": [{"shape": SHAPES[s], "colour": c} for s, c in zip(shapes, colours)],
        "layout": layout,
        "background": background,
        "style": STYLES[int(rng.integers(len(STYLES)))],
    }


def _centres(layout: str, n_obj: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    if n_obj == 1:
        return [POSITIONS[layout]]
    if n_obj == 2:
        if layout == "next to":  # object 0 is left or right of object 1: the caption does not say
            pair = [(0.3, 0.5), (0.7, 0.5)]
            return pair if rng.random() < 0.5 else pair[::-1]
        top, bottom = (0.5, 0.29), (0.5, 0.71)
        return [top, bottom] if layout == "above" else [bottom, top]
    if layout == "in a row":
        xs = [0.2, 0.5, 0.8]
        order = rng.permutation(3)
        return [(xs[i], 0.5) for i in order]
    pts = [(0.28, 0.3), (0.72, 0.36), (0.45, 0.73)]
    order = rng.permutation(3)
    return [pts[i] for i in order]


def _sample_hidden(attrs: dict, rng: np.random.Generator) -> dict[str, Any]:
    """Exact geometry and shading that no caption mentions."""
    n_obj = len(attrs["objects"])
    base_size = {1: (0.15, 0.22), 2: (0.11, 0.16), 3: (0.085, 0.12)}[n_obj]
    centres = _centres(attrs["layout"], n_obj, rng)
    objects = []
    for obj, (x, y) in zip(attrs["objects"], centres):
        upright = obj["shape"] in ("house", "tree", "heart")
        objects.append({
            "x": float(x + rng.uniform(-0.06, 0.06)), "y": float(y + rng.uniform(-0.06, 0.06)),
            "r": float(rng.uniform(*base_size)),
            "angle": float(rng.uniform(-12, 12) if upright else rng.uniform(0, 360)),
            "rgb": [int(v) for v in np.clip(np.asarray(COLOURS[obj["colour"]]) + rng.normal(0, 14, 3), 0, 255).round()],
        })
    return {
        "objects": objects,
        "bg_jitter": [float(v) for v in rng.normal(0, 14, 3)],
        "horizon": float(rng.uniform(0.5, 0.72)),
        "texture_angle": float(rng.uniform(0, math.pi)),
        "texture_freq": float(rng.uniform(3.0, 6.0)),
        "texture_phase": float(rng.uniform(0, 2 * math.pi)),
        "clouds": [[float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.35)), float(rng.uniform(0.05, 0.1))]
                   for _ in range(int(rng.integers(0, 3)))],
        "pixel_block": int(rng.choice([3, 4, 5])),  # pixel-art block side, in 1/64 of the image side
        "grain_seed": int(rng.integers(2**31)),
    }


def _background(attrs: dict, hidden: dict, n: int) -> np.ndarray:
    bg = attrs["background"]
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
    jit = np.asarray(hidden["bg_jitter"])
    kind = bg["kind"]

    def vgrad(top: tuple, bottom: tuple, t: np.ndarray) -> np.ndarray:
        return (1 - t)[..., None] * np.asarray(top, float) + t[..., None] * np.asarray(bottom, float)

    if kind in ("sky", "grass"):
        img = vgrad((70, 130, 225), (185, 215, 245), yy) + jit
        for cx, cy, r in hidden["clouds"]:
            d2 = ((xx - cx) / 1.8) ** 2 + (yy - cy) ** 2
            img = np.where((d2 < r * r)[..., None], np.array([250.0, 250, 252]), img)
        if kind == "grass":
            hz = hidden["horizon"]
            stripes = 12 * np.sin(2 * math.pi * hidden["texture_freq"] * 3 * xx + hidden["texture_phase"])
            grass = vgrad((110, 185, 70), (45, 120, 40), np.clip((yy - hz) / (1 - hz), 0, 1)) + jit
            grass = grass + stripes[..., None]
            img = np.where((yy > hz)[..., None], grass, img)
    elif kind == "sunset":
        img = vgrad((90, 50, 130), (250, 150, 60), yy) + jit
    else:
        base = np.asarray(COLOURS[bg["colour"]], float) + jit
        img = np.broadcast_to(base, (n, n, 3)).copy()
        if kind == "texture":
            a, f, p = hidden["texture_angle"], hidden["texture_freq"], hidden["texture_phase"]
            u = xx * math.cos(a) + yy * math.sin(a)
            v = -xx * math.sin(a) + yy * math.cos(a)
            wave = np.sin(2 * math.pi * f * u + p) + 0.6 * np.sin(2 * math.pi * 2.3 * f * v + 1.7 * p)
            img = img * (1 + 0.16 * wave)[..., None]
    return np.clip(img, 0, 255)


def _star(k: int, inner: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * k):
        rad = 1.0 if i % 2 == 0 else inner
        t = math.pi * i / k - math.pi / 2
        pts.append((rad * math.cos(t), rad * math.sin(t)))
    return pts


_POLYS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0, -1), (0.92, 0.7), (-0.92, 0.7)],
    "star": _star(5, 0.45),
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "diamond": [(0, -1), (0.7, 0), (0, 1), (-0.7, 0)],
    "heart": [(16 * math.sin(t) ** 3 / 17, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) / 17)
              for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)],
    "moon": [(math.cos(t), math.sin(t)) for t in np.linspace(math.pi / 2, 3 * math.pi / 2, 20)]
            + [(0.5 * math.cos(t) + 0.2, math.sin(t)) for t in np.linspace(3 * math.pi / 2, math.pi / 2, 20)],
}


def _transform(pts: list[tuple[float, float]], x: float, y: float, r: float, angle: float, S: float) -> list[tuple[float, float]]:
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [((x + r * (px * c - py * s)) * S, (y + r * (px * s + py * c)) * S) for px, py in pts]


def _draw_object(d: ImageDraw.ImageDraw, shape: str, h: dict, S: float, outline: tuple | None, ow: int) -> None:
    x, y, r, a = h["x"], h["y"], h["r"], h["angle"]
    fill = tuple(h["rgb"])
    kw = {"outline": outline, "width": ow} if outline else {}
    if shape == "circle":
        d.ellipse([(x - r) * S, (y - r) * S, (x + r) * S, (y + r) * S], fill=fill, **kw)
    elif shape == "ring":
        d.ellipse([(x - r) * S, (y - r) * S, (x + r) * S, (y + r) * S], outline=fill, width=max(1, int(r * 0.38 * S)))
        if outline:
            d.ellipse([(x - r) * S, (y - r) * S, (x + r) * S, (y + r) * S], outline=outline, width=ow)
            ri = r * 0.62
            d.ellipse([(x - ri) * S, (y - ri) * S, (x + ri) * S, (y + ri) * S], outline=outline, width=ow)
    elif shape == "house":
        body = [(-0.7, -0.1), (0.7, -0.1), (0.7, 0.9), (-0.7, 0.9)]
        roof = [(-0.9, -0.1), (0, -0.95), (0.9, -0.1)]
        door = [(-0.15, 0.4), (0.15, 0.4), (0.15, 0.9), (-0.15, 0.9)]
        d.polygon(_transform(body, x, y, r, a, S), fill=fill, **kw)
        d.polygon(_transform(roof, x, y, r, a, S), fill=tuple(int(c * 0.6) for c in fill), **kw)
        d.polygon(_transform(door, x, y, r, a, S), fill=(60, 40, 30))
    elif shape == "tree":
        trunk = [(-0.15, 0.2), (0.15, 0.2), (0.15, 1.0), (-0.15, 1.0)]
        d.polygon(_transform(trunk, x, y, r, a, S), fill=(100, 65, 35), **kw)
        cx, cy = _transform([(0, -0.3)], x, y, r, a, S)[0]
        cr = 0.65 * r * S
        d.ellipse([cx - cr, cy - cr, cx + cr, cy + cr], fill=fill, **kw)
    else:
        d.polygon(_transform(_POLYS[shape], x, y, r, a, S), fill=fill, **kw)


def render_scene(attributes: dict, size: int) -> np.ndarray:
    """Draw the scene described by ``attributes`` (caption-level fields + ``hidden``) as uint8."""
    if size < 16:
        raise ValueError(f"scene images need size >= 16 px, got {size}")
    h = attributes["hidden"]
    n = size * SUPERSAMPLE
    S = float(n)
    img = Image.fromarray(_background(attributes, h, n).round().astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    style = attributes["style"]
    outline = (15, 15, 15) if style == "outlined" else None
    ow = max(1, int(round(S * 0.018)))
    for obj, oh in zip(attributes["objects"], h["objects"]):
        _draw_object(d, obj["shape"], oh, S, outline, ow)
    out = img.resize((size, size), Image.LANCZOS)
    if style == "pixelated":
        # pixel_block is the block side in 1/64 of the image side: 13 to 21 blocks across.
        small = min(size, max(4, int(round(64 / h["pixel_block"]))))
        out = out.resize((small, small), Image.BOX).resize((size, size), Image.NEAREST)
    arr = np.asarray(out, dtype=np.float64)
    if style == "noisy":
        grain = np.random.default_rng(h["grain_seed"]).normal(0, 10, arr.shape)
        arr = arr + grain
    return np.clip(arr, 0, 255).round().astype(np.uint8)


def _streams(index: int, seed: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence([int(seed), int(index), _DOMAIN_TAG])
    return [np.random.default_rng(s) for s in ss.spawn(3)]


def scene_attributes(index: int, seed: int = 0) -> dict:
    """The caption-level fields and hidden details of scene ``index``, without drawing it."""
    rng_attr, rng_hidden, _ = _streams(index, seed)
    attrs = _sample_attributes(rng_attr)
    attrs["hidden"] = _sample_hidden(attrs, rng_hidden)
    return attrs


def scene_caption(index: int, seed: int = 0, attributes: dict | None = None) -> str:
    """The caption of scene ``index`` without drawing it (what ``scene_sample`` writes)."""
    attrs = scene_attributes(index, seed) if attributes is None else attributes
    return scene_caption_for(attrs, _streams(index, seed)[2])


def scene_sample(index: int, size: int, seed: int = 0) -> Sample:
    """Scene number ``index`` of the generator seeded ``seed``, at size×size px; deterministic."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    attrs = scene_attributes(index, seed)
    caption = scene_caption(index, seed, attrs)
    return Sample(render_scene(attrs, size), caption, attrs)
