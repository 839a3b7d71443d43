"""A folder nobody vouches for, copied into a private folder before any loader reads it.

Why: diffusers and transformers open a model folder by name and decide for themselves which of its
files to read (a variant's weights, ``added_tokens.json``, a shard an index names). For a folder
someone else wrote (a suspect's), genlineage hands them a copy instead: a folder of this process's
own (created by ``tempfile`` with mode 0700, under ``$TMPDIR``), made after the gate checked the
original, and shown to hold the checked bytes because the original's
:func:`~genlineage.models.gate.files_signature` (every file's inode, size, mtime and ctime) is the
same after the copy as before the check. No one else can write into the copy, so the loaders read
only bytes the gate checked, however long they take. The cost is one read of the folder and its
size on the temporary disk while it loads (a suspect is loaded once a run); genlineage's own and
the owner's folders are loaded in place.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from .gate import check_unchanged


@contextmanager
def private_copy(folder: str | Path, checked_signature: tuple, role: str = "") -> Iterator[Path]:
    """Yield a private copy of ``folder`` (links inside it followed: the gate showed they stay
    inside), refused when the original is not what it was when ``checked_signature`` was taken;
    the copy is removed on leaving, whatever happens. An error raised while it is read comes out
    as an InputError naming ``folder``, not the copy."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="genlineage-load-") as private:
        copy = Path(private) / folder.name
        try:
            shutil.copytree(folder, copy, symlinks=False, copy_function=shutil.copyfile)
        except (OSError, shutil.Error) as err:
            raise InputError(f"{role + ': ' if role else ''}{folder} could not be copied into a private folder under "
                             f"{tempfile.gettempdir()} before loading ({err}); free room there, or set TMPDIR to a "
                             "folder with room for one model, and run again.") from None
        check_unchanged(checked_signature, folder, role)
        try:
            yield copy
        except InputError as err:  # a message names the user's folder, never the private copy
            raise InputError(str(err).replace(str(copy), str(folder))) from None
        except Exception as err:  # a loader's own error (a config of another architecture, ...)
            message = str(err).replace(str(copy), str(folder))[:400]
            raise InputError(f"{folder} cannot be loaded as a Stable-Diffusion pipeline "
                             f"({type(err).__name__}: {message}).") from None


__all__ = ["private_copy"]
