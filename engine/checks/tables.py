"""The checks' shared vocabulary: one row type for a measured figure against its limit (compare, verify), and
one markdown table writer (compare, verify, sanity, the tables the commands print and save)."""
from __future__ import annotations


def figure_row(figure: str, value, limit, ok: bool | None = None) -> dict:
    """{figure, value, limit, ok}: `ok` is value <= limit unless given (a bool figure, a figure with no limit)."""
    return {"figure": figure, "value": value, "limit": limit, "ok": bool(value <= limit) if ok is None else bool(ok)}


def cell(value, digits: int = 4) -> str:
    """A table cell: numbers to `digits` significant digits, None as '-', everything else as written."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}"


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def figures_table(rows: list[dict], digits: int = 4) -> str:
    """The figure | value | limit | ok table of figure_row rows."""
    return markdown_table(["figure", "value", "limit", "ok"],
                          [[r["figure"], cell(r["value"], digits), cell(r["limit"], digits), verdict(r["ok"])]
                           for r in rows])
