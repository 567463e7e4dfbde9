"""Packed-netlist sweep vs the naive way, on single-cell read points of the default gain cell.

naive : one PySpice simulation per point in this process, through PySpice's high-level API
        (Circuit -> circuit.simulator('ngspice-shared') -> .transient()), charge integrated per point.
packed: gaincell's `run_sweep`: up to 40 points per netlist, chunks on a process pool (one per core).
Both simulate the same circuit (cell, its supply and bit-line sources, ideal complementary read pulses,
stored value by .ic, gear integration, one ngspice thread) over the same grid; the ratio of wall times is
printed, and the script exits with status 1 when their charges differ by more than TOLERANCE of full scale.

    .venv/bin/python benchmarks/bench_packed_sweep.py [--points-per-axis 20]
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time

import numpy as np
from PySpice.Spice.Netlist import Circuit

from gaincell.arguments import positive_int
from gaincell.circuits import Sweep, run_sweep
from gaincell.circuits.cells import CellRead, cell_subcircuits, library_lines, read_drive_lines
from gaincell.circuits.spice.elements import options
from gaincell.circuits.spice.engines import libngspice_path
from gaincell.design import load_design
from gaincell.errors import GaincellError

from agreement import require, require_close

# Packing changes only the time grid (the instances of a netlist share its time steps): measured 2.8e-6,
# 1.35e-5, 1.42e-5 of full scale at 5 x 5, 20 x 20, 40 x 40. 1e-3 stays above that and above TMAX 1 ns vs
# 20 ps (6e-4), and far below what a wrong circuit gives (the naive cell without its supply: 0.99).
TOLERANCE = 1e-3
MAX_POINTS_PER_AXIS = 100  # 10,000 points, each simulated twice (the naive side one PySpice run per point)


def naive(design, bench: CellRead, points):
    """One PySpice simulation per point, built by hand from the same parts as `CellRead.subcircuit`."""
    os.environ["NGSPICE_LIBRARY_PATH"] = libngspice_path()
    logging.getLogger("PySpice").setLevel(logging.CRITICAL)
    from PySpice.Spice.NgSpice.Shared import NgSpiceShared

    NgSpiceShared.LIBRARY_PATH = os.environ["NGSPICE_LIBRARY_PATH"]  # read at import: set it even if imported earlier
    ngspice = NgSpiceShared.new_instance()
    # as gaincell's engine does: ngspice's default OpenMP threads made these BSIM4 runs 1.3-30x slower on two
    # shared cores, which would flatter the packed side
    ngspice.exec_command("set num_threads=1")
    charges = []
    for point in points:
        circuit = Circuit("naive read point")
        circuit.raw_spice += "\n".join(library_lines(design) + [cell_subcircuits(design)]) + "\n"
        circuit.V("dd", "vdd", circuit.gnd, design.vdd_v)  # the PMOS branch's supply: without it no negative charge
        circuit.V("wwl", "wwl", circuit.gnd, 0)
        circuit.V("wbl", "wbl", circuit.gnd, design.zero_v)
        circuit.V("rbl", "rbl", circuit.gnd, design.zero_v)
        circuit.raw_spice += "\n".join(read_drive_lines(design, point["pulse_s"], point["vin_v"], bench.delay_s))
        circuit.raw_spice += f"\n{bench.cell_line()}\n{options({'method': 'gear'})}\n"
        simulator = circuit.simulator(simulator="ngspice-shared", ngspice_shared=ngspice)
        simulator.initial_condition(**{"xc.sn": point["stored_v"]})
        tran = bench.analysis([point])
        analysis = simulator.transient(step_time=tran.step_s, end_time=tran.stop_s, max_time=tran.tmax_s)
        t = np.array(analysis.time)
        charges.append(np.trapezoid(-np.array(analysis.branches["vrbl"]), t))
    return np.array(charges)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-axis", type=functools.partial(positive_int, high=MAX_POINTS_PER_AXIS),
                        default=20, help="stored x pulse grid side (20 -> 400)")
    parser.add_argument("--workers", type=positive_int, default=None)
    args = parser.parse_args()
    try:
        compare(args)
    except GaincellError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


def compare(args):
    design = load_design("cmos-generic")
    bench = CellRead(design)
    n = args.points_per_axis
    grid = {"stored_v": np.linspace(0, design.vdd_v, n), "pulse_s": np.linspace(1e-9, design.t_max_s, n),
            "vin_v": [design.v_in_v]}
    sweep = Sweep("bench", bench, grid)
    points = [sweep.point((i, j, 0)) for i in range(n) for j in range(n)]

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        report = run_sweep(sweep, os.path.join(scratch, "bench.h5"), workers=args.workers, progress=False)
        packed_s = time.perf_counter() - start
    packed = report.data.scalars["charge_c"][:, :, 0].ravel()

    start = time.perf_counter()
    reference = naive(design, bench, points)
    naive_s = time.perf_counter() - start

    full_scale = max(np.max(np.abs(reference)), np.max(np.abs(packed)))
    print(f"points: {len(points)} single-cell reads ({n} stored x {n} pulse widths), cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"naive  (PySpice high-level API, one simulation per point): {naive_s:7.2f} s "
          f"({1e3 * naive_s / len(points):.2f} ms/point)")
    print(f"packed (gaincell run_sweep, {bench.max_pack}/netlist, {report.data.counts()['ok']} ok, "
          f"{len(report.data.decks)} netlists): {packed_s:7.2f} s ({1e3 * packed_s / len(points):.2f} ms/point, "
          "worker start-up included)")
    print(f"speed-up packed vs naive: {naive_s / packed_s:.1f}x")
    print(f"charges: packed {np.min(packed) * 1e15:.1f} .. {np.max(packed) * 1e15:.1f} fC, naive "
          f"{np.min(reference) * 1e15:.1f} .. {np.max(reference) * 1e15:.1f} fC")
    missing = len(points) - report.data.counts()["ok"]
    require("packed sweep", missing == 0, f"{missing} of {len(points)} points have no result (failed or pending)")
    worst = require_close("charge per read, packed vs naive", packed, reference, TOLERANCE)
    print(f"same results: max |charge difference| = {worst:.2e} of full scale ({full_scale * 1e15:.1f} fC), "
          f"allowed {TOLERANCE:.0e}")


if __name__ == "__main__":
    main()
