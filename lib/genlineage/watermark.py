"""Baseline 1 (docs/method.md#baseline-1-watermark): a 32-bit invisible watermark in every image the source generates for
an infringer (after Luo et al. 2023, as the paper runs it), decoded from the suspect's
generations.

Pipeline: :func:`random_bits` gives the source's key; :func:`embed` marks the source's
generations before the infringer sees them; :func:`decode` reads bits back from the suspect's
generations; :func:`bit_accuracy` per image; :func:`watermark_conf` = share of the suspect's
generations whose matching bits reach the binomial threshold of the target FPR
(:func:`genlineage.metrics.binomial_bits_threshold`: 21/32 at 10%, 24/32 at 1%).

The codec is `invisible-watermark`'s ``dwtDct`` method, the one SD's reference scripts use
(``WatermarkEncoder().encode(bgr, "dwtDct")``). What it does (imwatermark/maxDct.py, 0.2.0):
Haar DWT of the YUV U channel (its default ``scales=[0, 36, 36]`` names U and V, but its loop
only visits channels 0 and 1, so V is never marked); the approximation band is cut into
``block``×``block`` blocks (default 4, i.e. 8×8 px); in each block the largest-magnitude entry
other than the first is quantised to ``(floor(|v|/36) + 0.25 + 0.5·bit)·36``; bit i goes to
blocks i, i+32, i+64, ... and decoding is a majority vote (a tied vote reads 1).

Two modes, and why:

``mode="standard"`` — the public ``WatermarkEncoder``/``WatermarkDecoder``, unchanged (one pass,
block 4, scale 36). This is the paper's setting; it needs H·W >= 256·256 (the library refuses
smaller images, and so do we, naming the size). Measured here on synthetic images (32 bits,
balanced keys): generated faces/scenes rendered at 256 px: mean bit accuracy 0.875 (0.72-1.0),
at 512 px 0.896; smooth sinusoid images with 1-16 cycles per image and amplitude 80: 1.0;
very low-frequency gradients (<= 3 cycles): 0.75-0.94 (near-flat blocks, see below); noise 1.0.

``mode="dwtdct_block2_reembed"`` (for images under 256 px, e.g. the tiny profile's 32 px) — the
library's own codec class ``EmbedMaxDct`` called directly, same scale (36), same channel (U),
same quantiser and the library's decoder unchanged, with three documented changes:

1. ``block=2`` instead of 4. A 32 px image has a 16×16 approximation band: 16 blocks of 4×4,
   so only 16 of the 32 bits would be embedded at all (bits 16-31 then decode as a constant 0).
   Blocks of 2×2 (4×4 px) give 64 slots: all 32 bits, each twice. The binomial thresholds
   (21/32, 24/32) therefore apply unchanged.
2. Re-embedding: the encoder is applied again until the image decodes to the key (at most
   ``max_passes``, default 6). One pass leaves many bits wrong at 32 px: quantising the largest
   entry of a near-flat block can lower it below a neighbour, and the decoder then reads the
   neighbour. A second pass quantises whatever is now the largest; in practice 3 passes settle
   it. This only makes embedding as reliable as the paper's 512 px one, so that what the
   baseline measures is the watermark's survival through the infringer's fine-tuning, not codec
   loss at the source.
3. The library's encoder puts the U channel back with its horizontal and vertical detail bands
   swapped (pywt returns (cH, cV, cD); maxDct.py passes (cV, cH, cD) to idwt2) and casts to
   uint8 by truncation. At 32 px the swap alone costs 31.6 dB PSNR, and repeated passes would
   toggle it; our encoder restores the bands in order and rounds/clips. The bits live in the
   approximation band, which neither change touches.

Measured at 32 px on 200 generated faces and scenes (the tiny profile's domains; one balanced
key per image; PSNR vs the unmarked image): the library's plain one pass with block 2: mean bit
accuracy 0.74, 71% of images >= 21/32, 55% >= 24/32, 29.8 dB; one pass with the bands in order:
0.745, 72%, 55%, 36.2 dB; this mode (<= 6 passes, about 3 on average): 0.998 (worst image
29/32), 100% >= 21/32 and >= 24/32, 34.6 dB, ~3 ms per image. Unmarked 32 px images decode at
0.50 mean accuracy; 2.5% reach 21/32 and 0.5% reach 24/32, under the nominal 10% / 1%.
Alternatives measured and rejected: block 4 at 32 px (only 16 bits fit: 0.81 accuracy on those
16, 0.65 over 32); stronger scales 72 and 108 (worse at 32 px, 0.66-0.73: more argmax flips);
also marking the Y channel (0.83, but 24 dB); marking a 256 px upscale with the standard encoder
and downscaling to 32 px (0.50-0.57 after the round trip: each 8×8 px codec block collapses
into one pixel, so the mark is gone). At 64 px, one pass gives 0.70 (block 4) / 0.82 (block 2).

Robustness of this mode's marks at 32 px: additive noise (sigma 5 of 255) 0.99; a 2× area
down- and bilinear up-resize 0.85 (conf_wm at 10% FPR 0.955). But an encode/decode round trip
through the tiny profile's VAE (data/tiny/models/vae, reconstruction L2 0.065, i.e. far above
the mark's ~0.02) leaves 0.50 accuracy and conf_wm 0.04 at 10% FPR (0.01 at 1%), the same as
unmarked images through it (0.49, 0.01): the infringer's own autoencoder cannot represent the
mark, so at the tiny profile Baseline 1 is expected to sit at chance for a reason that has
nothing to do with the attribution method. A notebook should show this VAE check beside the
baseline's numbers.

Keys: :func:`random_bits` draws a *balanced* key (16 ones, 16 zeros, random order) by default.
The binomial threshold assumes an unmarked image matches each key bit with probability 1/2; a
flat or very smooth image decodes to a near-constant bit string (flat blocks read 0), which
would match an unbalanced key on most bits. With a balanced key any constant decoding matches
exactly half. ``balanced=False`` gives 32 i.i.d. fair bits (measured unmarked FPR at 21/32: 5%).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError
from .metrics import binomial_bits_threshold

STANDARD = "standard"
SMALL = "dwtdct_block2_reembed"
MODES = (STANDARD, SMALL)
N_BITS = 32
MIN_STANDARD_PIXELS = 256 * 256     # the library's own check: H*W < 256*256 is refused
SCALES = (0, 36, 36)                 # the library's default (Y unmarked, U at 36; V never visited)
SMALL_BLOCK = 2
MAX_PASSES = 6


def _imports():
    """Import the codec lazily: only this baseline needs opencv and PyWavelets."""
    try:
        import cv2
        import imwatermark
        from imwatermark.maxDct import EmbedMaxDct
    except ImportError as exc:       # pragma: no cover - depends on the environment
        raise ImportError(
            "the watermark baseline needs invisible-watermark 0.2.0 (installed with --no-deps), "
            "opencv-python-headless and PyWavelets; see requirements.txt and scripts/setup.sh"
        ) from exc
    return cv2, imwatermark, EmbedMaxDct


def random_bits(seed: int, n_bits: int = N_BITS, balanced: bool = True) -> np.ndarray:
    """A source's watermark key: n_bits 0/1 values, deterministic in seed; balanced by default
    (half ones) so that a constant decoding of an unmarked image matches exactly half."""
    rng = np.random.default_rng(seed)
    if not balanced:
        return rng.integers(0, 2, size=n_bits).astype(np.uint8)
    bits = np.zeros(n_bits, dtype=np.uint8)
    bits[: n_bits // 2] = 1
    rng.shuffle(bits)
    return bits


def mode_for_size(height: int, width: int | None = None) -> str:
    """The mode a profile of this image size uses: the paper's codec from 256×256 up, else the
    direct block-2 codec."""
    width = height if width is None else width
    return STANDARD if height * width >= MIN_STANDARD_PIXELS else SMALL


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"images must be RGB shaped [N, H, W, 3], got shape {images.shape}")
    if images.dtype != np.uint8:
        raise InputError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
    return images


def _check_bits(bits: Sequence[int] | np.ndarray) -> np.ndarray:
    b = np.asarray(bits)
    if b.ndim != 1 or b.size == 0 or not np.isin(b, (0, 1)).all():
        raise InputError(f"bits must be a 1-D array of 0/1 values, got shape {b.shape}")
    return b.astype(np.uint8)


def _check_mode(mode: str, height: int, width: int, n_bits: int) -> None:
    if mode not in MODES:
        raise InputError(f"unknown watermark mode {mode!r}; choose one of {MODES}")
    if mode == STANDARD and height * width < MIN_STANDARD_PIXELS:
        raise InputError(
            f"{height}×{width} px images are too small for mode='standard': invisible-watermark's "
            f"WatermarkEncoder refuses images under 256×256 px (H·W < {MIN_STANDARD_PIXELS}). "
            f"Use a profile with image_size >= 256, or mode={SMALL!r} (see the module docstring)."
        )
    if mode == SMALL:
        slots = (height // 4) * (width // 4)    # 2×2 blocks of the half-size DWT band
        if slots < n_bits:
            raise InputError(
                f"{height}×{width} px images hold {slots} blocks in mode={SMALL!r}, fewer than the "
                f"{n_bits} bits of the key; images must be at least {4 * int(np.ceil(np.sqrt(n_bits)))} px"
            )


def _fixed_codec_class():
    """``EmbedMaxDct`` with its encoder's U-channel write-back fixed (detail bands in order,
    rounding instead of truncation); quantiser and decoder are the library's."""
    cv2, _, EmbedMaxDct = _imports()
    import pywt

    class _MaxDctBandsInOrder(EmbedMaxDct):
        def encode(self, bgr: np.ndarray) -> np.ndarray:
            row, col, _ = bgr.shape
            yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
            r4, c4 = row // 4 * 4, col // 4 * 4
            for channel in range(2):                      # the library's loop: Y and U only
                if self._scales[channel] <= 0:
                    continue
                ca1, (h1, v1, d1) = pywt.dwt2(yuv[:r4, :c4, channel], "haar")
                self.encode_frame(ca1, self._scales[channel])
                plane = pywt.idwt2((ca1, (h1, v1, d1)), "haar")
                yuv[:r4, :c4, channel] = np.clip(np.round(plane), 0, 255)
            return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)

    return _MaxDctBandsInOrder


def embed(images: np.ndarray, bits: Sequence[int] | np.ndarray, mode: str = STANDARD,
          max_passes: int = MAX_PASSES) -> np.ndarray:
    """Watermark every image with ``bits``; uint8 RGB [N, H, W, 3] in and out.

    ``standard``: SD's reference call, one pass. ``dwtdct_block2_reembed``: the library's codec
    with 2×2 blocks, re-applied until the image decodes to the key or ``max_passes`` is reached
    (``max_passes=1`` is the plain one-pass codec, for comparison).
    """
    cv2, imwatermark, EmbedMaxDct = _imports()
    images = _check_images(images)
    bits = _check_bits(bits)
    _, height, width, _ = images.shape
    _check_mode(mode, height, width, bits.size)
    if max_passes < 1:
        raise InputError(f"max_passes must be >= 1, got {max_passes}")
    out = np.empty_like(images)
    if mode == STANDARD:
        encoder = imwatermark.WatermarkEncoder()
        encoder.set_watermark("bits", [int(b) for b in bits])
        for i, rgb in enumerate(images):
            bgr = encoder.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct")
            out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return out
    codec = _fixed_codec_class()([int(b) for b in bits], wmLen=bits.size, scales=list(SCALES), block=SMALL_BLOCK)
    reader = EmbedMaxDct([], wmLen=bits.size, scales=list(SCALES), block=SMALL_BLOCK)
    for i, rgb in enumerate(images):
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        for _ in range(max_passes):
            bgr = codec.encode(bgr)
            if np.array_equal(reader.decode(bgr).astype(np.uint8), bits):
                break
        out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return out


def decode(images: np.ndarray, n_bits: int = N_BITS, mode: str = STANDARD) -> np.ndarray:
    """Read ``n_bits`` bits from every image with the library's decoder: uint8 [N, n_bits] of 0/1."""
    cv2, imwatermark, EmbedMaxDct = _imports()
    images = _check_images(images)
    _, height, width, _ = images.shape
    _check_mode(mode, height, width, n_bits)
    out = np.zeros((len(images), n_bits), dtype=np.uint8)
    if mode == STANDARD:
        decoder = imwatermark.WatermarkDecoder("bits", n_bits)
        for i, rgb in enumerate(images):
            out[i] = np.asarray(decoder.decode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct"), dtype=np.uint8)
        return out
    reader = EmbedMaxDct([], wmLen=n_bits, scales=list(SCALES), block=SMALL_BLOCK)
    for i, rgb in enumerate(images):
        out[i] = reader.decode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)).astype(np.uint8)
    return out


def _check_decoded(decoded: np.ndarray, bits: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bits = _check_bits(bits)
    d = np.asarray(decoded)
    if d.ndim != 2 or d.shape[1] != bits.size:
        raise InputError(f"decoded must be shaped [N, {bits.size}] to match the key, got {d.shape}")
    return d.astype(np.uint8), bits


def bit_accuracy(decoded: np.ndarray, bits: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per image: share of decoded bits that equal the key ([N] floats in [0, 1])."""
    d, bits = _check_decoded(decoded, bits)
    return (d == bits[None, :]).mean(axis=1)


def watermark_conf(decoded: np.ndarray, bits: Sequence[int] | np.ndarray, target_fpr: float = 0.1) -> float:
    """conf_wm: share of images whose matching bits reach the binomial threshold for target_fpr
    (21 of 32 at 10%, 24 of 32 at 1%); nan for no images."""
    d, bits = _check_decoded(decoded, bits)
    if len(d) == 0:
        return float("nan")
    k = binomial_bits_threshold(bits.size, target_fpr)
    matches = (d == bits[None, :]).sum(axis=1)
    return float(np.mean(matches >= k))
