"""Plain-text tables of results, for terminals and for the results folder."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[dict[str, object]], columns: Sequence[str], percent: Sequence[str] = ()) -> str:
    """A fixed-width table; columns named in ``percent`` print as points (x100, two decimals)."""

    def cell(row: dict[str, object], col: str) -> str:
        value = row.get(col, "")
        if isinstance(value, float):
            return f"{100 * value:.2f}" if col in percent else f"{value:.2f}"
        return str(value)

    cells = [[cell(row, col) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    numeric = [all(isinstance(row.get(col), (int, float)) for row in rows) for col in columns]
    lines += ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)) for r in cells]
    return "\n".join(lines)
