"""How far an image's last bits depend on the batch it is drawn in and on the thread count: the
measurement behind ``generation``'s fixed batch shape and thread count.

Usage: .venv/bin/python scripts/probe_generation_bits.py PIPELINE_FOLDER [...]  (e.g. smoke models
under data/smoke/models/suspicious/). For 12 prompts, prints the largest grey-level difference of
each drawing from the reference (one batch of 12 at 1 thread): unpadded batches of 1, 5 and 12 at 1
and 2 threads, then padded batches of 16 (all 12, a subset, reversed) at 1 and 2 threads.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from genlineage.config import load_profile
from genlineage.generation import _draw, _encode_prompts, _padded
from genlineage.jobs import torch_threads
from genlineage.models.pipeline_io import load_pipeline

PROMPTS = [f"The woman has {c} hair and {a} eyes." for c in ("black", "blond", "brown", "gray")
           for a in ("blue", "green", "brown")]


def draw(comp, prompts, seeds, batch, threads, pad: bool) -> np.ndarray:
    cfg = load_profile("smoke").generation.replace(batch=batch, threads=threads)
    out = []
    with torch_threads(threads), torch.no_grad():
        uncond = _encode_prompts(comp, [""])
        for start in range(0, len(prompts), batch):
            chunk, chunk_seeds = list(prompts[start:start + batch]), list(seeds[start:start + batch])
            if pad:
                chunk, chunk_seeds = _padded(chunk, chunk_seeds, batch)
            out.append(_draw(comp, chunk, chunk_seeds, uncond, cfg)[:len(prompts[start:start + batch])])
    return np.concatenate(out)


def main() -> None:
    seeds = list(range(len(PROMPTS)))
    for path in sys.argv[1:]:
        comp = load_pipeline(path)
        ref = draw(comp, PROMPTS, seeds, 12, 1, pad=False).astype(int)
        rows = {f"unpadded batch {b}, {t} thread(s)": draw(comp, PROMPTS, seeds, b, t, pad=False)
                for b in (1, 5, 12) for t in (1, 2)}
        padded = {t: draw(comp, PROMPTS, seeds, 16, t, pad=True).astype(int) for t in (1, 2)}
        print(path)
        for name, images in rows.items():
            print(f"  {name}: max difference {np.abs(images.astype(int) - ref).max()}")
        subset = draw(comp, PROMPTS[3:9], seeds[3:9], 16, 2, pad=True).astype(int)
        backwards = draw(comp, PROMPTS[::-1], seeds[::-1], 16, 2, pad=True)[::-1].astype(int)
        print(f"  padded to 16: 1 vs 2 threads {np.abs(padded[1] - padded[2]).max()}, subset "
              f"{np.abs(padded[2][3:9] - subset).max()}, reversed {np.abs(padded[2] - backwards).max()}")


if __name__ == "__main__":
    main()
