"""Validate pyproject.toml with comfy-cli's own Registry parser (what `comfy node publish` reads).

Runs in the separate comfy-cli venv that `make registry-check` creates (.cache/comfycli-venv). It fails
(exit 1) when comfy-cli's `extract_node_configuration` cannot parse the file or prints a warning (it
warns and blanks a field instead of raising: an invalid requires-comfyui, license or classifier), when a
field the Registry needs for publishing is empty, or when the Icon is neither a URL nor a committed image
within the spec's limits. Usage: python scripts/registry_check.py [path/to/pyproject.toml]
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys

ICON_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif")
ICON_MAX = (800, 400)  # width x height, from the Registry's pyproject spec
NAME_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*$")


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) of a PNG or GIF from its header; None for other types."""
    with open(path, "rb") as handle:
        head = handle.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", head[6:10])
    return None


def check_icon(icon: str, root: str) -> tuple[list[str], list[str]]:
    """(problems, notes) for the Icon field."""
    if not icon:
        return ["[tool.comfy] Icon is empty"], []
    if re.match(r"^https?://", icon):
        return [], [f"Icon is a URL ({icon}); not fetched (offline check)"]
    path = os.path.normpath(os.path.join(root, icon))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        return [f"Icon {icon!r} is neither an http(s) URL nor a file in the repository"], []
    if not path.lower().endswith(ICON_TYPES):
        return [f"Icon {icon!r} must be one of {', '.join(ICON_TYPES)}"], []
    size = image_size(path)
    if size is not None and (size[0] > ICON_MAX[0] or size[1] > ICON_MAX[1]):
        return [f"Icon {icon!r} is {size[0]} x {size[1]} px; at most {ICON_MAX[0]} x {ICON_MAX[1]} allowed"], []
    shape = f"{size[0]} x {size[1]} px" if size else "size not read"
    return [], [f"Icon is the committed file {icon} ({shape}); the Registry shows icons by URL, so publish "
                "it as that file's raw URL in the public repository"]


def main(argv: list[str]) -> int:
    from comfy_cli.registry.config_parser import extract_node_configuration

    path = os.path.abspath(argv[1] if len(argv) > 1 else "pyproject.toml")
    root = os.path.dirname(path)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        config = extract_node_configuration(path)
    said = captured.getvalue().strip()
    if said:
        print(f"comfy-cli said:\n{said}")
    problems: list[str] = []
    notes: list[str] = []
    if config is None:
        problems.append(f"comfy-cli could not read {path}")
    else:
        if re.search(r"\b(warning|error)\b", said, re.IGNORECASE):
            problems.append("comfy-cli's parser printed a warning or error (a field it then left empty)")
        project, comfy = config.project, config.tool_comfy
        required = {"[project] name": project.name, "[project] version": project.version,
                    "[project] description": project.description,
                    "[tool.comfy] PublisherId": comfy.publisher_id, "[tool.comfy] DisplayName": comfy.display_name,
                    "[tool.comfy] requires-comfyui": project.supported_comfyui_version}
        problems += [f"{field} is empty or invalid" for field, value in required.items() if not value]
        if project.name and (len(project.name) >= 100 or not NAME_RULE.match(project.name)):
            problems.append(f"[project] name {project.name!r} breaks the Registry's node-id rule")
        if "comfyui" in project.name.lower():
            problems.append("[project] name must not contain 'ComfyUI' (Registry spec)")
        if project.license.file:
            if not os.path.isfile(os.path.join(root, project.license.file)):
                problems.append(f"license file {project.license.file!r} does not exist")
        elif not project.license.text:
            problems.append("[project] license is missing")
        icon_problems, icon_notes = check_icon(comfy.icon, root)
        problems += icon_problems
        notes += icon_notes
        if not project.urls.repository:
            notes.append("[project.urls] Repository is not set: add the public repository URL before publishing")
        print(f"parsed: name={project.name} version={project.version} publisher={comfy.publisher_id} "
              f"requires-comfyui={project.supported_comfyui_version!r} license={project.license.file or 'text'} "
              f"icon={comfy.icon!r} dependencies={len(project.dependencies)}")
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("registry-check: " + ("FAILED" if problems else "comfy-cli's parser accepts pyproject.toml"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
