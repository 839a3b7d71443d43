"""The pluggable distances (tiled L2, 1 − SSIM, SSCD) on constructed cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genlineage.distances import DISTANCES, get_distance, l2, pairwise_l2, ssim_distance, ssim_index, sscd_distance, tiled_l2
from genlineage.errors import InputError

# TorchScript is deprecated in torch >= 2.10 but is the format SSCD ships; the test writes one.
jit_deprecated = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


def _smooth_image(seed: int = 0, size: int = 32) -> np.ndarray:
    """A textured uint8 image (smooth blobs, not white noise, so SSIM behaves as on photos)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(6 * x + rng.random() * 6) * np.cos(5 * y + c) for c in range(3)], axis=-1)
    return np.clip((img * 0.5 + 0.5) * 255, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["l2", "tiled_l2", "ssim"])
def test_identical_images_are_at_distance_zero(name):
    img = _smooth_image()
    assert np.isclose(get_distance(name)(img, img), 0.0, atol=1e-6)


@pytest.mark.parametrize("name", ["l2", "tiled_l2", "ssim"])
def test_distances_broadcast_like_reconstruct_calls_them(name):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    refs = rng.integers(0, 256, (2, 1, 16, 16, 3), dtype=np.uint8)
    d = get_distance(name)(images, refs)
    assert d.shape == (2, 3)
    assert np.isclose(d[1, 2], get_distance(name)(images[1, 2], refs[1, 0]))
    # uint8 and float [0, 1] inputs give the same distance
    assert np.allclose(d, get_distance(name)(images / 255.0, refs / 255.0), atol=1e-5)


def test_a_difference_in_one_tile_weighs_more_under_tiled_l2():
    a = np.zeros((32, 32, 3), np.float32)
    b = a.copy()
    b[:8, :8] = 1.0  # one tile of the 4×4 grid fully different
    assert np.isclose(l2(a, b), 0.25)   # 1/16 of the pixels -> sqrt(1/16)
    assert np.isclose(tiled_l2(a, b), 1.0)
    assert np.isclose(tiled_l2(a, b, grid=2), 0.5)
    assert np.isclose(tiled_l2(a, b, grid=1), l2(a, b))


def test_tiled_l2_covers_sizes_not_divisible_by_the_grid():
    a = np.zeros((10, 10, 3), np.float32)
    b = a.copy()
    b[-1, -1] = 1.0  # the last pixel must land in some tile
    assert tiled_l2(a, b) > 0
    assert tiled_l2(a, b) >= l2(a, b)


def test_ssim_orders_noise_and_shift_sensibly():
    img = _smooth_image(2)
    rng = np.random.default_rng(3)
    light = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(img + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(img, 1, axis=1)
    other = _smooth_image(7)
    d = {k: float(ssim_distance(img, v)) for k, v in
         dict(light=light, heavy=heavy, shifted=shifted, other=other).items()}
    assert d["light"] < d["heavy"] and d["light"] < d["other"] and d["shifted"] < d["other"]
    assert 0 <= d["light"] < 0.1
    assert np.isclose(ssim_index(img, img), 1.0)


def test_ssim_matches_a_reference_value():
    """Constant images: SSIM reduces to the luminance term (2·μx·μy + C1) / (μx² + μy² + C1)."""
    a, b = np.full((16, 16, 3), 0.2), np.full((16, 16, 3), 0.6)
    c1 = 0.01 ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    assert np.isclose(ssim_index(a, b), expected, atol=1e-9)


def test_distances_refuse_mismatched_sizes_and_unknown_names():
    with pytest.raises(ValueError, match="one size"):
        tiled_l2(np.zeros((16, 16, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"l2: images must share one size.*\(512, 512, 3\) and \(768, 768, 3\)"):
        l2(np.zeros((2, 512, 512, 3), np.uint8), np.zeros((2, 768, 768, 3), np.uint8))  # SD-2.1 at its own size
    with pytest.raises(ValueError, match="pairwise_l2: images must share one size"):
        pairwise_l2(np.zeros((2, 8, 8, 3)), np.zeros((3, 16, 16, 3)))
    with pytest.raises(ValueError, match="11x11"):
        ssim_distance(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="unknown distance"):
        get_distance("nope")
    assert {"l2", "tiled_l2", "ssim"} <= set(DISTANCES)


class _TinyDescriptor(torch.nn.Module):
    """Stands in for SSCD: conv -> global average pool -> linear descriptor."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture()
def scripted_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny_sscd.torchscript.pt"
    torch.jit.save(torch.jit.script(_TinyDescriptor()), str(path))
    return path


@jit_deprecated
def test_sscd_distance_from_a_torchscript_file(scripted_model):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, 3, 24, 24, 3), dtype=np.uint8)
    d = sscd_distance(scripted_model, image_size=32)(images, images[:, :1])
    assert d.shape == (2, 3)
    assert np.allclose(d[:, 0], 0.0, atol=1e-5)
    assert np.all((d >= 0) & (d <= 2))
    via_registry = get_distance(f"sscd:{scripted_model}")(images, images[:, :1])
    assert via_registry.shape == (2, 3) and np.allclose(via_registry[:, 0], 0.0, atol=1e-5)


@jit_deprecated
def test_sscd_refuses_missing_and_non_torchscript_files(tmp_path):
    missing = tmp_path / "absent.pt"
    with pytest.raises(InputError, match="absent.pt"):
        sscd_distance(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InputError, match="garbage.pt.*not a TorchScript"):
        get_distance(f"sscd:{garbage}")
    pickled = tmp_path / "state_dict.pt"
    torch.save(_TinyDescriptor().state_dict(), pickled)
    with pytest.raises(InputError, match="state_dict.pt.*not a TorchScript"):
        sscd_distance(pickled)
