"""Compare the tables of two runs of one profile, cell by cell: what "no number moves" means for a
refactor. Usage: .venv/bin/python scripts/compare_tables.py DATA_ROOT_A DATA_ROOT_B
(each a profile's data folder, e.g. data/smoke, holding tables/ and results/).

Every CSV under ``tables/`` and the stage tables under ``results/`` (not the per-model files) is
read with pandas and compared exactly; columns naming paths are left out (two checkouts keep their
data in different folders). Prints one line per table and exits 1 if any table both runs hold
differs (a table only one run holds is listed, e.g. one a newer stage adds).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

PATTERNS = ("tables/*.csv", "results/*/*.csv")


def _tables(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for pattern in PATTERNS for p in root.glob(pattern)
            if "timings" not in p.name}


def _comparable(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    return table.drop(columns=[c for c in table.columns if "path" in c.lower()])


def compare(a: Path, b: Path) -> list[str]:
    """One line per table: ``same``, ``DIFFERENT`` (with the first differing column) or ``only in``."""
    left, right = _tables(a), _tables(b)
    lines = []
    for name in sorted(set(left) | set(right)):
        if name not in left or name not in right:
            lines.append(f"only in {'A' if name in left else 'B'} {name}")
            continue
        x, y = _comparable(left[name]), _comparable(right[name])
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=True)
            lines.append(f"same      {name} ({len(x)} rows)")
        except AssertionError as err:
            lines.append(f"DIFFERENT {name}: {str(err).splitlines()[0][:120]}")
    return lines


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    lines = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(lines))
    compared = [line for line in lines if not line.startswith("only in")]
    return 0 if compared and all(line.startswith("same") for line in compared) else 1


if __name__ == "__main__":
    sys.exit(main())
