"""Running a browser driver script (Node.js, playwright-core, Debian's Chromium) for the browser tests."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DRIVER_TIMEOUT = 420


def run_driver(node: str, script: str, config: dict, config_path: Path, server, what: str = "browser") -> dict:
    """Write `config` to config_path, run HERE/script on it and return the JSON report it writes to
    config["report"]; the test fails with the driver's stderr and the server's log when there is none."""
    config_path.write_text(json.dumps(config))
    result = subprocess.run([node, str(HERE / script), str(config_path)], cwd=HERE, capture_output=True, text=True,
                            timeout=DRIVER_TIMEOUT)
    report_path = Path(config["report"])
    if result.returncode != 0 or not report_path.is_file():
        pytest.fail(f"the {what} driver failed (exit {result.returncode}):\n{result.stderr[-4000:]}\n"
                    f"server log:\n{server.log_tail(30)}", pytrace=False)
    return json.loads(report_path.read_text())
