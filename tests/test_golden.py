"""Fresh SPICE runs against the frozen golden results: catches unintended changes to netlists or models."""
from pathlib import Path

import numpy as np
import pytest

from gaincell.circuits import run_sweep
from gaincell.store import list_sweeps, read_sweep
from gaincell.sweep_data import OK
from golden_sweeps import GOLDEN_FILE, TOLERANCES, golden_sweeps

GOLDEN = Path(__file__).parent / "golden" / GOLDEN_FILE


def test_golden_file_holds_every_sweep():
    assert set(list_sweeps(GOLDEN)) == {s.name for s in golden_sweeps()}


@pytest.mark.parametrize("sweep", golden_sweeps(), ids=lambda s: s.name)
def test_fresh_simulation_matches_golden(sweep, tmp_path):
    fresh = run_sweep(sweep, tmp_path / "fresh.h5", workers=2, progress=False).data
    golden = read_sweep(GOLDEN, sweep.name)
    assert np.all(fresh.status == OK)
    assert golden.attrs["spec_sha256"] == fresh.attrs["spec_sha256"], "the sweep definition itself changed"
    assert set(golden.scalars) == set(fresh.scalars)
    for name, expected in golden.scalars.items():
        rtol, atol = TOLERANCES.get(name, (1e-6, 0))
        np.testing.assert_allclose(fresh.scalars[name], expected, rtol=rtol, atol=atol, err_msg=name)
