"""Time what loading an untrusted model adds, at SD-v1.5's size: the streaming pass that refuses
non-finite weights (``models.gate.check_finite_weights``) and the private copy a suspect's folder
is loaded from (``models.private_copy``), on a UNet-sized safetensors file (859,520,964 float32
values, SD-v1.5's UNet; zeros: the pass reads every byte whatever they hold).

Usage: .venv/bin/python scripts/time_untrusted_load.py [folder]   (default: a temporary folder;
needs about 7 GB free there and under $TMPDIR). Prints the seconds of each step, best of 3, with
the file's size and the throughput. A measurement for the notes, not a test.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from genlineage.models.gate import check_finite_weights, files_signature
from genlineage.models.private_copy import private_copy

SD15_UNET_VALUES = 859_520_964
CHUNK = 50_000_000


def write_unet_sized(folder: Path) -> Path:
    """A safetensors file of SD-v1.5's UNet size, in tensors of at most 50 M values."""
    sizes = [CHUNK] * (SD15_UNET_VALUES // CHUNK) + [SD15_UNET_VALUES % CHUNK]
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    path.parent.mkdir(parents=True)
    save_file({f"block.{i}.weight": torch.zeros(n) for i, n in enumerate(sizes)}, str(path))
    return path


def best_of(n: int, step) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(dir=argv[0] if argv else None) as tmp:
        folder = Path(tmp) / "suspect"
        weights = write_unet_sized(folder)
        gb = weights.stat().st_size / 1e9
        finite = best_of(3, lambda: check_finite_weights(weights))

        def copy() -> None:
            with private_copy(folder, files_signature(folder)):
                pass

        copied = best_of(3, copy)
        print(f"UNet-sized safetensors: {gb:.2f} GB ({SD15_UNET_VALUES:,} float32 values)")
        print(f"finite-weights pass: {finite:.1f} s ({gb / finite:.2f} GB/s), best of 3")
        print(f"private copy (copy, signature check, removal): {copied:.1f} s ({gb / copied:.2f} GB/s), best of 3")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
