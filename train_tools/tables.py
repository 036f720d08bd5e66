"""The one Markdown-table writer of the offline tools."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub Markdown table; `align` has one of 'l', 'r' per column (default: first left, others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError("every row and the alignment need one entry per header column")
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *[[str(cell) for cell in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
