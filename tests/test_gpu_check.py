"""scripts/gpu_check.sh runs end to end at --dry-run sizes on the CPU and writes its two files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.slow  # ~40 s on 2 cores: the whole script, dry-run sized
def test_gpu_check_dry_run_writes_the_json_and_the_markdown_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    data = json.loads((tmp_path / "benchmark-gpu.json").read_text())
    (record,) = data["models"]
    assert record["model"] == "mlp" and record["pairs"]
    page = (tmp_path / "benchmark-gpu.md").read_text()
    assert page.startswith("# ") and "Measured 20" in page and data["machine"]["jax_device_kind"] in page
    assert "| mlp (8, 28x28) |" in page
    assert "Parity, quick part" in page and " passed" in page
    assert "Training:" in page and "test accuracy:" in page
