"""Monte Carlo mismatch of a cell design and the fitted variation component that stands for it.

Characterizes the nominal cell (`characterize`), simulates N mismatched cells (`run_monte_carlo`: sweeps
mc_read, mc_retention, read_noise), fits the surrogate (`fit_characterization`, which attaches the variation),
then samples cells from the fitted variation and compares them with the simulated ones: sigma of the read
current at three stored levels and of the retention time, and two-sample Kolmogorov-Smirnov tests.

    nice .venv/bin/python benchmarks/monte_carlo.py --design cmos-generic --cells 200 --workers 2
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from pathlib import Path

import numpy as np

from gaincell.app.commands.options import design_inputs
from gaincell.arguments import positive_int
from gaincell.circuits.characterize import characterize
from gaincell.circuits.mismatch import MAX_CELLS, mismatch_for, run_monte_carlo
from gaincell.design import load_setup
from gaincell.errors import ConfigError, GaincellError
from gaincell.fitting.fit import fit_characterization
from gaincell.fitting.variation import compare_with_simulation, format_comparison
from gaincell.outputs import SWEEP_FILE, discard_other_kind, guard_output

MAX_SAMPLES = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", default="cmos-generic", help="a preset or a design file")
    parser.add_argument("--cells", type=functools.partial(positive_int, high=MAX_CELLS), default=200,
                        help=f"Monte Carlo cells (2 .. {MAX_CELLS})")
    parser.add_argument("--seed", type=int, default=1, help="an integer >= 0")
    parser.add_argument("--samples", type=functools.partial(positive_int, high=MAX_SAMPLES), default=2000,
                        help="cells sampled from the fitted variation")
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--out", type=Path, default=None,
                        help="characterization file (kept; resumed); default: a temporary one")
    parser.add_argument("--force", action="store_true", help="replace an --out file of another kind")
    args = parser.parse_args()
    if args.cells < 2:
        parser.error(f"argument --cells: must be at least 2; got {args.cells}")
    if not 0 <= args.seed < 2**63:
        parser.error(f"argument --seed: must be an integer >= 0; got {args.seed}")
    try:
        setup = load_setup(args.design)
    except GaincellError as error:
        problem = error.problem if isinstance(error, ConfigError) and error.parameter == "design" else error
        parser.error(f"--design: {problem}")
    if args.out is not None:
        try:
            guard_output(args.out, SWEEP_FILE, design_inputs(args.design), force=args.force)
        except GaincellError as error:
            parser.error(str(error))
    try:
        if args.out is not None and args.force:
            discard_other_kind(args.out, SWEEP_FILE)
        with (tempfile.TemporaryDirectory() if args.out is None else contextlib.nullcontext()) as folder:
            measure(args, setup, args.out or Path(folder) / "char.h5")
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def measure(args, setup, out: Path) -> None:
    started = time.perf_counter()
    characterize(setup.cell, out, setup.grid, workers=args.workers, progress=False)
    nominal_s = time.perf_counter() - started
    mismatch = mismatch_for(setup.cell, args.seed)
    print(f"design {args.design}: {args.cells} Monte Carlo cells, seed {args.seed}")
    for role, sigma in mismatch.sigmas.items():
        device = getattr(setup.cell, role)
        print(f"  sigma_Vt {role:9s} {sigma * 1e3:6.2f} mV  (W/L {device.w_m * 1e9:.0f}n/{device.l_m * 1e9:.0f}n)")
    print(f"  mismatch: {mismatch.source}")
    for line in run_monte_carlo(setup.cell, out, args.cells, args.seed, setup.grid, setup.c2p, workers=args.workers,
                                progress=False):
        print("  " + line)
    mc_s = time.perf_counter() - started - nominal_s
    surrogate, _ = fit_characterization(out)
    variation = surrogate.variation
    nominal_tau = surrogate["decay"].residuals["raw_tau_1e_s"]
    print(f"variation: {variation.cells} cells, order-{len(variation.multiply_mean) - 1} read polynomial; "
          f"sigma of its coefficients {np.sqrt(np.diag(variation.multiply_covariance))} (A/V^i)")
    print(f"  retention_ln_sigma {variation.retention_ln_sigma:.4g}, offset_sigma_c {variation.offset_sigma_c:.4g} C, "
          f"read_noise_c {variation.read_noise_c:.4g} C (one T_max read); nominal tau_1e {nominal_tau:.4g} s")
    rows = compare_with_simulation(out, variation, nominal_tau, samples=args.samples, seed=args.seed)
    print(f"simulated ({args.cells} cells) vs sampled from the fitted variation ({args.samples} cells):")
    print(format_comparison(rows))
    print(f"wall time: nominal characterization {nominal_s:.1f} s, Monte Carlo {mc_s:.1f} s, "
          f"total {time.perf_counter() - started:.1f} s (workers={args.workers})")


if __name__ == "__main__":
    main()
