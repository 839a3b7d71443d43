"""Markdown tables: how every report of the package (the reproduction report, the tool's
``report.md``, the committed ``tables/*.md``) writes a table. A core module so that the tool and
the report layer share it without the tool looking up at the report layer."""
from __future__ import annotations

import pandas as pd


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub markdown table (pandas' to_markdown needs the extra package tabulate)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
