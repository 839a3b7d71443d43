"""Quiet the model libraries while genlineage reads or writes a folder (it shows its own progress)."""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """Silence the libraries' per-file progress bars and notices while reading or writing a
    folder; genlineage shows its own progress for the work that takes time."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    levels = (dlog.get_verbosity(), tlog.get_verbosity())
    dlog.set_verbosity_error(), tlog.set_verbosity_error()
    dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0]), tlog.set_verbosity(levels[1])
