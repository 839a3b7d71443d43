"""Captioned image data: generators, the image-folder format, splits and real-data converters.

Everything the models train on or are compared against passes through one on-disk format, the
image folder (PNG files + ``metadata.jsonl`` with ``file_name`` and ``text``), which is what
diffusers' ``train_text_to_image.py`` reads. The tiny profiles fill it with generated stand-ins
for CelebA-Dialog (:mod:`.faces`) and CC3M (:mod:`.scenes`); the paper profile fills it from the
real releases (:mod:`.convert`). :mod:`.splits` cuts every domain into disjoint roles, and
:mod:`.build` writes one folder per (domain, role).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One generated (image, caption) pair.

    ``attributes`` holds what the caption says *and* the hidden details it does not say, so
    that a notebook can show which parts of an image a model reproduced beyond its prompt.
    """

    image: np.ndarray  # uint8 HxWx3, RGB
    caption: str
    attributes: dict = field(default_factory=dict)


# Submodules import ``Sample`` from here, so they are imported after it is defined.
from .imagefolder import ImageFolder, load_image, read_imagefolder, write_imagefolder  # noqa: E402
from .faces import caption_for, face_sample, parse_face_caption, render_face  # noqa: E402
from .scenes import scene_caption_for, scene_sample  # noqa: E402
from .splits import check_disjoint, make_splits, pretrain_subset, role_entries  # noqa: E402
from .convert import convert_cc3m, convert_celeba_dialog  # noqa: E402
from .build import build_datasets, load_pretrain_folder, load_split_folder, splits_path  # noqa: E402

__all__ = [
    "Sample",
    "ImageFolder",
    "load_image",
    "read_imagefolder",
    "write_imagefolder",
    "face_sample",
    "render_face",
    "caption_for",
    "parse_face_caption",
    "scene_sample",
    "scene_caption_for",
    "make_splits",
    "check_disjoint",
    "role_entries",
    "pretrain_subset",
    "convert_celeba_dialog",
    "convert_cc3m",
    "build_datasets",
    "load_split_folder",
    "load_pretrain_folder",
    "splits_path",
]
