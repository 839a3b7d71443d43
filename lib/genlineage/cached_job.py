"""A cached unit of work declared as one object: its fields are its inputs, ``out`` is what it
makes, and its cache key is derived from the fields.

Why: a key written apart from the work it guards forgets an input sooner or later (a retrained
base whose fine-tunes are never redone, a table read after its key sets changed). Here the object
that says what a job is made from *is* the key: add a field and the key follows; a field that is
not an input has to say so.

Each field of a :class:`CachedJob` (a frozen dataclass) is one of:

- **a setting, by value** (the default): a number, a string, a config section (by its ``key()``,
  what changes the result, else its ``as_dict()``), or a list or mapping of them;
- **content** (:func:`content`): a file or folder named by the hash of its bytes (``encode``
  defaults to :func:`~genlineage.cache.content_id`; a pipeline folder passes the models layer's
  ``fingerprint``); a mapping or sequence of paths is encoded path by path;
- **code** (:func:`code_of`): the names of the modules that compute the result, by the hash of
  their source (:func:`~genlineage.cache.code_id`), so an edit to them redoes it and no version
  is bumped by hand;
- **data in memory** (:func:`in_memory`): a tuple of arrays and lists a job assembles itself (a
  source's candidate pairs), by :func:`~genlineage.cache.array_id` of their bytes;
- **a long list, by its hash** (:func:`hashed`): the ids of the rows a job reads, whose
  listing in every stamp would cost more than it tells;
- **not an input** (:func:`not_an_input`): where the output goes (``out``, see :func:`output`),
  where caches live, the device, the dtype, how far a folder is trusted.

A path declared by value is refused: a path says where content lies, not what it is, and would make
a moved data folder stale and a rewritten one fresh. An input whose value is None is left out of the
key (a stamp that records it as null reads the same), so an optional input costs nothing where it
does not apply.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from .cache import Result, array_id, code_id, content_id
from .io import stable_hash

ROLE = "genlineage.cached_job"  # the field metadata key: OUTPUT, NOT_AN_INPUT, or how to encode the value
OUTPUT, NOT_AN_INPUT = "output", "not an input"
Encode = Callable[[Path], Any]


def output() -> Any:
    """The field that names where the job's result lives (``out``): never an input."""
    return dataclasses.field(metadata={ROLE: OUTPUT})


def not_an_input(**kwargs: Any) -> Any:
    """A field the result does not depend on (a cache folder, a device, a trust level)."""
    return dataclasses.field(metadata={ROLE: NOT_AN_INPUT}, **kwargs)


def content(encode: Encode = content_id, **kwargs: Any) -> Any:
    """A field holding a file or folder (or a mapping or sequence of them), an input by content."""
    return dataclasses.field(metadata={ROLE: lambda value, name: by_content(value, encode)}, **kwargs)


def code_of(**kwargs: Any) -> Any:
    """A field holding module names (a tuple), an input by the content of their source."""
    return dataclasses.field(metadata={ROLE: lambda value, name: code_id(*value)}, **kwargs)


def in_memory(**kwargs: Any) -> Any:
    """A field holding a tuple of in-memory values (arrays, lists), an input by their bytes."""
    return dataclasses.field(metadata={ROLE: lambda value, name: array_id(*value)}, compare=False, **kwargs)


def hashed(length: int = 16, **kwargs: Any) -> Any:
    """A field holding a long JSON-able list (row ids), an input by its ``stable_hash``."""
    return dataclasses.field(metadata={ROLE: lambda value, name: stable_hash(by_value(value, name), length)}, **kwargs)


def by_value(value: Any, name: str) -> Any:
    """A setting as a key records it; a path is refused (declare it with :func:`content`)."""
    if isinstance(value, Path):
        raise TypeError(f"input {name!r} is a path declared by value; declare it with content() so the key "
                        "names its bytes, not where it lies")
    if callable(getattr(value, "key", None)):
        return value.key()
    if callable(getattr(value, "as_dict", None)):
        return value.as_dict()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): by_value(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [by_value(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return value


def by_content(value: Any, encode: Encode) -> Any:
    """A path (or str) by ``encode``; a mapping or sequence of them, element by element (None kept)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): by_content(v, encode) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [by_content(v, encode) for v in value]
    return encode(Path(value))


@dataclasses.dataclass(frozen=True)
class CachedJob:
    """Base of every declared job: subclasses are frozen dataclasses with an ``out`` field
    (:func:`output`) and their inputs as the other fields."""

    folder: ClassVar[bool] = False  # a folder result (stamp inside) or a file (stamp beside)
    made_by: ClassVar[str] = ""     # what re-makes it, named when a reader finds it stale

    def inputs(self) -> dict[str, Any]:
        """The key: every input field's value, encoded by its declaration; None-valued ones left out."""
        key = {}
        for f in dataclasses.fields(self):
            role, value = f.metadata.get(ROLE, by_value), getattr(self, f.name)
            if role in (OUTPUT, NOT_AN_INPUT) or value is None:
                continue
            key[f.name] = role(value, f.name)
        return key

    def result(self) -> Result:
        """The cached result: at ``out``, keyed on exactly :meth:`inputs`."""
        outs = [f.name for f in dataclasses.fields(self) if f.metadata.get(ROLE) == OUTPUT]
        if len(outs) != 1:
            raise TypeError(f"{type(self).__name__} declares {len(outs)} output fields; declare exactly one with output()")
        return Result(Path(getattr(self, outs[0])), self.inputs(), folder=self.folder, made_by=self.made_by)


__all__ = ["CachedJob", "by_content", "by_value", "code_of", "content", "hashed", "in_memory", "not_an_input", "output"]
