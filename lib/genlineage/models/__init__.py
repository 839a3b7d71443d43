"""Text-to-image models as diffusers Stable-Diffusion pipeline folders.

``tokenizer`` builds a CLIP tokenizer offline, ``tiny`` builds the tiny family from a profile,
``pipeline_io`` saves and (safely) loads pipeline folders.
"""
from .pipeline_io import SDComponents, load_pipeline, save_pipeline

__all__ = ["SDComponents", "load_pipeline", "save_pipeline"]
