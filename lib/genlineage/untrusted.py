"""Reading a file someone else wrote: what it is, how big, and JSON that says one thing.

The model gate (``models.gate``) and the image-folder and key-set readers (``data.imagefolder``,
``keys``) read files an adversary may have placed: a FIFO that blocks the read forever, a sparse
file claiming terabytes, JSON that gives a key twice so that two readers see two configs. These
are the primitives both use, with only the standard library (reading data must not import torch);
each refusal names the file and takes the fix its caller knows.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import InputError

CHUNK = 1 << 20


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words for a message."""
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: Path, fix: str, unreadable_fix: str | None = None) -> int:
    """A descriptor on ``path``, checked on the open file itself to be a regular file: opened
    non-blocking, so a FIFO swapped in after the caller's checks cannot hang the open."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the path, or {unreadable_fix or fix}.") from None
    except OSError as err:
        raise InputError(f"{path} cannot be read ({err.strerror}); {unreadable_fix or fix}.") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputError(f"{path} is a {file_kind(mode)}, not a file; {fix}.")
    return fd


def read_at_most(fd: int, limit: int) -> bytes:
    """Read until end of file or ``limit`` bytes, whichever comes first."""
    chunks, got = [], 0
    while got < limit:
        chunk = os.read(fd, min(limit - got, CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_bounded(path: str | Path, bound: int, fix: str, unreadable_fix: str | None = None) -> bytes:
    """At most ``bound`` bytes of a regular file, or a refusal: the size is checked on the open
    file before a byte is read (a sparse multi-GB file is refused unread), and a file that grows
    meanwhile is still read only to the bound."""
    path = Path(path)
    fd = open_regular(path, fix, unreadable_fix)
    try:
        size = os.fstat(fd).st_size
        if size > bound:
            raise InputError(f"{path} is {size:,} bytes, above the {bound:,}-byte bound for this kind of file "
                             f"(it is refused unread); {fix}.")
        blob = read_at_most(fd, bound + 1)
    finally:
        os.close(fd)
    if len(blob) > bound:
        raise InputError(f"{path} grew above the {bound:,}-byte bound while being read; pass a folder nobody writes to.")
    return blob


class DuplicateKey(ValueError):
    """A JSON object gave this key twice."""


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``json.loads``' object hook for a JSON object that gives no key twice: with
    ``{"text": "a", "text": "b"}`` two readers can see two values (Python keeps the last, others
    the first)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def parse_json(blob: bytes | str, path: str | Path, fix: str) -> Any:
    """``blob`` (the bytes of ``path``, or one of its lines) as strict UTF-8 JSON that gives no key
    twice; an :class:`InputError` naming ``path`` otherwise."""
    try:
        text = blob.decode("utf-8") if isinstance(blob, bytes) else blob
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except DuplicateKey as exc:
        raise InputError(f"{path} gives the key {exc.args[0]!r} twice; {fix}.") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested beyond Python's stack
        raise InputError(f"{path} is not valid JSON ({str(exc)[:200]}); {fix}.") from None


def is_json_int(value: Any) -> bool:
    """An integer as JSON wrote it. Why not isinstance(value, int): True is an int to Python, and a
    config or key set that says ``true`` where a count belongs is malformed, not 1."""
    return isinstance(value, int) and not isinstance(value, bool)
