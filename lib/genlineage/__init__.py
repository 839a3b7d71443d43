"""genlineage: training-data attribution for text-to-image diffusion models.

Reproduces Zhang et al., "Training Data Attribution: Was Your Model Secretly Trained On Data
Created By Mine?" (arXiv 2409.15781) with one code path for three profiles: ``smoke`` (tests),
``tiny`` (the CPU default) and ``paper`` (SD-v1.5/2.1 on a GPU).
"""

__version__ = "0.1.0"
