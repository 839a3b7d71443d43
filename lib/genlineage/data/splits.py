"""Disjoint roles for every domain, and the bases' pre-training corpus.

The method is only meaningful if the roles never share an image: a suspicious model trained on
the source's own training images would rightly look like the source, and a shadow model that
shares data with an evaluated model leaks the answer into the threshold. So roles are cut from
*disjoint index ranges by construction* (generated domains) or from a seeded permutation of the
available ids (real data), and :func:`check_disjoint` verifies it again on whatever
``splits.json`` is read back.

An id names one image: ``"<generator>:<index>"`` for generated data (the image is
``generator(index, size, seed)``), ``"<domain>:<key>"`` for real data (``key`` is the id the
converter gave the image in the domain's pool folder).
"""
from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import Duplication, as_profile
from ..errors import InputError

ROLES = ("source", "heldout", "suspicious_pool", "shadow_pool")
GENERATED_KINDS = {"generated_faces": "faces", "generated_scenes": "scenes"}
REAL_KINDS = ("celeba_dialog", "cc3m")
MIX_GENERATORS = ("faces", "scenes")
# Pre-training indices start here, so no domain role (which counts up from 0) can reach them.
PRETRAIN_OFFSET = 10_000_000
SPLITS_VERSION = 1


def _rng(seed: int, *tags: str | int) -> np.random.Generator:
    words = [int(seed)] + [zlib.crc32(t.encode()) if isinstance(t, str) else int(t) for t in tags]
    return np.random.default_rng(np.random.SeedSequence(words))


def parse_id(item_id: str) -> tuple[str, str]:
    """``"faces:17"`` -> ``("faces", "17")``."""
    prefix, sep, key = str(item_id).partition(":")
    if not sep:
        raise InputError(f"id {item_id!r} is not of the form '<generator or domain>:<key>'; regenerate splits.json.")
    return prefix, key


def _duplication(name: str, dup: Duplication, source_ids: list[str], seed: int) -> dict[str, Any]:
    rate, copies = dup.rate, dup.copies
    if not 0.0 <= rate <= 1.0 or copies < 1:
        raise InputError(
            f"data.domains.{name}.duplication = {dup.as_dict()} is invalid; use rate in [0, 1] and copies >= 1."
        )
    n_dup = int(round(rate * len(source_ids))) if copies > 1 else 0
    chosen = _rng(seed, name, "duplication").choice(len(source_ids), size=n_dup, replace=False) if n_dup else []
    return {"rate": rate, "copies": copies, "ids": [source_ids[i] for i in sorted(int(c) for c in chosen)]}


def make_splits(profile: Mapping, available: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Allocate every domain's roles and the pre-training corpus; deterministic in the profile seed.

    ``available`` gives, for each real-data domain (``kind: celeba_dialog`` or ``cc3m``), the
    ids of its converted pool; generated domains need nothing. The result is JSON-serialisable
    (it is written as ``splits.json``):

    ``domains[name].roles[role]``: unique ids, in folder order; ``domains[name].duplication``:
    which source ids the source folder repeats (``copies`` times in all); ``pretrain.ids``: the
    corpus in folder order; ``pretrain.subsets[base]``: the ``[start, end)`` rows a base sees.
    """
    profile = as_profile(profile)
    data = profile.data
    seed = profile.run.seed
    available = available or {}
    next_index: dict[str, int] = defaultdict(int)  # each generator's next free image number
    domains: dict[str, Any] = {}
    for name in sorted(data.domains):
        cfg = data.domains[name]
        counts = _role_counts(name, cfg)
        if cfg.kind in GENERATED_KINDS:
            generator = GENERATED_KINDS[cfg.kind]
            roles = _generated_roles(name, generator, counts, next_index)
        elif cfg.kind in REAL_KINDS:
            generator = None
            roles = _real_roles(name, cfg.kind, counts, available, seed)
        else:
            raise InputError(
                f"data.domains.{name}.kind = {cfg.kind!r} is unknown; use one of "
                f"{sorted(GENERATED_KINDS) + list(REAL_KINDS)}."
            )
        domains[name] = {
            "kind": cfg.kind,
            "generator": generator,
            "roles": roles,
            "duplication": _duplication(name, cfg.duplication, roles["source"], seed),
        }
    return {
        "version": SPLITS_VERSION,
        "profile": profile.name,
        "seed": seed,
        "image_size": data.image_size,
        "roles": list(ROLES),
        "domains": domains,
        "pretrain": _pretrain_split(profile, seed),
    }


def _role_counts(name: str, cfg: Any) -> dict[str, int]:
    """How many images each role of domain ``name`` takes, refused when one is negative."""
    counts = {}
    for role in ROLES:
        value = getattr(cfg, role)
        if value < 0:
            raise InputError(f"data.domains.{name}.{role} = {value!r}; it must be a count (an integer >= 0).")
        counts[role] = value
    return counts


def _generated_roles(name: str, generator: str, counts: dict[str, int], next_index: dict[str, int]) -> dict[str, list[str]]:
    """A generated domain's roles: consecutive image numbers of its generator, after those earlier
    domains of the same generator took (``next_index`` is advanced), below the pre-training range."""
    roles = {}
    start = next_index[generator]
    for role in ROLES:
        roles[role] = [f"{generator}:{i}" for i in range(start, start + counts[role])]
        start += counts[role]
    if start > PRETRAIN_OFFSET:
        raise InputError(f"data.domains.{name} asks for {start} {generator} images; at most {PRETRAIN_OFFSET} fit "
                         "below the pre-training range.")
    next_index[generator] = start
    return roles


def _real_roles(name: str, kind: str, counts: dict[str, int], available: Mapping[str, Sequence[str]],
                seed: int) -> dict[str, list[str]]:
    """A real-data domain's roles: its converted pool shuffled by the seed and cut into the counts."""
    if name not in available:
        raise InputError(
            f"data.domains.{name} is real data (kind {kind}); its pool must be converted first: "
            f"run genlineage.data.build_datasets(profile), which converts data.domains.{name}.root."
        )
    pool = [str(k) for k in available[name]]
    if len(set(pool)) != len(pool):
        raise InputError(f"the converted pool of data.domains.{name} has repeated ids; re-run its converter.")
    need = sum(counts.values())
    if len(pool) < need:
        raise InputError(
            f"data.domains.{name} needs {need} images ({counts}) but its pool has {len(pool)}; "
            f"lower the counts in the profile or provide more data under data.domains.{name}.root."
        )
    order = _rng(seed, name, "roles").permutation(len(pool))
    roles, start = {}, 0
    for role in ROLES:
        roles[role] = [f"{name}:{pool[int(i)]}" for i in order[start:start + counts[role]]]
        start += counts[role]
    return roles


def _pretrain_split(profile: Any, seed: int) -> dict[str, Any]:
    """The pre-training corpus: ``data.pretrain.n`` images mixed from the generators in the stated
    shares (largest remainders), shuffled, and the ``[start, end)`` rows each base sees."""
    data = profile.data
    n = data.pretrain.n
    if n <= 0:
        return {"n": 0, "mix": {}, "ids": [], "subsets": {}}
    mix = dict(data.pretrain.mix)
    bad = [k for k in mix if k not in MIX_GENERATORS]
    total = float(sum(mix.values()))
    if bad or total <= 0 or any(v < 0 for v in mix.values()):
        raise InputError(f"data.pretrain.mix = {mix} is invalid; give non-negative shares for {list(MIX_GENERATORS)}.")
    names = sorted(mix)
    exact = [n * mix[k] / total for k in names]
    counts_mix = [int(np.floor(e)) for e in exact]
    for i in sorted(range(len(names)), key=lambda i: exact[i] - counts_mix[i], reverse=True)[: n - sum(counts_mix)]:
        counts_mix[i] += 1
    ids: list[str] = []
    for generator, count in zip(names, counts_mix):
        ids += [f"{generator}:{PRETRAIN_OFFSET + i}" for i in range(count)]
    order = _rng(seed, "pretrain").permutation(n)
    ids = [ids[int(i)] for i in order]
    subsets = {}
    bases = profile.models.bases
    for base in sorted(bases):
        frac = bases[base].pretrain_subset
        if frac is None:
            continue
        if len(frac) != 2 or not 0.0 <= frac[0] < frac[1] <= 1.0:
            raise InputError(f"models.bases.{base}.pretrain_subset = {frac}; use [start, end] with 0 <= start < end <= 1.")
        a, b = frac
        subsets[base] = {"fraction": [a, b], "start": int(round(a * n)), "end": int(round(b * n))}
    return {"n": n, "mix": dict(zip(names, counts_mix)), "ids": ids, "subsets": subsets}


def role_entries(splits: Mapping, domain: str, role: str | None = None) -> list[str]:
    """The ids of one folder's rows in order: duplicated source ids appear ``copies`` times.

    ``domain="pretrain"`` gives the pre-training corpus (``role`` is then ignored).
    """
    if domain == "pretrain":
        return list(splits["pretrain"]["ids"])
    try:
        dom = splits["domains"][domain]
        ids = list(dom["roles"][role])
    except KeyError:
        raise InputError(
            f"splits have no folder {domain}_{role}; domains are {sorted(splits['domains'])}, roles {list(ROLES)}."
        ) from None
    if role != "source":
        return ids
    dup = dom.get("duplication") or {}
    repeated = set(dup.get("ids") or [])
    copies = int(dup.get("copies", 1))
    out: list[str] = []
    for item in ids:
        out += [item] * (copies if item in repeated else 1)
    return out


def pretrain_subset(splits: Mapping, base: str) -> tuple[int, int]:
    """The ``[start, end)`` rows of the pre-training folder that ``base`` is pre-trained on."""
    subsets = splits["pretrain"].get("subsets") or {}
    if base not in subsets:
        raise InputError(f"no pre-training subset for base {base!r}; set models.bases.{base}.pretrain_subset in the profile.")
    return int(subsets[base]["start"]), int(subsets[base]["end"])


def check_disjoint(splits: Mapping) -> None:
    """Raise :class:`InputError` if any id appears in two roles (or twice in one role).

    Run on every splits dict, including one read back from a hand-edited ``splits.json``.
    """
    seen: dict[str, str] = {}

    def claim(ids: Sequence[str], where: str) -> None:
        for item in ids:
            if item in seen:
                raise InputError(
                    f"id {item!r} is in both {seen[item]} and {where}; roles must be disjoint. "
                    f"Delete splits.json and rebuild it with make_splits (do not edit it by hand)."
                )
            seen[item] = where

    for name, dom in (splits.get("domains") or {}).items():
        for role, ids in dom["roles"].items():
            claim(ids, f"{name}/{role}")
        extra = set((dom.get("duplication") or {}).get("ids") or []) - set(dom["roles"].get("source", []))
        if extra:
            raise InputError(f"{name}: duplicated ids {sorted(extra)[:5]} are not source ids; rebuild splits.json.")
    claim((splits.get("pretrain") or {}).get("ids") or [], "pretrain")
