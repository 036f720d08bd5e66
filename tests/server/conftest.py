"""A real ComfyUI server for HTTP tests (tests/comfy_harness.py), with the PAS pack (the repository root)
and the test-only tiny-model pack linked into custom_nodes/."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comfy_harness import PACK_NAME, REPO, require_host, running_server  # noqa: E402

TEST_PACK = REPO / "tests" / "host" / "pas_test_pack"
require_host()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_server_base")
    with running_server(base, {PACK_NAME: REPO, TEST_PACK.name: TEST_PACK}) as server:
        yield server
    shutil.rmtree(base / "temp", ignore_errors=True)
