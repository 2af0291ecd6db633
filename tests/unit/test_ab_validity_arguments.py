"""`scripts/ab_validity.py` refuses a control share outside [0, 1] before it runs a seed or writes its file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ab_validity.py"


@pytest.mark.parametrize("share", ["2", "-0.1", "half"])
def test_a_bad_control_share_is_a_usage_error_and_writes_nothing(tmp_path: Path, share: str) -> None:
    out = tmp_path / "ab.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--uniform-logs", "--control-share", share, "--seeds", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "--control-share" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
