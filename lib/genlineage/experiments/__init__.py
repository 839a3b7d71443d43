"""Stages of the paper's experiments; each writes its results beside the experiment (LiRA-style)
under ``profile.data_root`` and is cached under a hash of what determines it."""
