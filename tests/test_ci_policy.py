"""In CI a test that skips fails (tests/conftest.py), except a `gpu` one: a CI without ../shared or a wheel does
not pass untested."""
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_a_skip_fails_in_ci_but_not_a_gpu_one_nor_outside_ci(tmp_path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "def test_missing():\n    pytest.skip('reference data absent')\n"
        "@pytest.mark.gpu\ndef test_cuda():\n    pytest.skip('needs a CUDA device')\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", "--rootdir",
               str(tmp_path), str(tmp_path / "test_skips.py")]
    environment = {**os.environ, "PYTHONPATH": str(TESTS)}
    ci = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**environment, "CI": "true"})
    assert ci.returncode == 1 and "1 failed" in ci.stdout and "1 skipped" in ci.stdout
    assert "skipped in CI, where nothing may be missing: Skipped: reference data absent" in ci.stdout
    local = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                           env={k: v for k, v in environment.items() if k != "CI"})
    assert local.returncode == 0 and "2 skipped" in local.stdout
