"""Image distances d(a, b) (docs/method.md#image-distance).

Default: the normalised pixel L2 of Carlini et al., sqrt(mean((a - b)^2)) with pixels in [0, 1]
at one common resolution. Pluggable alternatives, because a reviewer should be able to check that
a result does not hinge on the pixel metric:

* ``tiled_l2``: the max over a 4×4 grid of tiles of the per-tile normalised L2 (Carlini et al.'s
  tiled L2), which stays large when a copy differs in one region only;
* ``ssim``: 1 − SSIM (Wang et al. 2004, Gaussian window), insensitive to small global shifts of
  brightness;
* ``sscd:<path>``: 1 − cosine of SSCD copy-detection descriptors (Pizzi et al. 2022) from a local
  TorchScript file the user supplies.

Every distance takes uint8 or float [0, 1] arrays shaped [..., H, W, 3] and broadcasts over the
leading axes: ``d(images[N, S, H, W, 3], refs[N, 1, H, W, 3]) -> [N, S]``.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError

Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]


def as_float(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def _check_images(a: np.ndarray, b: np.ndarray, name: str) -> None:
    """Refuse inputs that are not [..., H, W, C] images of one common size: distances between
    different resolutions are meaningless, and a silent broadcast over H or W would be wrong."""
    if a.ndim < 3 or b.ndim < 3:
        raise ValueError(f"{name}: images must be [..., H, W, 3]; got shapes {a.shape} and {b.shape}")
    if a.shape[-3:] != b.shape[-3:]:
        raise ValueError(f"{name}: images must share one size; got {a.shape[-3:]} and {b.shape[-3:]} "
                         f"(resize both to the profile's image_size first)")


def l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised pixel L2 between matching images (broadcasts over leading axes)."""
    a, b = np.asarray(a), np.asarray(b)
    _check_images(a, b, "l2")
    diff = as_float(a) - as_float(b)
    return np.sqrt(np.mean(diff * diff, axis=(-3, -2, -1)))


def pairwise_l2(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[len(a), len(b)] matrix of normalised pixel L2 distances, in blocks of ``chunk`` x ``chunk``
    images: never an N×M×HW×3 array, and never more than two blocks in float64 at once (12,000
    generations against 3,000 training images at 512 px would be 94 GB in one go)."""
    a, b = np.asarray(a), np.asarray(b)
    _check_images(a, b, "pairwise_l2")
    out = np.empty((len(a), len(b)))
    for i in range(0, len(a), chunk):
        fa = as_float(a[i:i + chunk]).reshape(len(a[i:i + chunk]), -1).astype(np.float64)
        for j in range(0, len(b), chunk):
            fb = as_float(b[j:j + chunk]).reshape(len(b[j:j + chunk]), -1).astype(np.float64)
            sq = (fa * fa).sum(1)[:, None] + (fb * fb).sum(1)[None, :] - 2.0 * fa @ fb.T
            out[i:i + chunk, j:j + chunk] = np.sqrt(np.clip(sq, 0.0, None) / fa.shape[1])
    return out


# ----------------------------------------------------------------------------------------------
# Tiled L2


def _edges(size: int, parts: int) -> np.ndarray:
    """Tile boundaries splitting ``size`` pixels into ``parts`` near-equal runs (as np.array_split),
    so sizes not divisible by the grid still get every pixel into exactly one tile."""
    return np.linspace(0, size, parts + 1).round().astype(int)


def tiled_l2(a: np.ndarray, b: np.ndarray, grid: int = 4) -> np.ndarray:
    """Max over a grid×grid tiling of the per-tile normalised L2 (Carlini et al. 2023).

    A generation that copies a training image except in one corner has a small global L2 but a
    large tiled L2; with equal tiles tiled_l2 >= l2 always (the global MSE is the tiles' mean).
    """
    a, b = np.asarray(a), np.asarray(b)
    _check_images(a, b, "tiled_l2")
    height, width = a.shape[-3], a.shape[-2]
    if grid < 1 or grid > min(height, width):
        raise ValueError(f"tiled_l2: grid={grid} needs 1 <= grid <= min(H, W) = {min(height, width)}")
    diff = as_float(a) - as_float(b)
    sq = diff * diff
    rows, cols = _edges(height, grid), _edges(width, grid)
    worst = None
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            tile = np.sqrt(np.mean(sq[..., r0:r1, c0:c1, :], axis=(-3, -2, -1)))
            worst = tile if worst is None else np.maximum(worst, tile)
    return worst


# ----------------------------------------------------------------------------------------------
# SSIM

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius = int(3.5 * 1.5 + 0.5) = 5 -> an 11-pixel window, as Wang et al.
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_CHUNK_PIXELS = 1 << 21  # values per chunk: bounds the ~10 float64 temporaries to ~200 MB


def _ssim_flat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM of matching float64 images [M, H, W, C]: mean over the valid (uncropped) pixels and
    over channels of the SSIM map."""
    from scipy.ndimage import gaussian_filter

    def blur(img: np.ndarray) -> np.ndarray:
        return gaussian_filter(img, sigma=(0, SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_TRUNCATE, mode="reflect")

    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2  # data range 1
    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # drop the border, where the window hangs over the edge
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3))


def ssim_index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM in [-1, 1] (1 = identical), broadcasting over leading axes.

    Wang et al. (2004) with a Gaussian window (sigma 1.5, 11 px), K1 = 0.01, K2 = 0.03, data
    range 1, population (not sample) covariances, computed per RGB channel and averaged over the
    channels, with the 5-pixel border dropped: the same numbers as scikit-image's
    ``structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` (checked against scikit-image 0.26.0 on noised
    and shifted images, 11-64 px: agreement to 1e-9), without depending on scikit-image.
    """
    a, b = np.asarray(a), np.asarray(b)
    _check_images(a, b, "ssim")
    height, width, channels = a.shape[-3:]
    if min(height, width) < 11:
        raise ValueError(f"ssim: images must be at least 11x11 pixels (the Gaussian window); got {height}x{width}")
    lead = np.broadcast_shapes(a.shape[:-3], b.shape[:-3])
    fa = np.broadcast_to(as_float(a), lead + a.shape[-3:]).reshape(-1, height, width, channels)
    fb = np.broadcast_to(as_float(b), lead + b.shape[-3:]).reshape(-1, height, width, channels)
    chunk = max(1, SSIM_CHUNK_PIXELS // (height * width * channels))
    out = np.empty(len(fa), dtype=np.float64)
    for start in range(0, len(fa), chunk):
        out[start:start + chunk] = _ssim_flat(fa[start:start + chunk].astype(np.float64),
                                              fb[start:start + chunk].astype(np.float64))
    return out.reshape(lead)


def ssim_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − SSIM: 0 for identical images, so that "lower = closer" holds for every distance."""
    return 1.0 - ssim_index(a, b)


# ----------------------------------------------------------------------------------------------
# SSCD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SSCD_BATCH = 32


@functools.lru_cache(maxsize=4)
def _load_torchscript(path: str, mtime_ns: int, size: int, device: str):
    """Load once per (file version, device): a distance is fetched per reconstruction call, and
    reloading a ~100 MB model each time would dominate. mtime/size invalidate a replaced file."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # torch deprecates TorchScript in favour of torch.export, but SSCD publishes no
            # exported programs: TorchScript is the format its weights exist in.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
            model = torch.jit.load(path, map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zip errors depending on the damage
        raise InputError(
            f"SSCD model {path} is not a TorchScript archive ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"pass a TorchScript file such as sscd_disc_mixup.torchscript.pt from facebookresearch/sscd-copy-detection."
        ) from None
    model.eval()
    return model


def sscd_distance(path: str | Path, image_size: int = 288, device: str = "cpu") -> Distance:
    """A distance 1 − cos(SSCD(a), SSCD(b)) from a local TorchScript SSCD model.

    SSCD (Pizzi et al., CVPR 2022) ships its copy-detection models as TorchScript archives
    (``sscd_disc_mixup.torchscript.pt`` and siblings), so that is the format read here, with
    ``torch.jit.load``. Loading TorchScript runs the archive's code, so pass only a file you trust
    (e.g. one downloaded from the SSCD release and checked against its published hash); this
    package never fetches one itself. Images are resized to image_size×image_size (SSCD's
    recommended 288 px side for square images; bilinear with antialiasing), normalised with the
    ImageNet mean and std, embedded, L2-normalised, and compared by cosine.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise InputError(f"SSCD model {path} {what}; pass the path of a local TorchScript file "
                         f"(e.g. sscd_disc_mixup.torchscript.pt), or use another distance (l2, tiled_l2, ssim).")
    resolved = path.resolve()
    stat = resolved.stat()
    model = _load_torchscript(str(resolved), stat.st_mtime_ns, stat.st_size, str(device))

    def embed(images: np.ndarray) -> np.ndarray:
        """Unit descriptors [M, D] of images [M, H, W, 3]."""
        import torch
        import torch.nn.functional as F

        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for start in range(0, len(images), SSCD_BATCH):
                x = torch.from_numpy(np.ascontiguousarray(as_float(images[start:start + SSCD_BATCH])))
                x = x.permute(0, 3, 1, 2)
                if x.shape[-2:] != (image_size, image_size):
                    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                                      antialias=True)
                x = ((x - mean) / std).to(device)
                try:
                    y = model(x)
                except Exception as exc:
                    raise InputError(f"SSCD model {resolved} failed on a [B, 3, {image_size}, {image_size}] batch "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); is it an image "
                                     f"descriptor model?") from None
                if not isinstance(y, torch.Tensor) or y.ndim != 2 or y.shape[0] != x.shape[0]:
                    raise InputError(f"SSCD model {resolved} must return descriptors [B, D]; got "
                                     f"{getattr(y, 'shape', type(y).__name__)}")
                out.append(F.normalize(y.float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim < 3 or b.ndim < 3:
            raise ValueError(f"sscd: images must be [..., H, W, 3]; got shapes {a.shape} and {b.shape}")
        # embed each side once (refs[N, 1] are N images, not N×S), then broadcast the descriptors
        ea = embed(a.reshape(-1, *a.shape[-3:])).reshape(*a.shape[:-3], -1)
        eb = embed(b.reshape(-1, *b.shape[-3:])).reshape(*b.shape[:-3], -1)
        return np.clip(1.0 - np.sum(ea * eb, axis=-1), 0.0, 2.0)  # rounding can dip below 0

    distance.__name__ = f"sscd:{resolved}"
    distance.__doc__ = f"1 − cosine of SSCD descriptors from {resolved} at {image_size} px."
    return distance


# ----------------------------------------------------------------------------------------------
# Registry

DISTANCES: dict[str, Distance] = {"l2": l2, "tiled_l2": tiled_l2, "ssim": ssim_distance}
PARAMETRISED = ("sscd:<path to TorchScript file>",)


def get_distance(name: str) -> Distance:
    """The distance registered under ``name``; ``"sscd:/path/model.pt"`` builds an SSCD distance
    from that file (a path, not a name, because the weights are the user's to supply)."""
    if name.startswith("sscd:"):
        path = name[len("sscd:"):]
        if not path:
            raise ValueError("distance 'sscd:' needs a path, e.g. 'sscd:/models/sscd_disc_mixup.torchscript.pt'")
        return sscd_distance(path)
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {sorted(DISTANCES) + list(PARAMETRISED)}")
    return DISTANCES[name]
