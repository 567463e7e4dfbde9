"""The benchmarks' equality check (benchmarks/agreement.py) and the packed-sweep benchmark's naive baseline."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from agreement import Disagreement, relative_difference, require, require_close  # noqa: E402


def test_relative_difference_is_taken_over_the_larger_side():
    reference = np.array([-2.0, 1.0, 4.0])
    assert relative_difference(reference, reference) == 0.0
    assert relative_difference(reference + [0.04, 0, 0], reference) == pytest.approx(0.01)
    assert relative_difference(reference + [0, 0, 0.04], reference) == pytest.approx(0.04 / 4.04)
    # a side broken to all zeros reads as 1.0 of full scale, whichever side it is
    assert relative_difference(np.zeros(3), reference) == pytest.approx(1.0)
    assert relative_difference(reference, np.zeros(3)) == pytest.approx(1.0)
    assert relative_difference(np.zeros(3), np.zeros(3)) == 0.0


@pytest.mark.parametrize("candidate", [[1.0, np.nan, 3.0], [1.0, np.inf, 3.0], [1.0, 2.0]])
def test_missing_or_non_finite_values_never_agree(candidate):
    assert relative_difference(candidate, [1.0, 2.0, 3.0]) == float("inf")
    with pytest.raises(Disagreement):
        require_close("charges", candidate, [1.0, 2.0, 3.0], 1.0)


def test_require_close_passes_within_and_fails_beyond_the_tolerance():
    reference = np.linspace(-1, 1, 11)
    assert require_close("charges", reference + 5e-4, reference, 1e-3) == pytest.approx(5e-4 / 1.0005)
    with pytest.raises(Disagreement, match=r"charges: max \|difference\| = 2\.00e-03 of full scale, allowed 1e-03"):
        require_close("charges", reference + 2e-3, reference, 1e-3)
    require("outputs", True, "never shown")
    with pytest.raises(Disagreement, match="outputs: 3 elements differ"):
        require("outputs", False, "3 elements differ")


def test_a_disagreement_ends_the_script_with_status_1_and_no_traceback():
    script = "from agreement import require_close; require_close('charge per read', [0.0, 1.0], [-1.0, 1.0], 1e-3)"
    done = subprocess.run([sys.executable, "-c", script], cwd=BENCHMARKS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "benchmark FAILED, the two sides disagree: charge per read" in done.stderr
    assert "Traceback" not in done.stderr


def test_naive_baseline_reads_the_signed_cell_both_ways():
    """The naive PySpice loop of bench_packed_sweep.py builds the cell with its supply: a stored value below
    the zero crossing gives a negative charge (a floating VDD gave ~0 there). Own process: libngspice is global."""
    script = """
from bench_packed_sweep import naive
from gaincell.circuits.cells import CellRead
from gaincell.design import load_design
design = load_design("cmos-generic")
points = [{"stored_v": v, "pulse_s": 10e-9, "vin_v": design.v_in_v} for v in (0.1, 0.8)]
print(*naive(design, CellRead(design), points))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=BENCHMARKS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    low, high = (float(x) for x in done.stdout.split())
    # the packed sweep gives -70.0 fC and +69.8 fC for these two points
    assert low == pytest.approx(-70.0e-15, rel=0.01) and high == pytest.approx(69.8e-15, rel=0.01)
