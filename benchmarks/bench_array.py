"""Array read in SPICE: gaincell's packed read (`read_array`) against one naive netlist of the whole array.

naive : the whole array as one netlist (one point per column, all columns in one ngspice run, no bypass),
        the way one would write it by hand; run through gaincell's simulator.
packed: `read_array`: without wires every cell is independent, so rows of equal pulse width go into their
        own small netlists (two pulse edges each: few time points; small netlists: BSIM4 evaluation stays in
        cache), bypass on, spread over two worker processes; time includes starting the workers and writing
        the HDF5 file.
Stored values by `.ic` on the DAC levels, pulse widths on 16 levels of T_max (seeded). Both give the same
column charges (difference printed relative to the largest charge). With --wires the 64 x 64 array is also
read with distributed bit-line RC and its IR-drop error against the ideal read is printed.

    .venv/bin/python benchmarks/bench_array.py [--naive-size 24] [--size 64] [--wires]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from gaincell.circuits.arrays import ArrayRead, Wires, random_array_inputs, read_array
from gaincell.circuits.builtins import ir_drop
from gaincell.circuits.simulator import run
from gaincell.design import load_design


def naive(design, stored, pulses) -> tuple[float, np.ndarray]:
    bench = ArrayRead.from_arrays(design, stored, pulses, bypass=False, layout_choice="columns")
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
    with tempfile.TemporaryDirectory(prefix="gaincell-bench-array-") as scratch:
        measure(Path(scratch))


def measure(work: Path):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-size", type=int, default=24, help="rows = cols of the side-by-side comparison")
    parser.add_argument("--size", type=int, default=64, help="rows = cols of the packed-only read")
    parser.add_argument("--wires", action="store_true", help="also the --size array with bit-line RC")
    args = parser.parse_args()
    design = load_design("cmos-generic")
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores)")
    n = args.naive_size
    stored, pulses = random_array_inputs(design, n, n, seed=0)
    naive_s, naive_q = naive(design, stored, pulses)
    packed_s, result = packed(design, stored, pulses, work / "small.h5")
    difference = np.abs(result.charges_c - naive_q).max() / np.abs(naive_q).max()
    print(f"{n} x {n}: naive one netlist {naive_s:.2f} s, packed {packed_s:.2f} s -> {naive_s / packed_s:.1f}x; "
          f"charges agree to {difference:.1e} of the largest")
    m = args.size
    stored, pulses = random_array_inputs(design, m, m, seed=0)
    packed_s, ideal = packed(design, stored, pulses, work / "big.h5")
    print(f"{m} x {m} packed: {packed_s:.2f} s (estimate {ideal.estimate_s:.1f} s); column charges "
          f"{ideal.charges_c.min():.3g} .. {ideal.charges_c.max():.3g} C")
    if args.wires:
        wires = Wires(bitline_r_ohm=5.0, bitline_c_f=0.05e-15)
        wired_s, wired = packed(design, stored, pulses, work / "big.h5", "wires", wires=wires)
        drop = ir_drop(wired.charges_c, ideal.charges_c)
        print(f"{m} x {m} with bit-line RC (5 ohm + 0.05 fF per cell): {wired_s:.1f} s; against the ideal read: RMS "
              f"{100 * drop['rms_rel']:.3f} %, worst {100 * drop['max_rel']:.3f} % of the largest column charge, "
              f"mean |charge| change {-100 * drop['mean_magnitude_loss']:+.3f} %")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
