"""Markdown tables and result files: the one writer every bench and study prints and saves with."""
from __future__ import annotations

import json
import os
import shlex
import sys

from comfyui_pas.files import write_text


def markdown_table(header, rows, align: str | None = None) -> str:
    """A GitHub Markdown table: the header cells, a rule, then one line per row (cells as given, str()).

    `align`, one of 'l' / 'r' per column, right-aligns the 'r' columns; without it no column is aligned."""
    if any(len(row) != len(header) for row in rows) or (align is not None and len(align) != len(header)):
        raise ValueError("every row and the alignment need one entry per header column")
    rule = "|---" * len(header) + "|" if align is None else "|" + "|".join(
        "---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(str(cell) for cell in header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line(module: str, argv: list[str] | None) -> str:
    """How a run was started, for its results: `python -m module` and its arguments (sys.argv's if None)."""
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def write_json(path, data, indent: int = 1, **options) -> str:
    """Write JSON atomically (folders made): a reader never sees half a results file. options: json.dumps's."""
    return write_text(os.fspath(path), json.dumps(data, indent=indent, **options))


def write_results(out, name: str, data: dict, text: str) -> None:
    """A study's <name>.json and <name>.md in the folder `out` (made if needed), and the Markdown printed."""
    write_json(os.path.join(out, f"{name}.json"), data, default=str)
    write_text(os.path.join(out, f"{name}.md"), text + "\n")
    print(text)
