"""ruff and mypy clean on every CI run (both are test extras; pyproject.toml holds their settings)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_clean(tool: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    with tempfile.TemporaryDirectory() as cache:  # nothing left in the tree
        argv = {"ruff": ["check", "--no-cache", "."], "mypy": ["--cache-dir", cache]}[tool]
        res = subprocess.run([sys.executable, "-m", tool, *argv], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
