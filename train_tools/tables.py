"""Markdown tables and result files: the one writer every bench and study prints and saves with."""
from __future__ import annotations

import json
import os

from comfyui_pas.files import write_text


def markdown_table(header, rows) -> str:
    """A GitHub Markdown table: the header cells, a rule, then one line per row (cells as given, str())."""
    lines = ["| " + " | ".join(str(cell) for cell in header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, data, indent: int = 1, **options) -> str:
    """Write JSON atomically (folders made): a reader never sees half a results file. options: json.dumps's."""
    return write_text(os.fspath(path), json.dumps(data, indent=indent, **options))
