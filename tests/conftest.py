import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # lets worker processes import test helpers


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the project (reference data); tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent (it is beside the project in CI)")
    return SHARED
