"""The folder a command writes its results into (``--out``), and the owner's files around it.

``genlineage verify`` and ``genlineage shadows`` write into a folder the user names. That folder
may hold the user's own files, or one of the command's inputs may lie inside it (or it inside an
input): a key set given as ``--out`` would have its references replaced. So, before anything is
written:

- ``--out`` must be new, empty, or a folder an earlier run of the same command wrote (its
  :data:`MARKER` file says so; folders written before the marker existed are recognised by
  holding only what the command writes);
- it may neither lie inside nor contain any input (:func:`check_apart`).

Results are then built in a hidden folder beside ``--out`` (:func:`staged_output`) and moved into
place only when the run succeeds, entry by entry (an entry replaced is moved aside first, so a link
is removed as a link and what it pointed to is never touched). A refused or failed run removes its
folder and leaves ``--out`` as it found it: no empty folder, no half-written report.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from . import untrusted
from .errors import InputError

Inputs = Sequence[tuple[str, "str | Path | None"]]  # (what to call it in a message, its path or None)

MARKER = ".genlineage-output.json"
MARKER_MAX_BYTES = 4096
# What each command writes into --out: a folder holding nothing else was written by an earlier
# version of it (before the marker), and may be reused.
WRITES = {
    "verify": re.compile(r"report\.md|report\.html|verdict\.json|rd_histogram\.png|pairs|keys|cache|\..+\.part"),
    "shadows": re.compile(r"shadows\.json|data|cache|work|(?:innocent|infringing)_\d+(?:_rho[0-9.e+-]+)?|\..+\.part"),
}


def check_output_folder(out: str | Path, command: str, inputs: Inputs) -> None:
    """Refuse ``out`` unless ``command`` may write there: new, empty or its own earlier output, and
    apart from every input (``inputs``: (what to call it in a message, its path; None: not given))."""
    out = Path(out)
    check_apart(out, inputs)  # first: "it holds your key set" says more than "it holds files"
    fix = f"name a new folder for --out (or one an earlier genlineage {command} wrote)"
    if os.path.lexists(out) and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; {fix}.")
    if out.is_dir() and os.listdir(out) and not written_by(out, command):
        shown = ", ".join(sorted(os.listdir(out))[:3])
        raise InputError(f"--out {out} holds files genlineage {command} did not write ({shown}, ...), and a run would "
                         f"replace some of them; {fix}.")
    for parent in out.absolute().parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise InputError(f"--out {out}: {parent} is a file, so no folder can be made inside it; {fix}.")
            break


def written_by(folder: Path, command: str) -> bool:
    """Whether ``folder`` is ``command``'s earlier output: its marker says so, or (written before
    the marker) it holds only what ``command`` writes."""
    marker = folder / MARKER
    if os.path.lexists(marker):
        try:
            blob = untrusted.read_bounded(marker, MARKER_MAX_BYTES, "delete it")
            return untrusted.parse_json(blob, marker, "delete it").get("written_by") == f"genlineage {command}"
        except (InputError, AttributeError):
            return False
    return all(WRITES[command].fullmatch(name) for name in os.listdir(folder))


def check_apart(out: str | Path, inputs: Inputs) -> None:
    """Refuse ``out`` when it is, lies inside or holds any of ``inputs`` (by real path, so a link
    to an input is the input): genlineage never writes into its inputs, nor puts one inside its output."""
    where = Path(os.path.realpath(out))
    for label, path in inputs:
        if path is None:
            continue
        real = Path(os.path.realpath(path))
        if where == real or real in where.parents or where in real.parents:
            raise InputError(f"--out {out} and the {label} {path} overlap (one lies inside the other); genlineage never "
                             "writes into its inputs, nor puts an input inside its output. Pass an --out that neither "
                             "holds nor lies in any input.")


@contextlib.contextmanager
def staged_output(out: str | Path, command: str) -> Iterator[Path]:
    """A fresh hidden folder beside ``out`` to build the results in (with the marker); on success
    its entries replace ``out``'s of the same name (``out`` is made if new), on any failure it is
    removed and ``out`` stays as it was. Call :func:`check_output_folder` first."""
    out = Path(out)
    with _parents_made(out):
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.absolute().parent))
        try:
            _mark(stage, command)
            yield stage
            publish(stage, out)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def created_output(out: str | Path, command: str) -> Iterator[Path]:
    """``out`` to build the results in place: for a command whose results are resumable builds
    (``genlineage shadows``: hours of training that a re-run must not repeat), staging would lose
    them. A new ``out`` is made (with the marker) and removed again if the run fails with an error;
    an interrupted one (Ctrl-C) keeps it, so that a re-run resumes. An earlier run's ``out`` is
    reused as it is. Call :func:`check_output_folder` first."""
    out = Path(out)
    if out.is_dir():
        yield out
        _mark(out, command)
        return
    with _parents_made(out):
        out.mkdir()
        try:
            _mark(out, command)
            yield out
        except Exception:
            shutil.rmtree(out, ignore_errors=True)
            raise


def _mark(folder: Path, command: str) -> None:
    (folder / MARKER).write_text(json.dumps({"written_by": f"genlineage {command}"}) + "\n")


@contextlib.contextmanager
def _parents_made(out: Path) -> Iterator[None]:
    """``out``'s missing parent folders, made for the run and removed again (if still empty) when
    it fails, so that a refused run leaves no folder behind."""
    missing = [p for p in (out.absolute().parent, *out.absolute().parents) if not os.path.lexists(p)]
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def publish(stage: Path, out: Path) -> None:
    """Move ``stage``'s entries into ``out``: ``stage`` itself when ``out`` is new, else entry by
    entry, each replacing the entry of its name (moved aside, then removed as what it is)."""
    if not os.path.lexists(out):
        os.replace(stage, out)
        return
    for name in sorted(os.listdir(stage)):
        target = out / name
        if os.path.lexists(target):
            aside = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=out)) / name
            os.replace(target, aside)  # renames a link itself, never what it points to
            os.replace(stage / name, target)
            _remove(aside.parent)
        else:
            os.replace(stage / name, target)


def _remove(path: Path) -> None:
    """Remove a file, a link (never what it points to) or a folder (links inside removed as links)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)
