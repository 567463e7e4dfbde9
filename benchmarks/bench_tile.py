"""The 64-token attention tile in SPICE against the torch layer built from the same cell's surrogate.

Characterizes the default cell with its charge-to-pulse converters, fits the surrogate, then simulates full
64 x 64 tiles (the newest query of each case sees all 64 keys; no decay) and prints the error of the C2P
outputs phi and of the readout against `tile_reference` (the torch GainCellAttention functional core).
Inputs: the shared tile vectors' Q[63], K, V of the first --cases cases, and --random cases on the
quantized levels. Exits with status 1 when a case's SPICE results differ from the torch layer's by more
than the tolerances below. Not a test: it takes minutes.

    .venv/bin/python benchmarks/bench_tile.py [--cases 1] [--random 1] [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gaincell.circuits.characterize import characterize
from gaincell.circuits.tile import run_tile
from gaincell.design import load_design
from gaincell.fitting.fit import fit_characterization
from gaincell.surrogate.tile_reference import tile_reference

from agreement import require

# The targets for a tile without wire RC (tests/test_tile.py asserts the same on a 12 x 12 tile); measured
# phi RMS 0.014-0.015 and readout RMS 1.25-1.31 % of the output range on 64 x 64 tiles.
PHI_RMS_TOLERANCE = 0.02  # C2P outputs, in units of 1
READOUT_RMS_TOLERANCE = 0.02  # of the output range (2: readout in [-1, 1])

VECTORS = Path(__file__).resolve().parents[2] / "shared/reference/gaincellattention/gaincell_tile64_vectors.npz"


def main():
    with tempfile.TemporaryDirectory(prefix="gaincell-bench-tile-") as scratch:
        measure(Path(scratch))


def measure(work: Path):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1, help="cases of the shared tile vectors")
    parser.add_argument("--random", type=int, default=1, help="random cases on the quantized levels")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    design = load_design("cmos-generic")
    started = time.perf_counter()
    characterize(design, work / "char.h5", workers=args.workers, progress=False, c2p=True)
    surrogate, _ = fit_characterization(work / "char.h5")
    print(f"characterized + fitted in {time.perf_counter() - started:.1f} s; C2P q_sat "
          f"{surrogate['c2p'].param('q_sat_c'):.4g} C, readout full scale "
          f"{surrogate['c2p'].config['output_full_scale_c']:.4g} C")
    cases = []
    if args.cases:
        data = np.load(VECTORS)
        cases += [(f"tile vectors case {i}", data["Q"][i, -1], data["K"][i], data["V"][i]) for i in range(args.cases)]
    rng = np.random.default_rng(0)
    levels = np.asarray(design.dac_voltages)
    for i in range(args.random):
        cases.append((f"random case {i}", rng.integers(0, 16, 64) / 15, levels[rng.integers(0, 8, (64, 64))],
                      levels[rng.integers(0, 8, (64, 64))]))
    saturated = surrogate["c2p"].param("t_max_s")
    for name, query, keys, values in cases:
        started = time.perf_counter()
        result = run_tile(design, query, keys, values, work / "tile.h5", workers=args.workers, progress=False,
                          prefix=name.replace(" ", "_"))
        seconds = time.perf_counter() - started
        reference = tile_reference(surrogate, query, keys, values)
        phi = result.phi(saturated)
        errors = result.compare(reference, saturated)
        phi_rms, out_rms, out_max, counter_rms = (errors[key] for key in ("phi_rms", "output_rms", "output_max",
                                                                           "counter_rms"))
        print(f"{name}: {seconds:.0f} s; fired {np.count_nonzero(phi > 1e-3)}/64, |output| max "
              f"{np.abs(reference['output']).max():.3f}; phi RMS {phi_rms:.4f} (of 1); readout RMS "
              f"{100 * out_rms:.2f} %, worst {100 * out_max:.2f} % of the output range; 5-bit counter vs "
              f"unquantized torch RMS {100 * counter_rms:.2f} %")
        if result.message:
            print("  " + result.message)
        # NaN from a failed point fails these comparisons too
        require(f"{name}, SPICE vs torch phi", bool(phi_rms <= PHI_RMS_TOLERANCE),
                f"RMS {phi_rms:.4f}, allowed {PHI_RMS_TOLERANCE}")
        require(f"{name}, SPICE vs torch readout", bool(out_rms <= READOUT_RMS_TOLERANCE),
                f"RMS {100 * out_rms:.2f} % of the output range, allowed {100 * READOUT_RMS_TOLERANCE:.0f} %")


if __name__ == "__main__":
    main()
