"""One rule for every cached result: reuse it only when its stamp records exactly the inputs it
would be made from now.

Why one rule: a stage that decides "cached" its own way sooner or later forgets an input, and a
result then outlives what it was made from (a retrained source whose infringers are never
retrained, a table read after its models changed). Here every stage describes a result as a
:class:`Result`: where it lives and a mapping of named inputs. An input is either a setting (the
value itself: a seed, a config section) or a piece of content, named by :func:`content_id`, the
hash of its bytes; never a path or a name, which stay the same when the content changes.

Where the stamp lives, and why the pair is one atomic step:

- a **folder** result holds its stamp (``_stamp.json``) inside; the folder is built under a
  temporary name and renamed into place (``io.atomic_dir``), so result and stamp appear together;
- a **file** result has its stamp beside it (``<name>.stamp.json``), and the stamp records the
  sha256 of the file. Both are renamed into place, and the pair is accepted only when that hash
  matches the file: a run killed between the two renames leaves a pair that reads as stale (and
  is redone), never one that reads as fresh with the wrong content.

A reader that must not recompute (the report) calls :meth:`Result.require`, which names the inputs
that changed and the stage to re-run.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from .errors import InputError
from .io import atomic_dir, atomic_path, file_sha256, read_json, stable_hash, write_json

STAMP = "_stamp.json"  # inside a folder result
MISSING = "(missing)"  # the content id of an input that does not exist (yet)
FILE_STAMP_SUFFIX = ".stamp.json"  # beside a file result


class StaleResult(InputError):
    """A result that a reader needs is missing, or was made from other inputs than the current ones."""


# --- content -----------------------------------------------------------------------------------------

_CONTENT: dict[tuple, str] = {}


def _listing(path: Path, parts: tuple[str, ...] | None) -> list[Path]:
    """The files whose bytes make up ``path``'s content: every file below it except stamps and the
    hidden leftovers of interrupted writes (a stamp describes inputs, not content)."""
    if path.is_file():
        return [path]
    roots = [path / p for p in parts] if parts else [path]
    files = [f for root in roots if root.exists() for f in root.rglob("*") if f.is_file()]
    return sorted(f for f in files if f.name != STAMP and not f.name.endswith(FILE_STAMP_SUFFIX)
                  and not any(part.startswith(".") for part in f.relative_to(path).parts))


def content_id(path: str | Path, parts: Iterable[str] | None = None) -> str:
    """Hash of the bytes of a file, or of every file in a folder with its relative name (only the
    sub-folders ``parts``, if given). Two folders with the same files have the same id wherever
    they lie; any changed byte, added or removed file changes it.

    Hashing is remembered per process under each file's (size, mtime, ctime, inode), so a stage that
    names the same model in a hundred stamps reads its weights once, and across processes for
    large files (:func:`remembered_sha256`), so a hundred jobs do not each re-read a base's 4 GB."""
    path = Path(path)
    if not path.exists():
        return MISSING  # what is made from it cannot be fresh: no stamp records a missing input
    parts = tuple(parts) if parts else None
    files = _listing(path, parts)
    signature = tuple((str(f), s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for f in files for s in [f.stat()])
    memo = (str(path.resolve()), parts, signature)
    if memo not in _CONTENT:
        base = path if path.is_dir() else path.parent
        _CONTENT[memo] = stable_hash([(f.relative_to(base).as_posix(), remembered_sha256(f)) for f in files],
                                     length=24)
    return _CONTENT[memo]


HASH_MEMO_ENV = "GENLINEAGE_HASH_CACHE"  # a folder, or "off"
REMEMBERED_MIN_BYTES = 1 << 20  # smaller files cost less to hash than to look up


def hash_memo_dir() -> Path | None:
    """Where file hashes are remembered across processes: ``$GENLINEAGE_HASH_CACHE``, else
    ``~/.cache/genlineage/sha256`` (``$XDG_CACHE_HOME`` honoured); None when set to ``off``."""
    value = os.environ.get(HASH_MEMO_ENV)
    if value == "off":
        return None
    if value:
        return Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genlineage" / "sha256"


def remembered_sha256(path: Path) -> str:
    """sha256 of a file, remembered under the file's identity: its real path, device, inode, size,
    mtime and ctime. Any write to the file moves its ctime, which no one can set back (``utime``
    sets only mtime), so a remembered hash is never the hash of other bytes. A file that changes
    while it is hashed is not remembered; a memo folder that cannot be written only costs the hash."""
    st = path.stat()
    memo_dir = hash_memo_dir()
    if memo_dir is None or st.st_size < REMEMBERED_MIN_BYTES:
        return file_sha256(path)
    identity = [os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    entry = memo_dir / stable_hash(identity, length=32)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        remembered = entry.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", remembered):
            return remembered
    digest = file_sha256(path)
    after = path.stat()
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        with contextlib.suppress(OSError):
            with atomic_path(entry) as tmp:
                tmp.write_text(digest + "\n")
    return digest


def array_id(*values: Any) -> str:
    """Content id of in-memory data (arrays by dtype, shape and bytes; anything else by its JSON):
    for inputs a stage assembles itself, such as a source's candidate pairs."""
    digest = hashlib.sha256()
    for value in values:
        if isinstance(value, np.ndarray):
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def listing_id(path: str | Path) -> str:
    """Hash of the names, sizes and modification times of every file below ``path``: the one
    input identified by metadata rather than bytes, for a raw dataset release (CelebA, CC3M: tens
    of GB that a stage converts once, and hashing them on every run would cost more than the
    conversion). Any added, removed, resized or rewritten file changes it."""
    path = Path(path)
    if not path.exists():
        return MISSING
    files = sorted(f for f in path.rglob("*") if f.is_file())
    return stable_hash([(f.relative_to(path).as_posix(), s.st_size, s.st_mtime_ns) for f in files for s in [f.stat()]],
                       length=24)


def code_id(*modules: str) -> str:
    """Content id of the source code of the named modules (a package: every ``.py`` file below it):
    the input that says *how* a result is computed from its other inputs.

    Why: a result whose stamp records only its data and settings outlives a change to the code that
    computes it, unless someone remembers to bump a version by hand. Naming the modules that compute
    it makes the key follow the code, as a build tool's rule depends on its script. Any edit to them
    (a comment included) makes the result stale, which costs a recomputation and never a stale table.
    The id depends on the files' bytes and names within each package, not on where the clone lies."""
    parts = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"code_id: no module named {name!r}")
        origin = Path(spec.origin)
        if spec.submodule_search_locations:  # a package: all of its Python files
            folder = origin.parent
            files = sorted(f for f in folder.rglob("*.py") if "__pycache__" not in f.parts)
            parts.append((name, [(f.relative_to(folder).as_posix(), file_sha256(f)) for f in files]))
        else:
            parts.append((name, file_sha256(origin)))
    return stable_hash(parts, length=24)


def _normalised(inputs: Mapping[str, Any]) -> dict:
    """Inputs as a stamp stores them (JSON: tuples become lists, keys strings), so that what is
    compared is what was written."""
    return json.loads(json.dumps(dict(inputs), sort_keys=True, default=str))


# --- results -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """A cached result of some stage: a file or a folder at ``path``, made from ``inputs``."""

    path: Path
    inputs: Mapping[str, Any]
    folder: bool = False
    made_by: str = ""  # what re-makes it (a notebook, a function): named when a reader finds it stale
    _normalised_inputs: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "_normalised_inputs", _normalised(self.inputs))

    @property
    def stamp_path(self) -> Path:
        return self.path / STAMP if self.folder else self.path.with_name(self.path.name + FILE_STAMP_SUFFIX)

    def recorded(self) -> dict | None:
        """The stamp as written, or None when there is none or it cannot be read (a damaged stamp
        means redo, never a crash)."""
        try:
            stamp = read_json(self.stamp_path)
        except (OSError, json.JSONDecodeError):
            return None
        return stamp if isinstance(stamp, dict) else None

    def changed_inputs(self) -> list[str]:
        """The names of the inputs whose recorded value differs from the current one; ``["(missing)"]``
        when the result or its stamp is absent, ``["(content)"]`` when a file result no longer holds
        what its stamp was written for. Empty: the result is fresh."""
        stamp = self.recorded()
        if stamp is None or not self.path.exists():
            return ["(missing)"]
        recorded = stamp.get("inputs") or {}
        names = sorted(set(recorded) | set(self._normalised_inputs))
        changed = [n for n in names if recorded.get(n) != self._normalised_inputs.get(n)]
        if changed:
            return changed
        if not self.folder and stamp.get("output") != file_sha256(self.path):
            return ["(content)"]
        return []

    def fresh(self) -> bool:
        """The one test every stage asks before reusing work."""
        return not self.changed_inputs()

    def stamp_record(self, **extra: Any) -> dict:
        """What the stamp holds: the inputs, plus ``extra`` facts about the run (never compared)."""
        return {"inputs": self._normalised_inputs, **({"extra": extra} if extra else {})}

    def extra(self) -> dict:
        """The facts recorded beside the inputs (e.g. a query's watermark score)."""
        return (self.recorded() or {}).get("extra", {})

    def write(self, writer: Callable[[Path], None], **extra: Any) -> Path:
        """Make a file result: ``writer(tmp)`` writes the content to a temporary path, then the file
        and its stamp (with the file's hash) are renamed into place."""
        if self.folder:
            raise TypeError(f"{self.path} is a folder result; build it with Result.building()")
        with atomic_path(self.path) as tmp:
            writer(tmp)
            record = {**self.stamp_record(**extra), "output": file_sha256(tmp)}
        write_json(self.stamp_path, record)
        return self.path

    @contextlib.contextmanager
    def building(self, **extra: Any) -> Iterator[Path]:
        """Make a folder result: yields a temporary folder to fill; on success the stamp is added
        and the folder renamed into place in one step."""
        if not self.folder:
            raise TypeError(f"{self.path} is a file result; write it with Result.write()")
        with atomic_dir(self.path) as tmp:
            yield tmp
            write_json(tmp / STAMP, self.stamp_record(**extra))

    def require(self) -> Path:
        """For a reader that must not recompute: the result if fresh, else a StaleResult naming what
        changed and what re-makes it."""
        changed = self.changed_inputs()
        if not changed:
            return self.path
        fix = f"re-run {self.made_by}" if self.made_by else "re-run the stage that makes it"
        if changed == ["(missing)"]:
            raise StaleResult(f"{self.path} is missing (or has no stamp); {fix}.")
        raise StaleResult(f"{self.path} was made from other inputs than the current ones "
                          f"({', '.join(changed)} changed); {fix}.")


def stale(results: Iterable[Result]) -> list[Path]:
    """The results among ``results`` that a run would redo (what the invalidation tests compare)."""
    return [r.path for r in results if not r.fresh()]


__all__ = ["STAMP", "FILE_STAMP_SUFFIX", "MISSING", "Result", "array_id", "StaleResult", "code_id", "content_id",
           "listing_id", "stale"]
