"""Array read in SPICE: gaincell's read (`read_array`) against one naive netlist of the whole array.

naive     : the whole array as one netlist (one point per column, all columns in one ngspice run, no bypass),
            the way one would write it by hand; run through gaincell's simulator.
all cells : `read_array(merge_identical=False)`: without wires every cell is independent, so cells of equal
            pulse width go into their own small netlists (two pulse edges each: few time points; <= 64 cells:
            BSIM4 evaluation stays in cache), bypass on, spread over two worker processes.
distinct  : `read_array` as it runs by default: each distinct (pulse width, stored value) cell simulated once
            and counted for every cell in that state (exact for independent cells; stored values on the 8 DAC
            levels x 16 pulse widths: at most 128 distinct cells whatever the array size).
Times include starting the workers and the crash-safe HDF5 writes. Stored values by `.ic` on the DAC levels,
pulse widths on 16 levels of T_max (seeded). All give the same column charges (differences printed relative to
the largest charge); the script exits with status 1 when they differ by more than the tolerances below. With
--wires the --size array is also read with distributed bit-line RC and its IR-drop error against the ideal
read is printed (a physical effect, not a disagreement).

    .venv/bin/python benchmarks/bench_array.py [--naive-size 24] [--size 64] [--wires]
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from gaincell.arguments import positive_int
from gaincell.circuits.array_read import random_array_inputs, read_array
from gaincell.circuits.arrays import ArrayRead, ColumnsRead
from gaincell.circuits.builtins import ir_drop
from gaincell.circuits.spice.simulator import run
from gaincell.circuits.wires import Wires
from gaincell.design import load_design
from gaincell.errors import GaincellError

from agreement import relative_difference, require_close

# distinct vs all cells: the same cells in netlists of the same kind, only packed and counted differently
# (measured 2.3e-8 .. 4.8e-7 of the largest column charge, 8 x 8 .. 24 x 24); 1e-5 leaves room for other
# time grids.
DISTINCT_TOLERANCE = 1e-5
# all cells vs one naive netlist: the naive run has no `bypass` and one time grid for the whole array
# (measured 5.7e-4 at 8 x 8, 3.1e-4 at 24 x 24; bypass alone moved a 64-cell column by 5.5e-4). 2e-3 is
# above that and far below what a wrong circuit or a lost column gives.
NAIVE_TOLERANCE = 2e-3
# The largest sides taken: one naive netlist of 64 x 64 cells already runs for minutes; read_array refuses an
# array over its time or memory budget (ConfigError) before simulating it
MAX_NAIVE_SIZE, MAX_SIZE = 64, 512


def naive(design, stored, pulses) -> tuple[float, np.ndarray]:
    bench = ColumnsRead.from_arrays(design, stored, pulses, bypass=False)
    points = [{"column": float(c)} for c in range(bench.cols)]
    started = time.perf_counter()
    result = run(bench.netlist(points), timeout=3600)
    t = result["time"]
    read = t >= bench.read_start_s - 0.1e-9
    charges = np.array([np.trapezoid(-result[f"i(v.x{c}.vbl)"][read], t[read]) for c in range(bench.cols)])
    return time.perf_counter() - started, charges


def packed(design, stored, pulses, out, name="array", **options):
    started = time.perf_counter()
    result = read_array(ArrayRead.from_arrays(design, stored, pulses, **options), out, name, workers=2,
                        progress=False, restart=True)
    return time.perf_counter() - started, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-size", type=functools.partial(positive_int, high=MAX_NAIVE_SIZE), default=24,
                        help="rows = cols of the comparison with one netlist")
    parser.add_argument("--size", type=functools.partial(positive_int, high=MAX_SIZE), default=64,
                        help="rows = cols of the all-cells vs distinct comparison")
    parser.add_argument("--wires", action="store_true", help="also the --size array with bit-line RC")
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="gaincell-bench-array-") as scratch:
            measure(Path(scratch), args)
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def measure(work: Path, args):
    design = load_design("cmos-generic")
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    for n, with_naive in ((args.naive_size, True), (args.size, False)):
        stored, pulses = random_array_inputs(design, n, n, seed=0)
        every_s, every = packed(design, stored, pulses, work / f"every{n}.h5", merge_identical=False)
        distinct_s, distinct = packed(design, stored, pulses, work / f"distinct{n}.h5")
        states = distinct.report.data.status.size
        line = (f"{n} x {n}: all {n * n} cells {every_s:.2f} s (estimate {every.estimate_s:.1f} s); {states} distinct "
                f"cells {distinct_s:.2f} s (estimate {distinct.estimate_s:.1f} s) -> {every_s / distinct_s:.1f}x; "
                f"column charges agree to {relative_difference(distinct.charges_c, every.charges_c):.1e}")
        if with_naive:
            naive_s, naive_q = naive(design, stored, pulses)
            line += (f"; naive one netlist {naive_s:.2f} s -> all cells {naive_s / every_s:.1f}x, distinct "
                     f"{naive_s / distinct_s:.1f}x faster (charges agree to "
                     f"{relative_difference(every.charges_c, naive_q):.1e})")
        print(line)
        require_close(f"{n} x {n} column charges, distinct vs all cells", distinct.charges_c, every.charges_c,
                      DISTINCT_TOLERANCE)
        if with_naive:
            require_close(f"{n} x {n} column charges, all cells vs one naive netlist", every.charges_c, naive_q,
                          NAIVE_TOLERANCE)
    if args.wires:
        wires = Wires(bitline_r_ohm=5.0, bitline_c_f=0.05e-15)
        wired_s, wired = packed(design, stored, pulses, work / "wires.h5", "wires", wires=wires)
        drop = ir_drop(wired.charges_c, distinct.charges_c)
        print(f"{n} x {n} with bit-line RC (5 ohm + 0.05 fF per cell): {wired_s:.1f} s; against the ideal read: RMS "
              f"{100 * drop['rms_rel']:.3f} %, worst {100 * drop['max_rel']:.3f} % of the largest column charge, "
              f"mean |charge| change {-100 * drop['mean_magnitude_loss']:+.3f} %")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
